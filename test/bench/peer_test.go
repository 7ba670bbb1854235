// Package bench holds the peer benchmarks that scripts/bench.sh compares
// Coffer against on the same machine in the same run: bare bbolt, one
// fsynced transaction per write (what a naive store without raft, journal
// or encryption costs), and bare bbolt reads.
package bench

import (
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"
)

func openPeer(b *testing.B) *bolt.DB {
	db, err := bolt.Open(filepath.Join(b.TempDir(), "peer.db"), 0o600, nil)
	if err != nil {
		b.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucketIfNotExists([]byte("s")); return err })
	return db
}

func peerWrites(b *testing.B, writers int) {
	db := openPeer(b)
	defer db.Close()
	val := make([]byte, 64)
	b.ResetTimer()
	per := (b.N + writers - 1) / writers
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < per; i++ {
				err := db.Update(func(tx *bolt.Tx) error {
					return tx.Bucket([]byte("s")).Put([]byte(fmt.Sprintf("w%d-%d", w, i)), val)
				})
				if err != nil {
					b.Error(err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	b.ReportMetric(float64(per*writers)/b.Elapsed().Seconds(), "writes/s")
}

func BenchmarkPeerWrite1(b *testing.B)  { peerWrites(b, 1) }
func BenchmarkPeerWrite8(b *testing.B)  { peerWrites(b, 8) }
func BenchmarkPeerWrite64(b *testing.B) { peerWrites(b, 64) }

func BenchmarkPeerRead(b *testing.B) {
	db := openPeer(b)
	defer db.Close()
	db.Update(func(tx *bolt.Tx) error {
		for i := 0; i < 1000; i++ {
			tx.Bucket([]byte("s")).Put([]byte(fmt.Sprintf("r%d", i)), make([]byte, 64))
		}
		return nil
	})
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			db.View(func(tx *bolt.Tx) error {
				if tx.Bucket([]byte("s")).Get([]byte(fmt.Sprintf("r%d", i%1000))) == nil {
					b.Error("missing")
				}
				return nil
			})
			i++
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "reads/s")
}
