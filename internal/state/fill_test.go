package state

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
)

// leafFill is the share of the leaf pages' bytes of bucket name in use.
func leafFill(t *testing.T, s *Store, name []byte) float64 {
	t.Helper()
	var st bolt.BucketStats
	if err := s.db.View(func(tx *bolt.Tx) error {
		st = tx.Bucket(name).Stats()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return float64(st.LeafInuse) / float64(st.LeafAlloc)
}

// TestAppendBucketsFill: batches of object creates with ids in order fill
// the split pages of the buckets keyed by id (bbolt's default leaves them
// half empty); batches that add versions to existing objects, which insert
// between keys, do not leave a trail of nearly empty pages behind.
func TestAppendBucketsFill(t *testing.T) {
	s := openWithWallet(t, filepath.Join(t.TempDir(), "state.db"))
	defer s.Close()
	const objects, batch = 3000, 20
	idx := uint64(1)
	apply := func(logs []*raft.Log) {
		t.Helper()
		for i, r := range s.ApplyBatch(logs) {
			if err, ok := r.(error); ok {
				t.Fatalf("entry %d: %v", logs[i].Index, err)
			}
		}
	}
	for i := 0; i < objects; i += batch {
		var logs []*raft.Log
		for j := i; j < i+batch; j++ {
			idx++
			logs = append(logs, put(t, idx, fmt.Sprintf("k%06d", j), 1))
		}
		apply(logs)
	}
	for _, b := range [][]byte{bucketObjects, bucketValues} {
		if f := leafFill(t, s, b); f < 0.75 {
			t.Errorf("after %d creates in order, %s pages are %.0f %% full, want at least 75 %%", objects, b, 100*f)
		}
	}
	for v := uint64(2); v <= 6; v++ {
		for i := 0; i < objects; i += batch {
			var logs []*raft.Log
			for j := i; j < i+batch; j++ {
				idx++
				logs = append(logs, put(t, idx, fmt.Sprintf("k%06d", j), v))
			}
			apply(logs)
		}
	}
	if f := leafFill(t, s, bucketValues); f < 0.55 {
		t.Errorf("after 5 new versions of each object, %s pages are %.0f %% full, want at least 55 %%", bucketValues, 100*f)
	}
}
