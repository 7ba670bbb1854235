package audit

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// TestFailedWriteLeavesTheChain: records whose write fails are not
// appended: the count and chain stay, and the next record links to the last
// written one, so the log verifies.
func TestFailedWriteLeavesTheChain(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{})
	for i := range 3 {
		if _, err := l.Append(mkRec(i)); err != nil {
			t.Fatal(err)
		}
	}
	l.mu.Lock()
	path := filepath.Join(dir, fileName(l.num))
	l.f.Close() // every write now fails
	l.mu.Unlock()

	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r, err := l.Append(mkRec(10 + i)); err == nil {
				t.Errorf("append to a closed file succeeded: seq %d", r.Seq)
			}
		}()
	}
	wg.Wait()
	if n := l.Count(); n != 3 {
		t.Fatalf("count %d after failed writes, want 3", n)
	}

	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	l.mu.Lock()
	l.f = f
	l.mu.Unlock()
	r, err := l.Append(mkRec(20))
	if err != nil || r.Seq != 4 {
		t.Fatalf("append after the failure: seq %d, %v", r.Seq, err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	rep, err := Verify(dir)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if rep.Records != 4 {
		t.Fatalf("verify: %+v", rep)
	}
}

// TestConcurrentAppendRotates: many concurrent appends into small files:
// every record is written once, in seq order across the rotated files, and
// the chain verifies.
func TestConcurrentAppendRotates(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{MaxFileBytes: 4 << 10})
	const G, N = 16, 50
	var wg sync.WaitGroup
	for g := range G {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range N {
				if _, err := l.Append(mkRec(g*N + i)); err != nil {
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
	rep, err := Verify(dir)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if rep.Records != G*N || rep.Files < 2 {
		t.Fatalf("verify: %+v", rep)
	}
	for _, e := range l.files {
		if st, err := os.Stat(filepath.Join(dir, e.name)); err == nil && st.Size() > 4<<10 {
			t.Fatalf("%s is %d bytes, over MaxFileBytes", e.name, st.Size())
		}
	}
}

// BenchmarkAppendParallel: appends from 16 × GOMAXPROCS goroutines, the
// shape of a loaded server.
func BenchmarkAppendParallel(b *testing.B) {
	l := openT(b, b.TempDir(), Options{})
	rec := mkRec(1)
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := l.Append(rec); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
	l.Close()
}
