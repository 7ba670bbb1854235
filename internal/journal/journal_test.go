package journal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "journal")
	clk := newClock()
	j := openT(t, dir, clk, nil)
	want := mkRecs(1, 20)
	appendT(t, j, want[:7])
	appendT(t, j, want[7:8])
	appendT(t, j, want[8:])
	if got := j.LastIndex(); got != 20 {
		t.Fatalf("LastIndex %d", got)
	}
	for i, r := range want {
		if r.Prev != uint64(i) {
			t.Fatalf("record %d: Prev filled in as %d", r.Index, r.Prev)
		}
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if err := j.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := j.Append(mkRecs(21, 21), testCipher{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close: %v", err)
	}

	st, err := os.Stat(dir)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("dir mode %v %v", st.Mode(), err)
	}
	segs, err := ListSegments(dir)
	if err != nil || len(segs) != 1 {
		t.Fatalf("ListSegments %+v %v", segs, err)
	}
	if st, _ := os.Stat(segs[0].Path); st.Mode().Perm() != 0o600 {
		t.Fatalf("segment mode %v", st.Mode())
	}
	raw, _ := os.ReadFile(segs[0].Path)
	if bytes.Contains(raw, []byte("SECRET")) {
		t.Fatal("plaintext of an encrypted payload found in the segment")
	}
	if !bytes.Contains(raw, []byte("payload of record 3")) {
		t.Fatal("clear payload not stored in clear")
	}

	var got []Record
	err = Read(dir, testCipher{}, func(seg SegmentInfo, r Record) error {
		if seg.Name != segs[0].Name {
			t.Errorf("segment %q", seg.Name)
		}
		got = append(got, r)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("read %d records", len(got))
	}
	for i := range want {
		w, g := want[i], got[i]
		if g.Index != w.Index || g.Prev != w.Prev || !g.Time.Equal(w.Time) || g.Time.Location() != time.UTC ||
			g.Type != w.Type || g.KeyID != w.KeyID || !bytes.Equal(g.Payload, w.Payload) {
			t.Fatalf("record %d: got %+v want %+v", i, g, w)
		}
	}

	// Without a cipher: clear payloads only.
	err = Read(dir, nil, func(_ SegmentInfo, r Record) error {
		if (r.KeyID == 0) != (r.Payload != nil) {
			t.Errorf("record %d key %d payload %q", r.Index, r.KeyID, r.Payload)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// fn errors stop Read and come back as they are.
	stop := errors.New("stop")
	n := 0
	if err := Read(dir, nil, func(SegmentInfo, Record) error { n++; return stop }); err != stop || n != 1 {
		t.Fatalf("Read stop: %v after %d", err, n)
	}

	rep := verifyOK(t, dir)
	if rep != (Report{Segments: 1, Records: 20, FirstIndex: 1, LastIndex: 20}) {
		t.Fatalf("report %+v", rep)
	}
	// A cipher that lacks the keys fails verification.
	if _, err := Verify(dir, wrongCipher{}); err == nil || !strings.Contains(err.Error(), "does not decrypt") {
		t.Fatalf("Verify with wrong keys: %v", err)
	}

	// Reopen continues the same segment (Close wrote no footer).
	j = openT(t, dir, clk, nil)
	if j.Repaired() != nil || j.LastIndex() != 20 {
		t.Fatalf("reopen: %+v %d", j.Repaired(), j.LastIndex())
	}
	appendT(t, j, mkRecs(21, 22))
	if s := j.Segments(); len(s) != 1 || s[0].Records != 22 || s[0].Closed {
		t.Fatalf("segments after reopen %+v", s)
	}
	j.Close()
	verifyOK(t, dir)
}

type wrongCipher struct{ testCipher }

func (wrongCipher) Open(id uint32, ct, aad []byte) ([]byte, error) {
	return testCipher{}.Open(id%9+1, ct, aad)
}

// The payload's AAD is the fixed body: changing index, prev, time, type or
// key id (with a recomputed CRC) makes decryption fail.
func TestAADBinding(t *testing.T) {
	dir := t.TempDir()
	j := openT(t, dir, newClock(), nil)
	appendT(t, j, []Record{{Index: 1, Time: t0, Type: 3, KeyID: 1, Payload: []byte("secret")}})
	j.Close()
	path := j.Segments()[0].Path
	offs, _ := frameOffsets(t, path)
	orig, _ := os.ReadFile(path)
	verifyOK(t, dir)
	for _, field := range []struct {
		name string
		at   int
	}{{"index", 7}, {"prev", 15}, {"time", 23}, {"type", 25}, {"key id", 29}} {
		b := append([]byte{}, orig...)
		body := b[offs[0]+frameHeaderLen:]
		body[field.at] ^= 0x01
		if field.name == "key id" {
			body[field.at] = 2 // another existing key
		}
		binary.BigEndian.PutUint32(b[offs[0]+4:], crc(body))
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Verify(dir, testCipher{})
		if err == nil {
			t.Fatalf("%s altered: Verify passed", field.name)
		}
		if field.name == "time" || field.name == "type" || field.name == "key id" {
			if ce := corrupt(t, err); !strings.Contains(ce.Reason, "does not decrypt") {
				t.Fatalf("%s altered: %v", field.name, err)
			}
			if _, err := Verify(dir, nil); err != nil {
				t.Fatalf("%s altered: Verify without cipher: %v", field.name, err)
			}
		}
		// Direct check on the cipher as well.
		if _, err := (testCipher{}).Open(1, body[bodyFixedLen:], body[:bodyFixedLen]); err == nil && field.name != "key id" {
			t.Fatalf("%s altered: payload still opens", field.name)
		}
	}
}

func TestAppendIdempotent(t *testing.T) {
	dir := t.TempDir()
	j := openT(t, dir, newClock(), nil)
	defer j.Close()
	appendT(t, j, mkRecs(1, 5))
	size := j.Segments()[0].Size
	appendT(t, j, mkRecs(1, 5))
	appendT(t, j, mkRecs(2, 3))
	if s := j.Segments()[0]; s.Size != size || s.Records != 5 || fileSize(t, s.Path) != size {
		t.Fatalf("replay wrote something: %+v", s)
	}
	appendT(t, j, mkRecs(3, 7)) // 3-5 skipped, 6-7 written
	if j.LastIndex() != 7 || j.Segments()[0].Records != 7 {
		t.Fatalf("last %d %+v", j.LastIndex(), j.Segments())
	}
	appendT(t, j, nil)
	// Gaps in raft indexes are fine.
	appendT(t, j, mkRecs(10, 10))
	for _, bad := range [][]Record{
		{{Index: 12}, {Index: 11}},
		{{Index: 12}, {Index: 12}},
		{{Index: 5}, {Index: 4}},
	} {
		if err := j.Append(bad, nil); err == nil || !strings.Contains(err.Error(), "increase") {
			t.Fatalf("Append %v: %v", bad, err)
		}
	}
	if err := j.Append([]Record{{Index: 11, Type: TypeSegmentEnd}}, nil); err == nil {
		t.Fatal("reserved type accepted")
	}
	if err := j.Append([]Record{{Index: 11, KeyID: 1, Payload: []byte("x")}}, nil); err == nil {
		t.Fatal("KeyID without cipher accepted")
	}
	if err := j.Append([]Record{{Index: 11, Payload: make([]byte, MaxBodyBytes)}}, nil); err == nil {
		t.Fatal("oversized record accepted")
	}
	if err := j.Append([]Record{{Index: 11, KeyID: 42, Payload: []byte("x")}}, testCipher{}); err == nil {
		t.Fatal("seal error not reported")
	}
	if err := j.Append([]Record{{Index: 11, Time: time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)}}, nil); err == nil {
		t.Fatal("unrepresentable time accepted")
	}
	if j.LastIndex() != 10 {
		t.Fatalf("failed appends moved LastIndex to %d", j.LastIndex())
	}
	appendT(t, j, mkRecs(11, 11))
	j.Close()
	rep := verifyOK(t, dir)
	if rep.Records != 9 || rep.LastIndex != 11 {
		t.Fatalf("report %+v", rep)
	}
}

func TestRotateBySize(t *testing.T) {
	dir := t.TempDir()
	const max = 400
	j := openT(t, dir, newClock(), func(o *Options) { o.MaxSegmentBytes = max })
	for i := uint64(1); i <= 30; i++ {
		appendT(t, j, mkRecs(i, i))
	}
	// A batch larger than the limit still goes into one (fresh) segment.
	appendT(t, j, mkRecs(31, 50))
	segs := j.Segments()
	if len(segs) < 5 {
		t.Fatalf("only %d segments", len(segs))
	}
	for i, s := range segs[:len(segs)-2] {
		if !s.Closed || s.Size > max || s.Records == 0 {
			t.Fatalf("segment %d: %+v", i, s)
		}
		if s.LastIndex+1 != segs[i+1].FirstIndex || segs[i+1].Prev != s.LastIndex {
			t.Fatalf("segments %d/%d do not chain: %+v %+v", i, i+1, s, segs[i+1])
		}
	}
	if last := segs[len(segs)-1]; last.Closed || last.FirstIndex != 31 || last.LastIndex != 50 || last.Records != 20 {
		t.Fatalf("last segment %+v", last)
	}
	j.Close()
	listed, err := ListSegments(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(listed) != fmt.Sprint(segs) {
		t.Fatalf("ListSegments differs from Segments:\n%+v\n%+v", listed, segs)
	}
	rep := verifyOK(t, dir)
	if rep.Segments != len(segs) || rep.Records != 50 || rep.FirstIndex != 1 || rep.LastIndex != 50 {
		t.Fatalf("report %+v", rep)
	}
}

func TestRotateByAge(t *testing.T) {
	dir := t.TempDir()
	clk := newClock()
	j := openT(t, dir, clk, func(o *Options) { o.MaxSegmentAge = time.Hour })
	appendT(t, j, mkRecs(1, 1))
	clk.Add(30 * time.Minute)
	appendT(t, j, mkRecs(2, 2))
	if n := len(j.Segments()); n != 1 {
		t.Fatalf("%d segments after 30m", n)
	}
	clk.Add(31 * time.Minute)
	appendT(t, j, mkRecs(3, 3))
	segs := j.Segments()
	if len(segs) != 2 || !segs[0].Closed || segs[0].LastIndex != 2 || segs[1].FirstIndex != 3 {
		t.Fatalf("segments %+v", segs)
	}
	if segs[0].Name != "coffer-20261121044500.recovery" || segs[1].Name != "coffer-20261121054600.recovery" {
		t.Fatalf("names %s %s", segs[0].Name, segs[1].Name)
	}
	if !segs[1].Created.Equal(t0.Add(61 * time.Minute)) {
		t.Fatalf("created %v", segs[1].Created)
	}
	// An old segment survives a restart and still rotates by age.
	j.Close()
	clk.Add(2 * time.Hour)
	j = openT(t, dir, clk, func(o *Options) { o.MaxSegmentAge = time.Hour })
	appendT(t, j, mkRecs(4, 4))
	if segs := j.Segments(); len(segs) != 3 || segs[2].FirstIndex != 4 {
		t.Fatalf("segments after restart %+v", segs)
	}
	j.Close()
	verifyOK(t, dir)
}

func TestRotateExplicit(t *testing.T) {
	dir := t.TempDir()
	clk := newClock()
	j := openT(t, dir, clk, nil)
	// Empty segment: no-op.
	for i := 0; i < 3; i++ {
		s, err := j.Rotate()
		if err != nil || s.Records != 0 || s.Closed || s.Name != "coffer-20261121044500.recovery" {
			t.Fatalf("Rotate on empty: %+v %v", s, err)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("%d files after empty rotations", len(ents))
	}
	appendT(t, j, mkRecs(1, 3))
	closed, err := j.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	if !closed.Closed || closed.FirstIndex != 1 || closed.LastIndex != 3 || closed.Records != 3 || closed.Size != fileSize(t, closed.Path) {
		t.Fatalf("closed %+v", closed)
	}
	// Same second: the next name moves one second on.
	appendT(t, j, mkRecs(4, 4))
	if _, err := j.Rotate(); err != nil {
		t.Fatal(err)
	}
	appendT(t, j, mkRecs(5, 6))
	segs := j.Segments()
	names := []string{"coffer-20261121044500.recovery", "coffer-20261121044501.recovery", "coffer-20261121044502.recovery"}
	if len(segs) != 3 {
		t.Fatalf("segments %+v", segs)
	}
	for i, s := range segs {
		if s.Name != names[i] || s.Closed != (i < 2) {
			t.Fatalf("segment %d: %+v", i, s)
		}
	}
	if segs[1].Prev != 3 || segs[2].Prev != 4 || segs[2].FirstIndex != 5 || segs[2].LastIndex != 6 {
		t.Fatalf("segments %+v", segs)
	}
	// A clock going backwards keeps names increasing.
	clk.Add(-time.Hour)
	if _, err := j.Rotate(); err != nil {
		t.Fatal(err)
	}
	if s := j.Segments(); s[3].Name != "coffer-20261121044503.recovery" {
		t.Fatalf("after clock step back: %s", s[3].Name)
	}
	j.Close()
	// A closed last segment (crash between footer and next segment): Open creates one.
	os.Remove(j.Segments()[3].Path)
	j = openT(t, dir, clk, nil)
	if s := j.Segments(); len(s) != 4 || s[3].Closed || s[3].Prev != 6 || j.LastIndex() != 6 {
		t.Fatalf("after reopen %+v", s)
	}
	// Other files are ignored.
	os.WriteFile(filepath.Join(dir, ".coffer-20261121044509.recovery.tmp-123"), []byte("junk"), 0o600)
	os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("junk"), 0o600)
	os.WriteFile(filepath.Join(dir, "coffer-2026.recovery"), []byte("junk"), 0o600)
	appendT(t, j, mkRecs(7, 9))
	j.Close()
	listed, err := ListSegments(dir)
	if err != nil || len(listed) != 4 || listed[3].Records != 3 {
		t.Fatalf("listed %+v %v", listed, err)
	}
	rep := verifyOK(t, dir)
	if rep.Segments != 4 || rep.Records != 9 {
		t.Fatalf("report %+v", rep)
	}
}

func TestOptions(t *testing.T) {
	for _, name := range []string{"", "a/b", "a b", "ü", strings.Repeat("a", 201)} {
		if _, err := Open(Options{Dir: t.TempDir(), Name: name}); err == nil {
			t.Fatalf("name %q accepted", name)
		}
	}
	if _, err := Open(Options{Name: "x"}); err == nil {
		t.Fatal("empty dir accepted")
	}
	j, err := Open(Options{Dir: t.TempDir(), Name: "node-1.a_b"})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if s := j.Segments(); len(s) != 1 || !strings.HasPrefix(s[0].Name, "node-1.a_b-") {
		t.Fatalf("%+v", s)
	}
}

// buildTwoSegments makes a journal with a small closed segment (records 1-3)
// and an open one (records 4-6), and returns the dir.
func buildTwoSegments(t *testing.T) (string, []SegmentInfo) {
	dir := t.TempDir()
	j := openT(t, dir, newClock(), nil)
	appendT(t, j, mkRecs(1, 3))
	if _, err := j.Rotate(); err != nil {
		t.Fatal(err)
	}
	appendT(t, j, mkRecs(4, 5))
	appendT(t, j, mkRecs(6, 6))
	segs := j.Segments()
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	return dir, segs
}

func TestTornTail(t *testing.T) {
	src, segs := buildTwoSegments(t)
	last := segs[1]
	offs, size := frameOffsets(t, last.Path)
	start := offs[len(offs)-1]
	for cut := start + 1; cut < size; cut++ {
		dir := copyDir(t, src)
		path := filepath.Join(dir, last.Name)
		if err := os.Truncate(path, cut); err != nil {
			t.Fatal(err)
		}
		_, err := Verify(dir, testCipher{})
		ce := corrupt(t, err)
		if ce.File != last.Name || ce.Path != path || ce.Offset != start || !strings.Contains(ce.Reason, "truncated") || !ce.Torn {
			t.Fatalf("cut at %d: %+v", cut, ce)
		}
		if ls, err := ListSegments(dir); err != nil || len(ls) != 2 || ls[1].Records != 2 {
			t.Fatalf("cut at %d: ListSegments %+v %v", cut, ls, err)
		}
		j := openT(t, dir, newClock(), nil)
		r := j.Repaired()
		if r == nil || r.File != last.Name || r.Offset != start || r.DroppedBytes != cut-start || !strings.Contains(r.Reason, "truncated") {
			t.Fatalf("cut at %d: repair %+v", cut, r)
		}
		if fileSize(t, path) != start || j.LastIndex() != 5 {
			t.Fatalf("cut at %d: size %d last %d", cut, fileSize(t, path), j.LastIndex())
		}
		if s := j.Segments(); s[1].Records != 2 || s[1].LastIndex != 5 || s[1].Size != start {
			t.Fatalf("cut at %d: segments %+v", cut, s)
		}
		appendT(t, j, mkRecs(6, 8))
		j.Close()
		if rep := verifyOK(t, dir); rep.Records != 8 {
			t.Fatalf("cut at %d: report %+v", cut, rep)
		}
		j = openT(t, dir, newClock(), nil)
		if j.Repaired() != nil {
			t.Fatalf("cut at %d: repaired twice", cut)
		}
		j.Close()
	}
}

// A zero-filled tail (a crash where the size grew but the data did not land)
// is a torn tail too.
func TestZeroTail(t *testing.T) {
	dir, segs := buildTwoSegments(t)
	last := segs[1]
	f, _ := os.OpenFile(last.Path, os.O_WRONLY|os.O_APPEND, 0)
	f.Write(make([]byte, 4096))
	f.Close()
	ce := corrupt(t, func() error { _, err := Verify(dir, nil); return err }())
	if ce.Offset != last.Size || !ce.Torn {
		t.Fatalf("%+v", ce)
	}
	j := openT(t, dir, newClock(), nil)
	if r := j.Repaired(); r == nil || r.Offset != last.Size || r.DroppedBytes != 4096 {
		t.Fatalf("repair %+v", r)
	}
	j.Close()
	verifyOK(t, dir)
}

func TestFlippedByte(t *testing.T) {
	src, segs := buildTwoSegments(t)
	first, last := segs[0], segs[1]
	orig, _ := os.ReadFile(first.Path)
	// Open reads a closed segment that is not the last by its header, first
	// record and footer: damage between those is for Verify to find.
	firstOffs, firstSize := frameOffsets(t, first.Path)
	unread := func(i int) bool { return int64(i) >= firstOffs[1] && int64(i) < firstSize-footerFrameLen }
	for i := range orig {
		dir := copyDir(t, src)
		path := filepath.Join(dir, first.Name)
		b := append([]byte{}, orig...)
		b[i] ^= 0xFF
		os.WriteFile(path, b, 0o600)
		for _, c := range []Cipher{nil, testCipher{}} {
			_, err := Verify(dir, c)
			if err == nil {
				t.Fatalf("flip at %d: Verify passed", i)
			}
			ce := corrupt(t, err)
			if ce.File != first.Name || ce.Offset > int64(i) || ce.Torn {
				t.Fatalf("flip at %d: %+v", i, ce)
			}
		}
		if _, err := ListSegments(dir); err == nil {
			t.Fatalf("flip at %d: ListSegments passed", i)
		}
		if j, err := Open(Options{Dir: dir, Name: "coffer"}); unread(i) {
			if err != nil {
				t.Fatalf("flip at %d (a record Open does not read): %v", i, err)
			}
			if segs := j.Segments(); j.LastIndex() != 6 || segs[0].Records != 3 || segs[0].FirstIndex != 1 || segs[0].LastIndex != 3 {
				t.Fatalf("flip at %d: last %d, segments %+v", i, j.LastIndex(), segs)
			}
			j.Close()
		} else if err == nil {
			j.Close()
			t.Fatalf("flip at %d: Open accepted a damaged closed segment", i)
		} else {
			corrupt(t, err)
		}
		if bytes.Equal(mustRead(t, path), b) == false {
			t.Fatalf("flip at %d: Open modified the damaged segment", i)
		}
	}

	// The open segment: damage anywhere but in its last frame is refused;
	// a bad last frame is a torn tail and repaired.
	orig, _ = os.ReadFile(last.Path)
	offs, _ := frameOffsets(t, last.Path)
	lastFrame := offs[len(offs)-1]
	for i := range orig {
		dir := copyDir(t, src)
		path := filepath.Join(dir, last.Name)
		b := append([]byte{}, orig...)
		b[i] ^= 0xFF
		os.WriteFile(path, b, 0o600)
		_, err := Verify(dir, nil)
		ce := corrupt(t, err)
		if ce.File != last.Name || ce.Offset > int64(i) {
			t.Fatalf("open segment flip at %d: %+v", i, ce)
		}
		j, err := Open(Options{Dir: dir, Name: "coffer"})
		if int64(i) < lastFrame {
			if err == nil {
				j.Close()
				t.Fatalf("open segment flip at %d: Open accepted it (%+v)", i, ce)
			}
			corrupt(t, err)
			continue
		}
		if err != nil {
			t.Fatalf("open segment flip at %d (last frame): %v", i, err)
		}
		if r := j.Repaired(); r == nil || r.Offset != lastFrame || j.LastIndex() != 5 {
			t.Fatalf("open segment flip at %d: repair %+v last %d", i, r, j.LastIndex())
		}
		j.Close()
	}
}

func mustRead(t *testing.T, path string) []byte {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestGap(t *testing.T) {
	dir := t.TempDir()
	j := openT(t, dir, newClock(), nil)
	appendT(t, j, mkRecs(1, 12))
	j.Rotate()
	appendT(t, j, mkRecs(13, 19))
	j.Rotate()
	appendT(t, j, mkRecs(20, 25))
	segs := j.Segments()
	j.Close()
	verifyOK(t, dir)

	os.Remove(segs[1].Path)
	_, err := Verify(dir, nil)
	ce := corrupt(t, err)
	if ce.File != segs[2].Name || ce.Offset != 0 || ce.Reason != "gap: previous segment ended at 12, this one continues from 20 (indexes 13-19 missing)" {
		t.Fatalf("%+v", ce)
	}
	if _, err := Open(Options{Dir: dir, Name: "coffer"}); err == nil {
		t.Fatal("Open accepted a gap")
	}
	if _, err := ListSegments(dir); err == nil {
		t.Fatal("ListSegments accepted a gap")
	}
	// Pruning the oldest segments is accepted: the journal starts later.
	os.Remove(segs[0].Path)
	rep := verifyOK(t, dir)
	if rep.FirstIndex != 20 || rep.LastIndex != 25 || rep.Segments != 1 {
		t.Fatalf("report %+v", rep)
	}
}

func TestStructuralDamage(t *testing.T) {
	// Each case damages a copy of a good two-segment journal and expects
	// Verify and Open to fail with the given reason.
	cases := []struct {
		name, reason string
		damage       func(t *testing.T, dir string, segs []SegmentInfo)
	}{
		{"data after footer", "after the segment footer", func(t *testing.T, dir string, segs []SegmentInfo) {
			appendFile(t, filepath.Join(dir, segs[0].Name), []byte{0})
		}},
		{"unclosed middle segment", "no footer but is followed by", func(t *testing.T, dir string, segs []SegmentInfo) {
			os.Truncate(filepath.Join(dir, segs[0].Name), segs[0].Size-footerFrameLen)
		}},
		{"overlap", "overlap: previous segment ended at 3", func(t *testing.T, dir string, segs []SegmentInfo) {
			// A copy of the first segment renamed to sort after it.
			b := mustRead(t, filepath.Join(dir, segs[0].Name))
			name := "coffer-20261121044500.recovery"
			hdr := encodeHeader("coffer-20261121044501.recovery", t0, 0)
			old := headerFixedLen + len(name) + headerCRCLen
			os.Remove(filepath.Join(dir, segs[1].Name))
			os.WriteFile(filepath.Join(dir, "coffer-20261121044501.recovery"), append(hdr, b[old:]...), 0o600)
		}},
		{"renamed segment", `header names file "coffer-20261121044501.recovery"`, func(t *testing.T, dir string, segs []SegmentInfo) {
			os.Rename(filepath.Join(dir, segs[1].Name), filepath.Join(dir, "coffer-20261121044502.recovery"))
		}},
		{"not a segment", "bad magic", func(t *testing.T, dir string, segs []SegmentInfo) {
			os.WriteFile(filepath.Join(dir, "coffer-20261121044400.recovery"), []byte("hello, this is not a journal segment"), 0o600)
		}},
		{"empty file", "segment header incomplete", func(t *testing.T, dir string, segs []SegmentInfo) {
			os.WriteFile(filepath.Join(dir, "coffer-20261121044400.recovery"), nil, 0o600)
		}},
		{"chain broken with valid CRC", "chain broken", func(t *testing.T, dir string, segs []SegmentInfo) {
			path := filepath.Join(dir, segs[1].Name)
			b := mustRead(t, path)
			offs, _ := frameOffsets(t, path)
			body := b[offs[1]+frameHeaderLen : offs[2]]
			binary.BigEndian.PutUint64(body[8:], 99)
			binary.BigEndian.PutUint32(b[offs[1]+4:], crc(body))
			os.WriteFile(path, b, 0o600)
		}},
		{"bad footer count", "bad segment footer", func(t *testing.T, dir string, segs []SegmentInfo) {
			path := filepath.Join(dir, segs[0].Name)
			b := mustRead(t, path)
			f := footerFrame(3, 7, t0)
			copy(b[len(b)-footerFrameLen:], f)
			os.WriteFile(path, b, 0o600)
		}},
	}
	src, segs := buildTwoSegments(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := copyDir(t, src)
			c.damage(t, dir, segs)
			_, err := Verify(dir, nil)
			if err == nil || !strings.Contains(err.Error(), c.reason) {
				t.Fatalf("Verify: %v", err)
			}
			if corrupt(t, err).Torn {
				t.Fatal("reported as torn")
			}
			if j, err := Open(Options{Dir: dir, Name: "coffer"}); err == nil {
				j.Close()
				t.Fatal("Open accepted it")
			}
		})
	}
}

func appendFile(t *testing.T, path string, b []byte) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(b)
	f.Close()
}

func TestCorruptErrorMessage(t *testing.T) {
	e := &CorruptError{File: "coffer-20261121044500.recovery", Offset: 4242, Index: 17, Reason: "CRC mismatch"}
	if got := e.Error(); got != "journal coffer-20261121044500.recovery: offset 4242: record 17: CRC mismatch" {
		t.Fatal(got)
	}
	e.Index = 0
	if got := e.Error(); got != "journal coffer-20261121044500.recovery: offset 4242: CRC mismatch" {
		t.Fatal(got)
	}
}

// No payload plaintext ever shows up in errors.
func TestNoPlaintextInErrors(t *testing.T) {
	dir := t.TempDir()
	j := openT(t, dir, newClock(), nil)
	appendT(t, j, []Record{{Index: 1, KeyID: 1, Payload: []byte("TOPSECRET")}, {Index: 2, Payload: []byte("clear")}})
	err := j.Append([]Record{{Index: 3, KeyID: 77, Payload: []byte("TOPSECRET")}}, testCipher{})
	if err == nil || strings.Contains(err.Error(), "TOPSECRET") {
		t.Fatalf("seal error: %v", err)
	}
	j.Close()
	_, err = Verify(dir, wrongCipher{})
	if err == nil || strings.Contains(err.Error(), "TOPSECRET") {
		t.Fatalf("verify error: %v", err)
	}
}

func TestWriteFailure(t *testing.T) {
	dir := t.TempDir()
	fl := &faults{limit: -1}
	wrap := func(f segFile) segFile { return &faultyFile{f, fl} }
	clk := newClock()
	j, err := openWith(Options{Dir: dir, Name: "coffer", Now: clk.Now}, wrap)
	if err != nil {
		t.Fatal(err)
	}
	appendT(t, j, mkRecs(1, 3))
	path := j.Segments()[0].Path
	good := fileSize(t, path)

	// Disk full in the middle of a batch: nothing half-written stays.
	fl.limit = good + 100
	err = j.Append(mkRecs(4, 10), testCipher{})
	if err == nil || !strings.Contains(err.Error(), "coffer-20261121044500.recovery") || !strings.Contains(err.Error(), "no space") {
		t.Fatalf("Append on full disk: %v", err)
	}
	if fileSize(t, path) != good || j.LastIndex() != 3 || j.Segments()[0].Size != good {
		t.Fatalf("after failure: size %d (want %d), last %d", fileSize(t, path), good, j.LastIndex())
	}
	verifyOK(t, dir)

	// The truncate back fails too: the next Append truncates first.
	fl.failTruncate = 1
	if err := j.Append(mkRecs(4, 10), testCipher{}); err == nil {
		t.Fatal("Append on full disk passed")
	}
	if fileSize(t, path) == good {
		t.Fatal("test setup: truncate did not fail")
	}
	fl.failTruncate = 1
	if err := j.Append(mkRecs(4, 10), testCipher{}); err == nil || !strings.Contains(err.Error(), "truncate") {
		t.Fatalf("Append with pending truncate: %v", err)
	}

	// Fault clears: appends resume where they left off.
	fl.limit = -1
	appendT(t, j, mkRecs(4, 10))
	if j.LastIndex() != 10 {
		t.Fatalf("last %d", j.LastIndex())
	}
	if rep := verifyOK(t, dir); rep.Records != 10 {
		t.Fatalf("report %+v", rep)
	}

	// Rotation whose footer cannot be written: the segment stays open.
	fl.limit = fileSize(t, path) + 10
	if _, err := j.Rotate(); err == nil {
		t.Fatal("Rotate on full disk passed")
	}
	if s := j.Segments(); len(s) != 1 || s[0].Closed {
		t.Fatalf("segments %+v", s)
	}
	// Footer written but fsync fails: taken back.
	fl.limit = -1
	fl.failSync = 1
	if _, err := j.Rotate(); err == nil {
		t.Fatal("Rotate with failing fsync passed")
	}
	if s := j.Segments(); len(s) != 1 || s[0].Closed || fileSize(t, path) != s[0].Size {
		t.Fatalf("segments %+v", s)
	}
	verifyOK(t, dir)
	appendT(t, j, mkRecs(11, 11))
	if _, err := j.Rotate(); err != nil {
		t.Fatal(err)
	}
	appendT(t, j, mkRecs(12, 12))

	// Sync errors are reported.
	fl.failSync = 1
	if err := j.Sync(); err == nil {
		t.Fatal("Sync passed")
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if rep := verifyOK(t, dir); rep.Records != 12 || rep.Segments != 2 {
		t.Fatalf("report %+v", rep)
	}
}

// Creating the next segment fails (the directory is gone for a moment): the
// closed segment stays closed and the next Append creates the segment.
func TestCreateFailure(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "j")
	j := openT(t, dir, newClock(), nil)
	appendT(t, j, mkRecs(1, 2))
	if err := os.Rename(dir, dir+".away"); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(dir, nil, 0o600)
	closed, err := j.Rotate()
	os.Remove(dir)
	os.Rename(dir+".away", dir)
	if err == nil || !closed.Closed {
		t.Fatalf("Rotate: %+v %v", closed, err)
	}
	if s := j.Segments(); len(s) != 1 || !s[0].Closed {
		t.Fatalf("segments %+v", s)
	}
	if err := j.Sync(); err != nil {
		t.Fatal(err)
	}
	appendT(t, j, mkRecs(3, 3))
	j.Close()
	if rep := verifyOK(t, dir); rep.Segments != 2 || rep.Records != 3 {
		t.Fatalf("report %+v", rep)
	}
}

func TestConcurrent(t *testing.T) {
	dir := t.TempDir()
	j := openT(t, dir, newClock(), func(o *Options) { o.MaxSegmentBytes = 2000 })
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := uint64(1); i <= 100; i++ {
				if err := j.Append(mkRecs(i, i), testCipher{}); err != nil {
					t.Error(err)
					return
				}
				j.Segments()
				j.LastIndex()
				if i%25 == 0 {
					j.Rotate()
					j.Sync()
				}
			}
		}()
	}
	wg.Wait()
	j.Close()
	if rep := verifyOK(t, dir); rep.Records != 100 {
		t.Fatalf("report %+v", rep)
	}
}

// TestPrune: Prune removes only whole closed segments below the index, oldest
// first, keeps the asked number of closed segments and the open one, and
// leaves a journal that verifies, reopens and keeps appending.
func TestPrune(t *testing.T) {
	dir := t.TempDir()
	clk := newClock()
	j := openT(t, dir, clk, nil)
	// Segments 1-10, 11-20, 21-30, 31-40 closed; 41-45 open.
	for i := uint64(0); i < 4; i++ {
		appendT(t, j, mkRecs(i*10+1, i*10+10))
		if _, err := j.Rotate(); err != nil {
			t.Fatal(err)
		}
		clk.Add(time.Second)
	}
	appendT(t, j, mkRecs(41, 45))
	names := func() []string {
		var out []string
		for _, s := range j.Segments() {
			out = append(out, fmt.Sprintf("%d-%d", s.FirstIndex, s.LastIndex))
		}
		return out
	}
	// Nothing below 1; a floor inside a segment keeps that segment.
	if rm, err := j.Prune(1, 0, 0); err != nil || len(rm) != 0 {
		t.Fatalf("Prune(1): %v %v", rm, err)
	}
	if p := j.Prunable(15, 0, 0); len(p) != 1 || p[0].LastIndex != 10 || len(j.Segments()) != 5 {
		t.Fatalf("Prunable(15): %+v", p)
	}
	if rm, err := j.Prune(15, 0, 0); err != nil || len(rm) != 1 || rm[0].LastIndex != 10 {
		t.Fatalf("Prune(15): %+v %v", rm, err)
	}
	if got := strings.Join(names(), " "); got != "11-20 21-30 31-40 41-45" {
		t.Fatalf("after Prune(15): %s", got)
	}
	// limit caps one call.
	if p := j.Prunable(1000, 0, 2); len(p) != 2 {
		t.Fatalf("Prunable with limit 2: %d", len(p))
	}
	// keep wins over the floor.
	if rm, err := j.Prune(1000, 2, 0); err != nil || len(rm) != 1 || rm[0].FirstIndex != 11 {
		t.Fatalf("Prune(1000, keep 2): %+v %v", rm, err)
	}
	// The open segment is never removed, even with a floor past it.
	if rm, err := j.Prune(1000, 0, 0); err != nil || len(rm) != 2 {
		t.Fatalf("Prune(1000, keep 0): %+v %v", rm, err)
	}
	if got := strings.Join(names(), " "); got != "41-45" {
		t.Fatalf("after pruning everything: %s", got)
	}
	files, _ := os.ReadDir(dir)
	if len(files) != 1 {
		t.Fatalf("%d files left", len(files))
	}
	// What is left verifies, reopens with the right last index and goes on.
	appendT(t, j, mkRecs(46, 47))
	j.Close()
	rep := verifyOK(t, dir)
	if rep.Records != 7 {
		t.Fatalf("report %+v", rep)
	}
	j = openT(t, dir, clk, nil)
	if j.LastIndex() != 47 {
		t.Fatalf("last index after reopen %d", j.LastIndex())
	}
	appendT(t, j, mkRecs(48, 48))
	if _, err := j.Rotate(); err != nil {
		t.Fatal(err)
	}
	// A just-rotated journal: the closed segment and the empty open one.
	if rm, err := j.Prune(1000, 0, 0); err != nil || len(rm) != 1 {
		t.Fatalf("Prune after rotate: %+v %v", rm, err)
	}
	j.Close()
	j = openT(t, dir, clk, nil)
	defer j.Close()
	if j.LastIndex() != 48 {
		t.Fatalf("last index from an empty open segment's header: %d", j.LastIndex())
	}
	appendT(t, j, mkRecs(49, 49))
	// Pruned journal, closed journal.
	j.Close()
	if _, err := j.Prune(1000, 0, 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("Prune on a closed journal: %v", err)
	}
}
