package audit

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/testutil"
)

func sameRecord(a, b Record) bool {
	if !a.Time.Equal(b.Time) {
		return false
	}
	a.Time, b.Time = time.Time{}, time.Time{}
	return fmt.Sprint(a) == fmt.Sprint(b)
}

func TestRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "audit")
	opts := Options{MaxFileBytes: 8 << 10}
	l := openT(t, dir, opts)
	if l.Count() != 0 {
		t.Fatalf("Count of a new log: %d", l.Count())
	}
	want := appendN(t, l, 1, 1000)
	for i, r := range want {
		if r.Seq != uint64(i+1) {
			t.Fatalf("record %d got seq %d", i, r.Seq)
		}
		if r.Time.IsZero() || r.Time.Location() != time.UTC {
			t.Fatalf("seq %d: time %v not set in UTC", r.Seq, r.Time)
		}
		prev := zeroHash
		if i > 0 {
			prev = hashHex(encoded(t, want[i-1]))
		}
		if r.Prev != prev {
			t.Fatalf("seq %d: prev %s, want %s", r.Seq, r.Prev, prev)
		}
	}
	if l.Count() != 1000 {
		t.Fatalf("Count %d", l.Count())
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := l.Append(mkRec(0)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close: %v", err)
	}
	if _, err := l.Read(1, 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("Read after Close: %v", err)
	}

	files := readLog(t, dir)
	if len(files) < 4 {
		t.Fatalf("only %d files with MaxFileBytes 8 KiB", len(files))
	}
	for i, lf := range files {
		if lf.name != fileName(uint64(i+1)) {
			t.Fatalf("file %d is %s", i, lf.name)
		}
		st, _ := os.Stat(filepath.Join(dir, lf.name))
		if st.Size() > opts.MaxFileBytes {
			t.Fatalf("%s is %d bytes, over the limit", lf.name, st.Size())
		}
	}

	// Reopen and continue the chain, with an explicit time kept as given (in UTC).
	l = openT(t, dir, opts)
	defer l.Close()
	if l.Count() != 1000 {
		t.Fatalf("Count after reopen %d", l.Count())
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.FixedZone("X", 3600))
	r := mkRec(1001)
	r.Time = at
	r.Seq, r.Prev = 77, "bogus" // overwritten
	got, err := l.Append(r)
	if err != nil {
		t.Fatal(err)
	}
	if got.Seq != 1001 || got.Prev != hashHex(encoded(t, want[999])) || !got.Time.Equal(at) || got.Time.Location() != time.UTC {
		t.Fatalf("first record after reopen: %+v", got)
	}
	want = append(want, got)
	want = append(want, appendN(t, l, 1002, 499)...)
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}

	rep, err := Verify(dir)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if rep.Records != 1500 || rep.FirstSeq != 1 || rep.LastSeq != 1500 || rep.HeadSeq != 1500 ||
		rep.LastHash != hashHex(encoded(t, want[1499])) || rep.Files != len(readLog(t, dir)) {
		t.Fatalf("report %+v", rep)
	}

	for _, c := range []struct {
		from          uint64
		limit         int
		first, number int
	}{
		{0, 0, 1, 1500},
		{1, 3, 1, 3},
		{995, 10, 995, 10},
		{1000, 2, 1000, 2},
		{1490, 100, 1490, 11},
		{1500, 10, 1500, 1},
		{1501, 10, 0, 0},
		{137, 250, 137, 250},
	} {
		recs, err := l.Read(c.from, c.limit)
		if err != nil {
			t.Fatalf("Read(%d, %d): %v", c.from, c.limit, err)
		}
		if len(recs) != c.number {
			t.Fatalf("Read(%d, %d): %d records, want %d", c.from, c.limit, len(recs), c.number)
		}
		for i, rec := range recs {
			if w := want[c.first-1+i]; !sameRecord(rec, w) {
				t.Fatalf("Read(%d, %d)[%d] = %+v, want %+v", c.from, c.limit, i, rec, w)
			}
		}
	}
}

// tamperLog builds a fresh log of 60 records over several files.
func tamperLog(t *testing.T) (string, []logFile) {
	t.Helper()
	dir := t.TempDir()
	l := openT(t, dir, Options{MaxFileBytes: 2 << 10})
	appendN(t, l, 1, 60)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(dir); err != nil {
		t.Fatalf("Verify of an untouched log: %v", err)
	}
	files := readLog(t, dir)
	if len(files) < 4 {
		t.Fatalf("want several files, got %d", len(files))
	}
	return dir, files
}

func TestTamper(t *testing.T) {
	t.Run("edited", func(t *testing.T) {
		dir, files := tamperLog(t)
		fi, li := where(t, files, 17)
		ln := files[fi].lines[li]
		edited := bytes.Replace(ln, []byte(`"operation":"op-17"`), []byte(`"operation":"op-71"`), 1)
		if bytes.Equal(edited, ln) {
			t.Fatal("operation not found")
		}
		files[fi].lines[li] = edited
		writeFileLines(t, dir, files[fi])
		_, err := Verify(dir)
		te := wantTamper(t, err, KindEdited, files[fi].name, li+1, 17)
		want := fmt.Sprintf("audit: %s line %d (seq 17): edited: record hash does not match the chain (next record's prev)", files[fi].name, li+1)
		if te.Error() != want {
			t.Fatalf("message\n%s\nwant\n%s", te, want)
		}
	})
	t.Run("edited last record of a file", func(t *testing.T) {
		dir, files := tamperLog(t)
		lf := files[1]
		last := len(lf.lines) - 1
		seq, _ := quickSeq(lf.lines[last])
		lf.lines[last] = bytes.Replace(lf.lines[last], []byte(`"result":"ok"`), []byte(`"result":"KO"`), 1)
		writeFileLines(t, dir, lf)
		_, err := Verify(dir)
		wantTamper(t, err, KindEdited, lf.name, last+1, seq)
	})
	t.Run("edited last record", func(t *testing.T) {
		dir, files := tamperLog(t)
		lf := files[len(files)-1]
		last := len(lf.lines) - 1
		lf.lines[last] = bytes.Replace(lf.lines[last], []byte(`"op-60"`), []byte(`"op-06"`), 1)
		writeFileLines(t, dir, lf)
		_, err := Verify(dir)
		te := wantTamper(t, err, KindEdited, lf.name, last+1, 60)
		if !strings.Contains(te.Msg, HeadFile) {
			t.Fatalf("message does not mention %s: %v", HeadFile, te)
		}
		_, err = Open(dir, Options{})
		wantTamper(t, err, KindEdited, lf.name, last+1, 60)
	})
	t.Run("invalid json", func(t *testing.T) {
		dir, files := tamperLog(t)
		fi, li := where(t, files, 23)
		files[fi].lines[li] = files[fi].lines[li][:40]
		writeFileLines(t, dir, files[fi])
		_, err := Verify(dir)
		te := wantTamper(t, err, KindEdited, files[fi].name, li+1, 23)
		if !strings.Contains(te.Msg, "not a valid record") {
			t.Fatal(te)
		}
	})
	t.Run("first record", func(t *testing.T) {
		dir, files := tamperLog(t)
		files[0].lines[0] = bytes.Replace(files[0].lines[0], []byte(zeroHash), []byte(strings.Repeat("1", 64)), 1)
		writeFileLines(t, dir, files[0])
		_, err := Verify(dir)
		wantTamper(t, err, KindEdited, files[0].name, 1, 1)
	})
	t.Run("removed", func(t *testing.T) {
		dir, files := tamperLog(t)
		fi, li := where(t, files, 17)
		files[fi].lines = append(files[fi].lines[:li], files[fi].lines[li+1:]...)
		writeFileLines(t, dir, files[fi])
		_, err := Verify(dir)
		te := wantTamper(t, err, KindRemoved, files[fi].name, li+1, 17)
		if !strings.Contains(te.Msg, "seq 17 is missing") {
			t.Fatal(te)
		}
	})
	t.Run("removed several", func(t *testing.T) {
		dir, files := tamperLog(t)
		lf := files[1]
		seq, _ := quickSeq(lf.lines[1])
		lf.lines = append(lf.lines[:1], lf.lines[3:]...)
		writeFileLines(t, dir, lf)
		_, err := Verify(dir)
		te := wantTamper(t, err, KindRemoved, lf.name, 2, seq)
		if !strings.Contains(te.Msg, fmt.Sprintf("seq %d-%d are missing", seq, seq+1)) {
			t.Fatal(te)
		}
	})
	t.Run("reordered", func(t *testing.T) {
		dir, files := tamperLog(t)
		fi, li := where(t, files, 17)
		if fj, lj := where(t, files, 18); fj != fi || lj != li+1 {
			fi, li = where(t, files, 25)
		}
		lf := files[fi]
		seq, _ := quickSeq(lf.lines[li])
		lf.lines[li], lf.lines[li+1] = lf.lines[li+1], lf.lines[li]
		writeFileLines(t, dir, lf)
		_, err := Verify(dir)
		te := wantTamper(t, err, KindReordered, lf.name, li+1, seq+1)
		want := fmt.Sprintf("seq %d follows seq %d; seq %d is later, at %s line %d", seq+1, seq-1, seq, lf.name, li+2)
		if te.Msg != want {
			t.Fatalf("message %q, want %q", te.Msg, want)
		}
	})
	t.Run("moved to another file", func(t *testing.T) {
		dir, files := tamperLog(t)
		fi, li := where(t, files, 5)
		moved := files[fi].lines[li]
		files[fi].lines = append(files[fi].lines[:li], files[fi].lines[li+1:]...)
		last := &files[len(files)-1]
		last.lines = append(last.lines[:1], append([][]byte{moved}, last.lines[1:]...)...)
		writeFileLines(t, dir, files[fi])
		writeFileLines(t, dir, *last)
		_, err := Verify(dir)
		te := wantTamper(t, err, KindReordered, files[fi].name, li+1, 6)
		if !strings.Contains(te.Msg, fmt.Sprintf("seq 5 is later, at %s line 2", last.name)) {
			t.Fatal(te)
		}
	})
	t.Run("duplicated", func(t *testing.T) {
		dir, files := tamperLog(t)
		fi, li := where(t, files, 40)
		lf := files[fi]
		lf.lines = append(lf.lines[:li+1], append([][]byte{lf.lines[li]}, lf.lines[li+1:]...)...)
		writeFileLines(t, dir, lf)
		_, err := Verify(dir)
		te := wantTamper(t, err, KindReordered, lf.name, li+2, 40)
		if !strings.Contains(te.Msg, "seq 40 appears twice") {
			t.Fatal(te)
		}
	})
	t.Run("truncated records", func(t *testing.T) {
		dir, files := tamperLog(t)
		lf := files[len(files)-1]
		if len(lf.lines) < 3 {
			t.Fatalf("last file has %d lines", len(lf.lines))
		}
		lf.lines = lf.lines[:len(lf.lines)-2]
		writeFileLines(t, dir, lf)
		_, err := Verify(dir)
		te := wantTamper(t, err, KindTruncated, lf.name, len(lf.lines)+1, 59)
		if !strings.Contains(te.Msg, "seq 59-60 missing") {
			t.Fatal(te)
		}
		_, err = Open(dir, Options{})
		wantTamper(t, err, KindTruncated, lf.name, len(lf.lines)+1, 59)
	})
	t.Run("cut mid-line", func(t *testing.T) {
		dir, files := tamperLog(t)
		lf := files[len(files)-1]
		p := filepath.Join(dir, lf.name)
		st, _ := os.Stat(p)
		if err := os.Truncate(p, st.Size()-10); err != nil {
			t.Fatal(err)
		}
		_, err := Verify(dir)
		te := wantTamper(t, err, KindTruncated, lf.name, len(lf.lines), 60)
		if !strings.Contains(te.Msg, "partial last line") {
			t.Fatal(te)
		}
	})
	t.Run("cut mid-line in an older file", func(t *testing.T) {
		dir, files := tamperLog(t)
		lf := files[1]
		p := filepath.Join(dir, lf.name)
		st, _ := os.Stat(p)
		if err := os.Truncate(p, st.Size()-10); err != nil {
			t.Fatal(err)
		}
		seq, _ := quickSeq(lf.lines[len(lf.lines)-1])
		_, err := Verify(dir)
		wantTamper(t, err, KindTruncated, lf.name, len(lf.lines), seq)
	})
	t.Run("removed middle file", func(t *testing.T) {
		dir, files := tamperLog(t)
		first, _ := quickSeq(files[2].lines[0])
		last, _ := quickSeq(files[2].lines[len(files[2].lines)-1])
		if err := os.Remove(filepath.Join(dir, files[2].name)); err != nil {
			t.Fatal(err)
		}
		_, err := Verify(dir)
		te := wantTamper(t, err, KindRemoved, files[3].name, 1, first)
		if !strings.Contains(te.Msg, fmt.Sprintf("seq %d-%d are missing", first, last)) || !strings.Contains(te.Msg, files[2].name+" is missing") {
			t.Fatal(te)
		}
	})
	t.Run("removed first file", func(t *testing.T) {
		dir, files := tamperLog(t)
		if err := os.Remove(filepath.Join(dir, files[0].name)); err != nil {
			t.Fatal(err)
		}
		_, err := Verify(dir)
		te := wantTamper(t, err, KindRemoved, files[1].name, 1, 1)
		if !strings.Contains(te.Msg, files[0].name+" is missing") {
			t.Fatal(te)
		}
	})
	t.Run("removed last file", func(t *testing.T) {
		dir, files := tamperLog(t)
		if err := os.Remove(filepath.Join(dir, files[len(files)-1].name)); err != nil {
			t.Fatal(err)
		}
		prev := files[len(files)-2]
		next, _ := quickSeq(files[len(files)-1].lines[0])
		_, err := Verify(dir)
		wantTamper(t, err, KindTruncated, prev.name, len(prev.lines)+1, next)
		_, err = Open(dir, Options{})
		wantTamper(t, err, KindTruncated, prev.name, len(prev.lines)+1, next)
	})
	t.Run("head hash edited", func(t *testing.T) {
		dir, files := tamperLog(t)
		p := filepath.Join(dir, HeadFile)
		b, _ := os.ReadFile(p)
		if b[len(b)-2] == '0' { // last hex digit of the hash
			b[len(b)-2] = '1'
		} else {
			b[len(b)-2] = '0'
		}
		os.WriteFile(p, b, 0o600)
		lf := files[len(files)-1]
		_, err := Verify(dir)
		te := wantTamper(t, err, KindEdited, lf.name, len(lf.lines), 60)
		if !strings.Contains(te.Msg, HeadFile) {
			t.Fatal(te)
		}
	})
	t.Run("head seq raised", func(t *testing.T) {
		dir, files := tamperLog(t)
		p := filepath.Join(dir, HeadFile)
		b := mustRead(t, p)
		b = bytes.Replace(b, []byte("seq=00000000000000000060"), []byte("seq=00000000000000000061"), 1)
		os.WriteFile(p, b, 0o600)
		lf := files[len(files)-1]
		_, err := Verify(dir)
		wantTamper(t, err, KindTruncated, lf.name, len(lf.lines)+1, 61)
	})
	t.Run("head seq lowered", func(t *testing.T) {
		dir, files := tamperLog(t)
		p := filepath.Join(dir, HeadFile)
		b := mustRead(t, p)
		b = bytes.Replace(b, []byte("seq=00000000000000000060"), []byte("seq=00000000000000000050"), 1)
		os.WriteFile(p, b, 0o600)
		_, err := Verify(dir)
		wantTamper(t, err, KindHead, HeadFile, 0, 50)
		// Open checks seq 50 only if it is in (or just before) the last
		// file; otherwise it warns that the head lags and rewrites it.
		fi, li := where(t, files, 50)
		l, err := Open(dir, Options{Logger: slog.New(slog.DiscardHandler)})
		if fi == len(files)-1 || (fi == len(files)-2 && li == len(files[fi].lines)-1) {
			wantTamper(t, err, KindHead, HeadFile, 0, 50)
		} else {
			if err != nil {
				t.Fatal(err)
			}
			l.Close()
		}
	})
	t.Run("head garbage", func(t *testing.T) {
		dir, _ := tamperLog(t)
		os.WriteFile(filepath.Join(dir, HeadFile), []byte("hello\n"), 0o600)
		_, err := Verify(dir)
		wantTamper(t, err, KindHead, HeadFile, 0, 0)
		_, err = Open(dir, Options{})
		wantTamper(t, err, KindHead, HeadFile, 0, 0)
	})
	t.Run("head removed", func(t *testing.T) {
		dir, _ := tamperLog(t)
		os.Remove(filepath.Join(dir, HeadFile))
		_, err := Verify(dir)
		wantTamper(t, err, KindHead, HeadFile, 0, 0)
		// The documented way out: Open recreates it from the log, with a warning.
		var logs syncBuffer
		l := openT(t, dir, Options{Logger: testLogger(&logs)})
		l.Close()
		if !strings.Contains(logs.String(), "audit.head missing") {
			t.Fatalf("no warning: %s", logs.String())
		}
		if rep, err := Verify(dir); err != nil || rep.HeadSeq != 60 {
			t.Fatalf("after Open: %+v %v", rep, err)
		}
	})
	t.Run("open refuses damage in the last file", func(t *testing.T) {
		dir, files := tamperLog(t)
		lf := files[len(files)-1]
		lf.lines = append(lf.lines[:1], lf.lines[2:]...)
		writeFileLines(t, dir, lf)
		first, _ := quickSeq(lf.lines[0])
		_, err := Open(dir, Options{})
		wantTamper(t, err, KindRemoved, lf.name, 2, first+1)
	})
	t.Run("open refuses a broken link to the previous file", func(t *testing.T) {
		dir, files := tamperLog(t)
		lf := files[len(files)-2]
		last := len(lf.lines) - 1
		seq, _ := quickSeq(lf.lines[last])
		lf.lines[last] = bytes.Replace(lf.lines[last], []byte(`"actor":"user:alice"`), []byte(`"actor":"user:mallo"`), 1)
		writeFileLines(t, dir, lf)
		_, err := Open(dir, Options{})
		wantTamper(t, err, KindEdited, lf.name, last+1, seq)
	})
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestTornTail(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{})
	recs := appendN(t, l, 1, 10)
	l.Close()

	p := filepath.Join(dir, fileName(1))
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"seq":11,"time":"2026-`)
	f.Close()
	_, err = Verify(dir)
	wantTamper(t, err, KindTruncated, fileName(1), 11, 11)

	var logs syncBuffer
	l = openT(t, dir, Options{Logger: testLogger(&logs)})
	if !strings.Contains(logs.String(), "torn final line") || !strings.Contains(logs.String(), "dropped_bytes=23") {
		t.Fatalf("no warning logged: %q", logs.String())
	}
	if l.Count() != 10 {
		t.Fatalf("Count %d", l.Count())
	}
	r, err := l.Append(mkRec(11))
	if err != nil {
		t.Fatal(err)
	}
	if r.Seq != 11 || r.Prev != hashHex(encoded(t, recs[9])) {
		t.Fatalf("record after repair: seq %d prev %s", r.Seq, r.Prev)
	}
	l.Close()
	rep, err := Verify(dir)
	if err != nil || rep.LastSeq != 11 || rep.Records != 11 {
		t.Fatalf("Verify after repair: %+v %v", rep, err)
	}
}

func TestHeadLagsAfterCrash(t *testing.T) {
	// A crash between a record's write and the head's leaves the head one
	// record behind: not damage.
	dir := t.TempDir()
	l := openT(t, dir, Options{})
	recs := appendN(t, l, 1, 10)
	l.Close()
	os.WriteFile(filepath.Join(dir, HeadFile), appendHead(nil, 9, hashHex(encoded(t, recs[8]))), 0o600)
	rep, err := Verify(dir)
	if err != nil || rep.HeadSeq != 9 || rep.LastSeq != 10 {
		t.Fatalf("Verify: %+v %v", rep, err)
	}
	l = openT(t, dir, Options{})
	l.Close()
	if rep, err := Verify(dir); err != nil || rep.HeadSeq != 10 {
		t.Fatalf("Open did not bring the head up to date: %+v %v", rep, err)
	}
}

func TestEmptyLastFile(t *testing.T) {
	// A crash right after rotation created the next file.
	dir := t.TempDir()
	l := openT(t, dir, Options{})
	appendN(t, l, 1, 5)
	l.Close()
	os.WriteFile(filepath.Join(dir, fileName(2)), nil, 0o600)
	l = openT(t, dir, Options{})
	appendN(t, l, 6, 5)
	l.Close()
	files := readLog(t, dir)
	if len(files) != 2 || len(files[1].lines) != 5 {
		t.Fatalf("files %+v", files)
	}
	if rep, err := Verify(dir); err != nil || rep.LastSeq != 10 {
		t.Fatalf("Verify: %+v %v", rep, err)
	}
}

func TestEmptyLog(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{})
	recs, err := l.Read(1, 10)
	if err != nil || len(recs) != 0 {
		t.Fatalf("Read of an empty log: %v %v", recs, err)
	}
	l.Close()
	rep, err := Verify(dir)
	if err != nil || rep.Records != 0 || rep.LastSeq != 0 || rep.LastHash != zeroHash || rep.Files != 1 {
		t.Fatalf("Verify: %+v %v", rep, err)
	}
	l = openT(t, dir, Options{})
	defer l.Close()
	if r, err := l.Append(mkRec(1)); err != nil || r.Seq != 1 || r.Prev != zeroHash {
		t.Fatalf("first record %+v %v", r, err)
	}
	if _, err := Verify(t.TempDir()); err != nil {
		t.Fatalf("Verify of an empty dir: %v", err)
	}
	if _, err := Verify(filepath.Join(t.TempDir(), "nope")); err == nil {
		t.Fatal("Verify of a missing dir succeeded")
	}
}

func TestOpenLocked(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{})
	defer l.Close()
	if _, err := Open(dir, Options{}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second Open: %v", err)
	}
}

func TestModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "audit")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	l := openT(t, dir, Options{MaxFileBytes: 1 << 10})
	appendN(t, l, 1, 20)
	l.Close()
	st, err := os.Stat(dir)
	if err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("dir mode %v %v", st.Mode().Perm(), err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) < 3 {
		t.Fatalf("files %v", ents)
	}
	for _, e := range ents {
		st, err := os.Stat(filepath.Join(dir, e.Name()))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s mode %v %v", e.Name(), st.Mode().Perm(), err)
		}
	}
}

func TestConcurrentAppend(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{MaxFileBytes: 32 << 10})
	const G, N = 8, 200
	seqs := make([][]uint64, G)
	var wg sync.WaitGroup
	for g := range G {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range N {
				r, err := l.Append(mkRec(g*N + i))
				if err != nil {
					t.Error(err)
					return
				}
				seqs[g] = append(seqs[g], r.Seq)
			}
		}()
		wg.Add(1)
		go func() { // readers alongside
			defer wg.Done()
			for range 20 {
				if _, err := l.Read(l.Count()/2, 50); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	seen := make([]bool, G*N+1)
	for _, s := range seqs {
		for i, q := range s {
			if q == 0 || q > G*N || seen[q] {
				t.Fatalf("seq %d bad or duplicated", q)
			}
			if i > 0 && q <= s[i-1] {
				t.Fatalf("seqs of one goroutine not increasing: %d after %d", q, s[i-1])
			}
			seen[q] = true
		}
	}
	rep, err := Verify(dir)
	if err != nil || rep.Records != G*N || rep.FirstSeq != 1 || rep.LastSeq != G*N {
		t.Fatalf("Verify: %+v %v", rep, err)
	}
}

func TestVerifyWhileAppending(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{MaxFileBytes: 4 << 10})
	defer l.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 3000 {
			if _, err := l.Append(mkRec(i)); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for n := 0; ; n++ {
		select {
		case <-done:
			if n == 0 {
				t.Fatal("no Verify ran while appending")
			}
			if rep, err := Verify(dir); err != nil || rep.LastSeq != 3000 {
				t.Fatalf("Verify at the end: %+v %v", rep, err)
			}
			return
		default:
		}
		if _, err := Verify(dir); err != nil {
			t.Fatalf("Verify of a live log: %v", err)
		}
	}
}

func TestSyslogMirror(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	w, err := DialSyslog("unixgram", sock, "coffer-test")
	if err != nil {
		t.Fatal(err)
	}
	defer w.(io.Closer).Close()
	var logs syncBuffer
	l := openT(t, t.TempDir(), Options{Syslog: w, Logger: testLogger(&logs)})
	defer l.Close()

	r := mkRec(1)
	r.Operation = "key.create"
	if _, err := l.Append(r); err != nil {
		t.Fatal(err)
	}
	ln.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64<<10)
	n, err := ln.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	msg := string(buf[:n])
	if !strings.Contains(msg, `"operation":"key.create"`) || !strings.Contains(msg, "coffer-test") ||
		!strings.HasPrefix(msg, fmt.Sprintf("<%d>", syslogPriority)) {
		t.Fatalf("datagram %q", msg)
	}

	// A dead mirror does not fail Append.
	ln.Close()
	os.Remove(sock)
	for i := 2; i < 12; i++ {
		if _, err := l.Append(mkRec(i)); err != nil {
			t.Fatalf("Append with a dead mirror: %v", err)
		}
	}
	testutil.Poll(5*time.Second, func() error { // the checks below say what is missing
		if l.MirrorStats().Failed == 0 || !strings.Contains(logs.String(), "syslog mirror write failed") {
			return testutil.ErrNotYet
		}
		return nil
	})
	st := l.MirrorStats()
	if st.Sent < 1 || st.Failed == 0 {
		t.Fatalf("mirror stats %+v", st)
	}
	if !strings.Contains(logs.String(), "syslog mirror write failed") {
		t.Fatalf("mirror failure not logged: %s", logs.String())
	}
	if l.Count() != 11 {
		t.Fatalf("Count %d", l.Count())
	}
}

// blockingWriter blocks every Write until release is closed.
type blockingWriter struct {
	release chan struct{}
	n       int
}

func (b *blockingWriter) Write(p []byte) (int, error) {
	<-b.release
	b.n++
	return len(p), nil
}

func TestStuckMirrorDoesNotBlock(t *testing.T) {
	bw := &blockingWriter{release: make(chan struct{})}
	l := openT(t, t.TempDir(), Options{Syslog: bw})
	total := mirrorQueue + 500
	done := make(chan error)
	go func() {
		for i := range total {
			if _, err := l.Append(mkRec(i)); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Append blocked on a stuck mirror")
	}
	if d := l.MirrorStats().Dropped; d < 499 {
		t.Fatalf("dropped %d", d)
	}
	close(bw.release)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	st := l.MirrorStats()
	if st.Sent+st.Dropped != uint64(total) || st.Sent != uint64(bw.n) {
		t.Fatalf("stats %+v, writer got %d", st, bw.n)
	}
}

func TestMirrorSyslogLocal(t *testing.T) {
	// The local daemon may be absent in a test sandbox; either way the
	// result must be a usable writer or an error saying what failed.
	w, err := MirrorSyslog("coffer-test")
	if err != nil {
		if !strings.Contains(err.Error(), "local syslog") {
			t.Fatalf("error does not say what failed: %v", err)
		}
		return
	}
	w.(io.Closer).Close()
}

func TestRecordTooLarge(t *testing.T) {
	l := openT(t, t.TempDir(), Options{})
	defer l.Close()
	r := mkRec(1)
	r.Objects = []string{strings.Repeat("x", maxLineBytes)}
	if _, err := l.Append(r); err == nil {
		t.Fatal("oversized record accepted")
	}
	if r, err := l.Append(mkRec(1)); err != nil || r.Seq != 1 {
		t.Fatalf("Append after a rejected record: %+v %v", r, err)
	}
}

func TestTamperErrorFormat(t *testing.T) {
	for _, c := range []struct {
		e    TamperError
		want string
	}{
		{TamperError{File: "audit-00000001.log", Line: 17, Seq: 17, Kind: KindEdited, Msg: "x"}, "audit: audit-00000001.log line 17 (seq 17): edited: x"},
		{TamperError{File: HeadFile, Kind: KindHead, Msg: "y"}, "audit: audit.head: head: y"},
		{TamperError{Seq: 1, Kind: KindTruncated, Msg: "z"}, "audit: seq 1: truncated: z"},
	} {
		if got := c.e.Error(); got != c.want {
			t.Errorf("got %q want %q", got, c.want)
		}
	}
}

func BenchmarkAppend(b *testing.B) {
	b.Run("serial", func(b *testing.B) {
		l := openT(b, b.TempDir(), Options{})
		defer l.Close()
		r := mkRec(1)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := l.Append(r); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		l := openT(b, b.TempDir(), Options{})
		defer l.Close()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			r := mkRec(1)
			for pb.Next() {
				if _, err := l.Append(r); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}
