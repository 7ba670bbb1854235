package journal

import (
	"fmt"
	"testing"
	"time"
)

func benchRecs(from uint64, n int) []Record {
	rs := make([]Record, n)
	payload := make([]byte, 256)
	for i := range rs {
		rs[i] = Record{Index: from + uint64(i), Time: t0, Type: 1, KeyID: 1, Payload: payload}
	}
	return rs
}

func BenchmarkAppend(b *testing.B) {
	for _, batch := range []int{1, 64} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			j, err := Open(Options{Dir: b.TempDir(), Name: "bench"})
			if err != nil {
				b.Fatal(err)
			}
			defer j.Close()
			b.SetBytes(int64(batch * 256))
			b.ReportAllocs()
			next := uint64(1)
			for b.Loop() {
				if err := j.Append(benchRecs(next, batch), testCipher{}); err != nil {
					b.Fatal(err)
				}
				next += uint64(batch)
			}
		})
	}
}

func BenchmarkVerify(b *testing.B) {
	dir := b.TempDir()
	j, err := Open(Options{Dir: dir, Name: "bench", MaxSegmentBytes: 1 << 20, Now: func() time.Time { return t0 }})
	if err != nil {
		b.Fatal(err)
	}
	const n = 10000
	for i := uint64(1); i <= n; i += 100 {
		if err := j.Append(benchRecs(i, 100), testCipher{}); err != nil {
			b.Fatal(err)
		}
	}
	j.Close()
	for _, c := range []Cipher{nil, testCipher{}} {
		b.Run(fmt.Sprintf("decrypt=%v", c != nil), func(b *testing.B) {
			b.SetBytes(n * 256)
			for b.Loop() {
				if rep, err := Verify(dir, c); err != nil || rep.Records != n {
					b.Fatal(rep, err)
				}
			}
		})
	}
}
