package audit

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// heldWrite is one write of a log file seen by a writeHold.
type heldWrite struct {
	file  string
	lines int
}

// writeHold replaces a Log's writeAt: every write of a log file (not
// audit.head) is reported on calls and then waits for release. A nil
// release writes; an error writes the first half of the bytes and returns
// the error (a torn write).
type writeHold struct {
	calls   chan heldWrite
	release chan error
}

func holdWrites(l *Log) *writeHold {
	h := &writeHold{calls: make(chan heldWrite, 64), release: make(chan error)}
	l.mu.Lock()
	l.writeAt = func(f *os.File, b []byte, off int64) (int, error) {
		if filepath.Base(f.Name()) == HeadFile {
			return f.WriteAt(b, off)
		}
		h.calls <- heldWrite{file: filepath.Base(f.Name()), lines: bytes.Count(b, []byte{'\n'})}
		if err := <-h.release; err != nil {
			n, _ := f.WriteAt(b[:len(b)/2], off)
			return n, err
		}
		return f.WriteAt(b, off)
	}
	l.mu.Unlock()
	return h
}

func (h *writeHold) next(t *testing.T) heldWrite {
	t.Helper()
	select {
	case c := <-h.calls:
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("no write")
		return heldWrite{}
	}
}

// waitPending polls until n lines wait in the pending group.
func waitPending(t *testing.T, l *Log, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		l.mu.Lock()
		got := 0
		if l.pending != nil {
			got = len(l.pending.lens)
		}
		l.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d lines pending, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

type appendResult struct {
	r   Record
	err error
}

// appendAsync starts n appends and returns their results' channel.
func appendAsync(l *Log, from, n int) chan appendResult {
	out := make(chan appendResult, n)
	for i := range n {
		go func() {
			r, err := l.Append(mkRec(from + i))
			out <- appendResult{r, err}
		}()
	}
	return out
}

func results(t *testing.T, ch chan appendResult, n int) []appendResult {
	t.Helper()
	var rs []appendResult
	for range n {
		select {
		case r := <-ch:
			rs = append(rs, r)
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of %d appends returned", len(rs), n)
		}
	}
	return rs
}

// TestGroupWrite: appends arriving while a write is in progress are written
// together by one pwrite after it, each gets its own seq, the chain
// verifies, audit.head covers the group when they return, and the mirror
// gets every line in order.
func TestGroupWrite(t *testing.T) {
	dir := t.TempDir()
	var mirror syncBuffer
	l := openT(t, dir, Options{Syslog: &mirror})
	h := holdWrites(l)

	first := appendAsync(l, 0, 1)
	if c := h.next(t); c.lines != 1 {
		t.Fatalf("first write: %d lines", c.lines)
	}
	const N = 5
	rest := appendAsync(l, 1, N)
	waitPending(t, l, N)
	h.release <- nil
	if c := h.next(t); c.lines != N {
		t.Fatalf("group write: %d lines, want %d in one write", c.lines, N)
	}
	h.release <- nil

	seen := map[uint64]bool{}
	for _, r := range append(results(t, first, 1), results(t, rest, N)...) {
		if r.err != nil {
			t.Fatal(r.err)
		}
		if seen[r.r.Seq] || r.r.Seq < 1 || r.r.Seq > N+1 {
			t.Fatalf("seq %d given twice or out of range", r.r.Seq)
		}
		seen[r.r.Seq] = true
	}
	hf, err := os.Open(filepath.Join(dir, HeadFile))
	if err != nil {
		t.Fatal(err)
	}
	hd, ok, err := readHead(hf)
	hf.Close()
	if err != nil || !ok || hd.seq != N+1 {
		t.Fatalf("audit.head after the group returned: seq %d, %v, %v", hd.seq, ok, err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err := Verify(dir)
	if err != nil || rep.Records != N+1 || rep.HeadSeq != N+1 {
		t.Fatalf("verify: %+v, %v", rep, err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, fileName(1)))
	if err != nil {
		t.Fatal(err)
	}
	if got := mirror.String(); got != string(raw) {
		t.Fatalf("mirror got\n%s\nlog holds\n%s", got, raw)
	}
}

// TestGroupWriteFails: a group whose write fails (half of it written) fails
// every append in it and every append chained onto it while it was being
// written; the torn bytes are removed, the chain goes back to the last
// record written, and the next append continues it.
func TestGroupWriteFails(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{})
	h := holdWrites(l)

	first := appendAsync(l, 0, 1)
	h.next(t)
	group := appendAsync(l, 1, 3)
	waitPending(t, l, 3)
	h.release <- nil
	if c := h.next(t); c.lines != 3 {
		t.Fatalf("group write: %d lines", c.lines)
	}
	chained := appendAsync(l, 4, 2) // chained onto the group being written
	waitPending(t, l, 2)
	h.release <- errors.New("disk on fire")

	if r := results(t, first, 1)[0]; r.err != nil || r.r.Seq != 1 {
		t.Fatalf("first append: %+v", r)
	}
	for _, r := range append(results(t, group, 3), results(t, chained, 2)...) {
		if r.err == nil {
			t.Fatalf("append of seq %d succeeded in or after a failed write", r.r.Seq)
		}
	}
	if n := l.Count(); n != 1 {
		t.Fatalf("Count %d after the failed group, want 1", n)
	}
	raw, err := os.ReadFile(filepath.Join(dir, fileName(1)))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Count(raw, []byte{'\n'}) != 1 || raw[len(raw)-1] != '\n' {
		t.Fatalf("log after the failed group write:\n%s", raw)
	}

	l.mu.Lock()
	l.writeAt = (*os.File).WriteAt
	l.mu.Unlock()
	r, err := l.Append(mkRec(9))
	if err != nil || r.Seq != 2 {
		t.Fatalf("append after the failure: seq %d, %v", r.Seq, err)
	}
	if want := hashHex(bytes.TrimSuffix(raw, []byte{'\n'})); r.Prev != want {
		t.Fatalf("prev %s, want the hash of record 1 %s", r.Prev, want)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err := Verify(dir)
	if err != nil || rep.Records != 2 || rep.HeadSeq != 2 {
		t.Fatalf("verify: %+v, %v", rep, err)
	}
}

// TestGroupWriteRotates: a group that crosses MaxFileBytes is written with
// one write per file, rotating in between; no file passes the limit and the
// chain verifies across the files.
func TestGroupWriteRotates(t *testing.T) {
	dir := t.TempDir()
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	rec := func(i int) Record { r := mkRec(i); r.Time = at; return r }
	probe := openT(t, t.TempDir(), Options{})
	r0, err := probe.Append(rec(0))
	if err != nil {
		t.Fatal(err)
	}
	lineLen := int64(len(encoded(t, r0)) + 1) // mkRec(0..9) lines are the same length at seqs 1..9
	probe.Close()
	max := 2*lineLen + lineLen/2 // two lines a file

	l := openT(t, dir, Options{MaxFileBytes: max})
	h := holdWrites(l)
	first := make(chan appendResult, 1)
	go func() { r, err := l.Append(rec(0)); first <- appendResult{r, err} }()
	h.next(t)
	const N = 6
	rest := make(chan appendResult, N)
	for i := range N {
		go func() { r, err := l.Append(rec(1 + i)); rest <- appendResult{r, err} }()
	}
	waitPending(t, l, N)
	h.release <- nil
	// Seqs 2..7: one line fills file 1, then two lines a file.
	var writes []heldWrite
	for _, want := range []heldWrite{{fileName(1), 1}, {fileName(2), 2}, {fileName(3), 2}, {fileName(4), 1}} {
		c := h.next(t)
		writes = append(writes, c)
		if c != want {
			t.Fatalf("writes of the group so far %+v, want %+v next", writes, want)
		}
		h.release <- nil
	}
	for _, r := range append(results(t, first, 1), results(t, rest, N)...) {
		if r.err != nil {
			t.Fatal(r.err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err := Verify(dir)
	if err != nil || rep.Records != N+1 || rep.Files != 4 {
		t.Fatalf("verify: %+v, %v", rep, err)
	}
	for n := uint64(1); n <= 4; n++ {
		st, err := os.Stat(filepath.Join(dir, fileName(n)))
		if err != nil || st.Size() > max {
			t.Fatalf("%s: %v, size over %d", fileName(n), err, max)
		}
	}
}

// TestHeadFollowsLog: under concurrent appends every write of audit.head
// names a record whose bytes are already in the log file (the head is
// never ahead of the log, even if the process died right after the head
// write), and when Append returns, audit.head already covers its record.
func TestHeadFollowsLog(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{})
	logPath := filepath.Join(dir, fileName(1))
	var bad sync.Once
	var badMsg string
	l.mu.Lock()
	l.writeAt = func(f *os.File, b []byte, off int64) (int, error) {
		if filepath.Base(f.Name()) == HeadFile {
			hd, err := parseHead(b)
			raw, rerr := os.ReadFile(logPath)
			if err != nil || rerr != nil || uint64(bytes.Count(raw, []byte{'\n'})) < hd.seq {
				bad.Do(func() { badMsg = "audit.head written ahead of the log" })
			}
		}
		return f.WriteAt(b, off)
	}
	l.mu.Unlock()
	hf, err := os.Open(filepath.Join(dir, HeadFile))
	if err != nil {
		t.Fatal(err)
	}
	defer hf.Close()
	const G, N = 8, 40
	var wg sync.WaitGroup
	var mu sync.Mutex
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
				mu.Lock()
				hd, ok, err := readHead(hf)
				mu.Unlock()
				if err != nil || !ok || hd.seq < r.Seq {
					t.Errorf("Append of seq %d returned with audit.head at %d (%v)", r.Seq, hd.seq, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if badMsg != "" {
		t.Fatal(badMsg)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if rep, err := Verify(dir); err != nil || rep.Records != G*N {
		t.Fatalf("verify: %+v, %v", rep, err)
	}
}
