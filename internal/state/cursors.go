package state

import (
	"bytes"

	bolt "go.etcd.io/bbolt"
)

// writeCursors keeps one cursor per bucket for the existence checks of a
// write transaction. bbolt's Bucket.Get makes a cursor and grows its stack
// for every call (four allocations for a three-level tree); a cursor kept
// for the transaction reuses its stack, and its Seek starts again from the
// bucket's root, so it is correct after any Put in between.
type writeCursors struct {
	tx *bolt.Tx
	b  [3]struct {
		name []byte
		c    *bolt.Cursor
	}
}

// has reports whether key is in bucket (a value, not a nested bucket), in tx,
// a write transaction.
func (w *writeCursors) has(tx *bolt.Tx, bucket, key []byte) bool {
	if w.tx != tx {
		w.reset()
		w.tx = tx
	}
	var c *bolt.Cursor
	for i := range w.b {
		e := &w.b[i]
		if e.c == nil {
			e.name, e.c = bucket, tx.Bucket(bucket).Cursor()
		}
		if bytes.Equal(e.name, bucket) {
			c = e.c
			break
		}
	}
	if c == nil {
		return tx.Bucket(bucket).Get(key) != nil
	}
	k, v := c.Seek(key)
	return v != nil && bytes.Equal(k, key)
}

// reset forgets the cursors (the transaction ended).
func (w *writeCursors) reset() { *w = writeCursors{} }
