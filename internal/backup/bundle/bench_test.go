package bundle

import (
	"bytes"
	"io"
	"sync"
	"testing"
)

var benchData = sync.OnceValue(func() []byte {
	b, err := io.ReadAll(newGen(32<<20, 3))
	if err != nil {
		panic(err)
	}
	return b
})

// BenchmarkWrite measures NewWriter + Write + Close of 32 MiB of
// half-compressible data to an X25519 recipient (MB/s of plaintext).
func BenchmarkWrite(b *testing.B) {
	data := benchData()
	enc := Encryption{Recipients: []string{testRecipient1}}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	var size int64
	for b.Loop() {
		cw := &countWriter{}
		w, err := NewWriter(cw, testManifest(), enc)
		if err != nil {
			b.Fatal(err)
		}
		for p := data; len(p) > 0; p = p[min(len(p), 1<<20):] {
			if _, err := w.Write(p[:min(len(p), 1<<20)]); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := w.Close(); err != nil {
			b.Fatal(err)
		}
		size = cw.n
	}
	b.ReportMetric(100*float64(size)/float64(len(data)), "%size")
}

// BenchmarkOpen measures Open + reading all of the same bundle.
func BenchmarkOpen(b *testing.B) {
	data := benchData()
	file, _ := writeBundle(b, testManifest(), Encryption{Recipients: []string{testRecipient1}}, data)
	dec := idDec(testIdentity1)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		rc, _, err := Open(bytes.NewReader(file), int64(len(file)), dec)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, rc); err != nil {
			b.Fatal(err)
		}
		rc.Close()
	}
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}
