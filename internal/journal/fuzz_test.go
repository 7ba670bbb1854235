package journal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"
)

const fuzzSegName = "coffer-20260101000000.recovery"

var fuzzT0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// fuzzSegments builds real segments with the package's own writer, all named
// fuzzSegName: an open one with records, a closed one (footer), and an empty
// open one (header only).
func fuzzSegments(f *testing.F) (open, closed, empty []byte) {
	build := func(recs []Record, rotate bool) []byte {
		dir := f.TempDir()
		j, err := Open(Options{Dir: dir, Name: "coffer", Now: func() time.Time { return fuzzT0 }})
		if err != nil {
			f.Fatal(err)
		}
		if len(recs) > 0 {
			if err := j.Append(recs, nil); err != nil {
				f.Fatal(err)
			}
		}
		if rotate {
			if _, err := j.Rotate(); err != nil {
				f.Fatal(err)
			}
		}
		if err := j.Close(); err != nil {
			f.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(dir, fuzzSegName))
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	recs := func() []Record {
		return []Record{
			{Index: 1, Time: fuzzT0.Add(time.Second), Type: 1, Payload: []byte("hello")},
			{Index: 2, Time: fuzzT0.Add(2 * time.Second), Type: 2, Payload: []byte("world!")},
			{Index: 5, Type: 100, Payload: []byte(`{"id":"x","name":"a","version":1}`)},
		}
	}
	return build(recs(), false), build(recs(), true), build(nil, false)
}

func FuzzVerifySegment(f *testing.F) {
	open, closed, empty := fuzzSegments(f)
	for _, seed := range [][]byte{
		open, closed, empty,
		open[:len(open)-3],             // torn final frame
		open[:len(empty)+5],            // torn first frame header
		closed[:len(closed)-1],         // torn footer
		append(bytes.Clone(closed), 0), // byte after the footer
		empty[:20],                     // truncated header
		{},
	} {
		f.Add(seed)
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzCheckSegment(t, data)
		// CRC-32Cs stop almost every mutation at the first frame. Run the
		// same checks with the header and frame CRCs made to match, so the
		// chain, footer and torn-tail rules get exercised too.
		if fixed := fuzzFixCRCs(data); !bytes.Equal(fixed, data) {
			fuzzCheckSegment(t, fixed)
		}
	})
}

// fuzzFixCRCs returns data with the header CRC and the CRC of every complete
// frame (as far as the lengths can be followed) recomputed.
func fuzzFixCRCs(data []byte) []byte {
	b := bytes.Clone(data)
	if len(b) < headerFixedLen {
		return b
	}
	off := headerFixedLen + int(binary.BigEndian.Uint16(b[26:]))
	if off+headerCRCLen > len(b) {
		return b
	}
	binary.BigEndian.PutUint32(b[off:], crc(b[:off]))
	off += headerCRCLen
	for off+frameHeaderLen <= len(b) {
		n := int(binary.BigEndian.Uint32(b[off:]))
		if n < bodyFixedLen || n > len(b)-off-frameHeaderLen {
			break
		}
		body := b[off+frameHeaderLen : off+frameHeaderLen+n]
		binary.BigEndian.PutUint32(b[off+4:], crc(body))
		off += frameHeaderLen + n
	}
	return b
}

// fuzzCheckSegment writes data as the only segment of a journal and checks
// Verify, ListSegments, Read and Open against each other and FORMAT.md.
func fuzzCheckSegment(t *testing.T, data []byte) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, fuzzSegName), data, 0o600); err != nil {
		t.Fatal(err)
	}
	// corrupt checks the documented error type: any problem with this
	// one regular file is damage, reported as *CorruptError.
	corrupt := func(what string, err error) *CorruptError {
		t.Helper()
		if err == nil {
			return nil
		}
		var ce *CorruptError
		if !errors.As(err, &ce) {
			t.Fatalf("%s: error is not a *CorruptError: %T %v", what, err, err)
		}
		if ce.File != fuzzSegName || ce.Offset < 0 || ce.Offset > int64(len(data)) || ce.Reason == "" {
			t.Fatalf("%s: implausible CorruptError %+v for a %d-byte file", what, ce, len(data))
		}
		return ce
	}

	rep, err := Verify(dir, nil)
	vce := corrupt("Verify", err)
	torn := vce != nil && vce.Torn
	if rep.Segments != 1 {
		t.Fatalf("Verify: report %+v for one segment file", rep)
	}

	segs, err := ListSegments(dir)
	lce := corrupt("ListSegments", err)
	switch {
	case vce == nil || torn:
		if lce != nil {
			t.Fatalf("ListSegments: %v, but Verify said %v", lce, vce)
		}
	case lce == nil || lce.Error() != vce.Error():
		t.Fatalf("ListSegments: %v, Verify: %v", lce, vce)
	}
	if len(segs) != 1 || segs[0].Records != rep.Records || segs[0].Size != int64(len(data)) {
		t.Fatalf("ListSegments: %+v, Verify: %+v, file of %d bytes", segs, rep, len(data))
	}

	var n int
	var last uint64
	err = Read(dir, nil, func(seg SegmentInfo, r Record) error {
		if r.Type == TypeSegmentEnd || r.Index <= r.Prev || (n > 0 && r.Prev != last) {
			t.Fatalf("Read delivered record %+v after %d", r, last)
		}
		if r.KeyID == 0 && r.Payload == nil {
			t.Fatalf("Read delivered clear record %d without payload", r.Index)
		}
		n, last = n+1, r.Index
		return nil
	})
	rce := corrupt("Read", err)
	if (rce == nil) != (vce == nil) || (rce != nil && rce.Error() != vce.Error()) {
		t.Fatalf("Read: %v, Verify: %v", rce, vce)
	}
	if n != rep.Records || (n > 0 && last != rep.LastIndex) {
		t.Fatalf("Read delivered %d records up to %d, Verify reported %+v", n, last, rep)
	}

	j, err := Open(Options{Dir: dir, Name: "coffer", Now: func() time.Time { return fuzzT0 }})
	oce := corrupt("Open", err)
	if vce != nil && !torn {
		// Only a torn tail is repaired; anything else fails Open.
		if oce == nil || oce.Error() != vce.Error() {
			t.Fatalf("Open: %v, Verify: %v", err, vce)
		}
		return
	}
	if err != nil {
		t.Fatalf("Open refused a journal that Verify accepts (or finds only torn): %v; Verify: %v", err, vce)
	}
	if rep := j.Repaired(); (rep != nil) != torn {
		t.Fatalf("Open: Repaired() = %+v, Verify: %v", rep, vce)
	}
	// The (repaired) journal must take new records and then verify.
	added := 0
	if l := j.LastIndex(); l < math.MaxUint64 {
		if err := j.Append([]Record{{Index: l + 1, Type: 7, Payload: []byte("after fuzz")}}, nil); err != nil {
			t.Fatalf("Append after Open: %v", err)
		}
		added = 1
	}
	if err := j.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	rep2, err := Verify(dir, nil)
	if err != nil {
		t.Fatalf("Verify after Open (repair %v) and Append: %v", torn, err)
	}
	if rep2.Records != rep.Records+added {
		t.Fatalf("after Open and Append: %+v, before: %+v", rep2, rep)
	}
}
