package audit

import (
	"bytes"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
)

// stableHead reads audit.head until two reads in a row agree (a read that
// overlaps the head's rewrite may see part of each version).
func stableHead(t *testing.T, f *os.File) head {
	t.Helper()
	b := make([]byte, headLen)
	prev := make([]byte, headLen)
	for i := 0; ; i++ {
		if _, err := f.ReadAt(b, 0); err != nil {
			t.Errorf("read %s: %v", HeadFile, err)
			return head{}
		}
		if i > 0 && bytes.Equal(b, prev) {
			hd, err := parseHead(b)
			if err != nil {
				t.Errorf("%s: %v", HeadFile, err)
			}
			return hd
		}
		copy(prev, b)
	}
}

// TestHeadNeverAheadOfLog: while eight goroutines append, a reader reads
// audit.head and then the log file: every head it sees names a record
// whose line is already complete in the log with that hash, so a process
// killed right after any head write leaves a head Open accepts; and every
// Append returns with audit.head at its record or later, so cutting even
// the last acknowledged record is detected.
func TestHeadNeverAheadOfLog(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{})
	hf, err := os.Open(filepath.Join(dir, HeadFile))
	if err != nil {
		t.Fatal(err)
	}
	defer hf.Close()
	logPath := filepath.Join(dir, fileName(1))

	var stop atomic.Bool
	var checks atomic.Int64
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for !stop.Load() {
			hd := stableHead(t, hf)
			raw, err := os.ReadFile(logPath)
			if err != nil {
				t.Error(err)
				return
			}
			if hd.seq == 0 {
				continue
			}
			lines := bytes.SplitAfter(raw, []byte{'\n'})
			if uint64(len(lines)) < hd.seq || !bytes.HasSuffix(lines[hd.seq-1], []byte{'\n'}) {
				t.Errorf("audit.head names seq %d, the log holds %d complete lines", hd.seq, bytes.Count(raw, []byte{'\n'}))
				return
			}
			if h := hashHex(bytes.TrimSuffix(lines[hd.seq-1], []byte{'\n'})); h != hd.hash {
				t.Errorf("audit.head's hash for seq %d is not the log's line", hd.seq)
				return
			}
			checks.Add(1)
		}
	}()

	const G, N = 8, 150
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
				if hd := stableHead(t, hf); hd.seq < r.Seq {
					t.Errorf("Append of seq %d returned with audit.head at seq %d", r.Seq, hd.seq)
					return
				}
			}
		}()
	}
	wg.Wait()
	stop.Store(true)
	<-readerDone
	if checks.Load() == 0 {
		t.Fatal("the reader checked no head")
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if rep, err := Verify(dir); err != nil || rep.Records != G*N || rep.HeadSeq != G*N {
		t.Fatalf("verify: %+v, %v", rep, err)
	}
}
