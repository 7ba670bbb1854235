package bundle

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// heapWatch samples HeapInuse every `every` bytes passing through it.
type heapWatch struct {
	every, next, n int64
	max            uint64
}

func (h *heapWatch) sample() {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	h.max = max(h.max, ms.HeapInuse)
}

func (h *heapWatch) tick(n int) {
	h.n += int64(n)
	if h.n >= h.next {
		h.sample()
		h.next = h.n + h.every
	}
}

// TestLargeStream writes and reads a 200 MiB payload (32 MiB with -short)
// through a file, checking that memory stays flat, and reports throughput
// (which includes generating and hashing the test data; see BenchmarkWrite).
func TestLargeStream(t *testing.T) {
	size := int64(200 << 20)
	if testing.Short() {
		size = 32 << 20
	}
	path := filepath.Join(t.TempDir(), "large.bundle")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	watch := &heapWatch{every: 8 << 20}

	// Write: generated plaintext, hashed on the way in.
	start := time.Now()
	bf := bufio.NewWriterSize(f, 256<<10)
	w, err := NewWriter(bf, testManifest(), Encryption{Recipients: []string{testRecipient1}})
	if err != nil {
		t.Fatal(err)
	}
	in := sha256.New()
	gen := newGen(size, 7)
	buf := make([]byte, 1<<20)
	for {
		n, err := gen.Read(buf)
		if n > 0 {
			in.Write(buf[:n])
			if _, err := w.Write(buf[:n]); err != nil {
				t.Fatal(err)
			}
			watch.tick(n)
		}
		if err == io.EOF {
			break
		}
	}
	m, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := bf.Flush(); err != nil {
		t.Fatal(err)
	}
	writeTime := time.Since(start)
	writeHeap := watch.max

	// Read it back.
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	watch.max, watch.n, watch.next = 0, 0, 0
	start = time.Now()
	rc, _, err := Open(f, fi.Size(), idDec(testIdentity1))
	if err != nil {
		t.Fatal(err)
	}
	out := sha256.New()
	for {
		n, err := rc.Read(buf)
		out.Write(buf[:n])
		watch.tick(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	rc.Close()
	readTime := time.Since(start)
	if !bytes.Equal(in.Sum(nil), out.Sum(nil)) || m.PlainSize != size {
		t.Fatal("plaintext differs")
	}

	mb := float64(size) / (1 << 20)
	t.Logf("%.0f MiB plaintext -> %.1f MiB file (%.0f%%)", mb, float64(fi.Size())/(1<<20), 100*float64(fi.Size())/float64(size))
	t.Logf("write %.0f MiB/s, read %.0f MiB/s", mb/writeTime.Seconds(), mb/readTime.Seconds())
	t.Logf("HeapInuse: base %.1f MiB, max while writing %.1f MiB, while reading %.1f MiB", float64(base)/(1<<20), float64(writeHeap)/(1<<20), float64(watch.max)/(1<<20))
	const limit = 48 << 20
	if writeHeap > base+limit || watch.max > base+limit {
		t.Fatalf("heap grew by more than %d MiB", limit>>20)
	}
}
