package journal

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// threeSegments builds records 1-12, 13-19 (closed) and 20-25 (open) in dir.
func threeSegments(t *testing.T, dir string) []SegmentInfo {
	t.Helper()
	j := openT(t, dir, newClock(), nil)
	appendT(t, j, mkRecs(1, 12))
	j.Rotate()
	appendT(t, j, mkRecs(13, 19))
	j.Rotate()
	appendT(t, j, mkRecs(20, 25))
	segs := j.Segments()
	j.Close()
	return segs
}

func recordsByIndex(from, to uint64) func(uint64) (Record, error) {
	all := mkRecs(from, to)
	return func(i uint64) (Record, error) {
		if i < from || i > to {
			return Record{}, errors.New("not here")
		}
		return all[i-from], nil
	}
}

// TestGapDescribed: a segment moved aside out of the middle is reported with
// the missing indexes and the segments around them.
func TestGapDescribed(t *testing.T) {
	dir := t.TempDir()
	segs := threeSegments(t, dir)
	os.Rename(segs[1].Path, filepath.Join(t.TempDir(), segs[1].Name))
	_, err := Open(Options{Dir: dir, Name: "coffer"})
	ce := corrupt(t, err)
	want := &Gap{From: 13, To: 19, Prev: segs[0].Name, Next: segs[2].Name, Older: []string{segs[0].Name}}
	if !reflect.DeepEqual(ce.Gap, want) {
		t.Fatalf("gap %+v, want %+v", ce.Gap, want)
	}
	if ok, msg := ce.Gap.Advice(13); !ok || !strings.Contains(msg, "records 13-19") || !strings.Contains(msg, "rebuilt") {
		t.Fatalf("advice with the raft log from 13: %v %s", ok, msg)
	}
	ok, msg := ce.Gap.Advice(14)
	if ok || !strings.Contains(msg, "the raft log starts at 14") || !strings.Contains(msg, "move aside the 1 segment(s) before the gap ("+segs[0].Name+")") ||
		!strings.Contains(msg, "begins at record 20") {
		t.Fatalf("advice with the raft log from 14: %v %s", ok, msg)
	}
	if ok, msg := ce.Gap.Advice(0); ok || !strings.Contains(msg, "the raft log is empty") {
		t.Fatalf("advice with an empty raft log: %v %s", ok, msg)
	}

	// The advice is right: without the older segments the journal opens.
	for _, name := range ce.Gap.Older {
		os.Rename(filepath.Join(dir, name), filepath.Join(t.TempDir(), name))
	}
	j, err := Open(Options{Dir: dir, Name: "coffer"})
	if err != nil {
		t.Fatalf("open after moving the older segments: %v", err)
	}
	if j.LastIndex() != 25 {
		t.Fatalf("last %d", j.LastIndex())
	}
	j.Close()
}

// TestFillGap: the missing records written back make a journal that
// verifies, opens and reads every record in order.
func TestFillGap(t *testing.T) {
	dir := t.TempDir()
	segs := threeSegments(t, dir)
	os.Remove(segs[1].Path)
	_, err := Open(Options{Dir: dir, Name: "coffer"})
	g := corrupt(t, err).Gap
	info, err := FillGap(Options{Dir: dir, Name: "coffer", Now: newClock().Now}, *g, testCipher{}, recordsByIndex(1, 25))
	if err != nil {
		t.Fatal(err)
	}
	if info.FirstIndex != 13 || info.LastIndex != 19 || info.Records != 7 || !info.Closed || info.Name <= segs[0].Name || info.Name >= segs[2].Name {
		t.Fatalf("new segment %+v", info)
	}
	rep := verifyOK(t, dir)
	if rep.FirstIndex != 1 || rep.LastIndex != 25 || rep.Records != 25 || rep.Segments != 3 {
		t.Fatalf("report %+v", rep)
	}
	want := mkRecs(1, 25)
	var got []Record
	if err := Read(dir, testCipher{}, func(_ SegmentInfo, r Record) error { got = append(got, r); return nil }); err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if got[i].Index != want[i].Index || !bytes.Equal(got[i].Payload, want[i].Payload) || got[i].KeyID != want[i].KeyID || !got[i].Time.Equal(want[i].Time) {
			t.Fatalf("record %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	j, err := Open(Options{Dir: dir, Name: "coffer"})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if j.LastIndex() != 25 {
		t.Fatalf("last %d", j.LastIndex())
	}
}

// TestFillGapRefusals: no room for a segment name between the two, a source
// that fails, a record with the wrong index: an error, and nothing written.
func TestFillGapRefusals(t *testing.T) {
	// Segments one second apart, records 13-19 missing between them.
	dir := t.TempDir()
	j := openT(t, dir, newClock(), nil)
	appendT(t, j, mkRecs(1, 12))
	first, _ := j.Rotate()
	j.Close()
	os.Remove(filepath.Join(dir, j.Segments()[1].Name))
	other := t.TempDir()
	clk := newClock()
	clk.Add(time.Second)
	k := openT(t, other, clk, func(o *Options) { o.StartAfter = 19 })
	appendT(t, k, mkRecs(20, 25))
	next := k.Segments()[0]
	k.Close()
	os.Rename(next.Path, filepath.Join(dir, next.Name))

	_, err := Open(Options{Dir: dir, Name: "coffer"})
	g := corrupt(t, err).Gap
	if g == nil || g.From != 13 || g.To != 19 || g.Prev != first.Name || g.Next != next.Name {
		t.Fatalf("gap %+v", g)
	}
	listing := func() []string {
		ents, _ := os.ReadDir(dir)
		var n []string
		for _, e := range ents {
			n = append(n, e.Name())
		}
		return n
	}
	before := listing()
	if _, err := FillGap(Options{Dir: dir, Name: "coffer"}, *g, testCipher{}, recordsByIndex(1, 25)); err == nil || !strings.Contains(err.Error(), "no segment name is free") {
		t.Fatalf("no room: %v", err)
	}

	// With room (the next segment renamed a few seconds later), a failing
	// source or a wrong record leaves nothing behind either.
	dir2 := t.TempDir()
	segs := threeSegments(t, dir2)
	os.Remove(segs[1].Path)
	_, err = Open(Options{Dir: dir2, Name: "coffer"})
	g2 := corrupt(t, err).Gap
	before2, _ := os.ReadDir(dir2)
	if _, err := FillGap(Options{Dir: dir2, Name: "coffer"}, *g2, testCipher{}, recordsByIndex(1, 15)); err == nil || !strings.Contains(err.Error(), "record 16") {
		t.Fatalf("failing source: %v", err)
	}
	wrong := func(i uint64) (Record, error) { return mkRecs(i+1, i+1)[0], nil }
	if _, err := FillGap(Options{Dir: dir2, Name: "coffer"}, *g2, testCipher{}, wrong); err == nil || !strings.Contains(err.Error(), "got record 14 instead") {
		t.Fatalf("wrong record: %v", err)
	}
	after2, _ := os.ReadDir(dir2)
	if len(after2) != len(before2) {
		t.Fatalf("files left behind: %v -> %v", before2, after2)
	}
	if got := listing(); !reflect.DeepEqual(got, before) {
		t.Fatalf("files changed: %v -> %v", before, got)
	}
}

// TestReadAcrossGaps: records on both sides of a gap are read, and the gap is
// reported where it is.
func TestReadAcrossGaps(t *testing.T) {
	dir := t.TempDir()
	segs := threeSegments(t, dir)
	os.Remove(segs[1].Path)
	var gaps []Gap
	var idx []uint64
	err := ReadAcrossGaps(dir, testCipher{}, func(g Gap) error { gaps = append(gaps, g); return nil },
		func(_ SegmentInfo, r Record) error { idx = append(idx, r.Index); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if len(gaps) != 1 || gaps[0].From != 13 || gaps[0].To != 19 || len(idx) != 18 || idx[11] != 12 || idx[12] != 20 {
		t.Fatalf("gaps %+v, indexes %v", gaps, idx)
	}
	stop := errors.New("stop")
	if err := ReadAcrossGaps(dir, nil, func(Gap) error { return stop }, nil); !errors.Is(err, stop) {
		t.Fatalf("stop: %v", err)
	}
}

// TestOpenByFooterAgreesWithFullScan: the segments Open describes from
// footers and first records are those a full read describes.
func TestOpenByFooterAgreesWithFullScan(t *testing.T) {
	dir := t.TempDir()
	clk := newClock()
	j := openT(t, dir, clk, nil)
	next := uint64(1)
	for _, n := range []uint64{1, 2, 7, 30} {
		appendT(t, j, mkRecs(next, next+n-1))
		next += n
		clk.Add(time.Minute)
		if _, err := j.Rotate(); err != nil {
			t.Fatal(err)
		}
	}
	appendT(t, j, mkRecs(next, next+3))
	j.Close()
	full, err := ListSegments(dir)
	if err != nil {
		t.Fatal(err)
	}
	j, err = Open(Options{Dir: dir, Name: "coffer"})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if got := j.Segments(); !reflect.DeepEqual(got, full) {
		t.Fatalf("Open:\n%+v\nfull read:\n%+v", got, full)
	}
}
