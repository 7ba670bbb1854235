package state

import bolt "go.etcd.io/bbolt"

// appendFill is how full bbolt fills the pages it splits in the buckets
// whose new keys come last. Object ids are time-ordered (UUIDv7), so a new
// object's record, its first version's material and its KV metadata are
// appended at the end of the objects, versions and kv_meta buckets: at
// bbolt's default of 0.5 every split leaves a half-empty page behind that
// no later key falls into. 0.9 leaves room for records that grow in place
// (a state change, a KV metadata update). Buckets keyed by names (random
// order) keep the default.
const appendFill = 0.9

// appendBuckets are the buckets keyed by object id.
var appendBuckets = [][]byte{bucketObjects, bucketValues, bucketKVMeta}

// fillAppendBuckets sets appendFill on the append-mostly buckets of the
// write transaction tx (bbolt keeps one handle per bucket per transaction,
// and the setting lives on the handle).
func fillAppendBuckets(tx *bolt.Tx) {
	for _, name := range appendBuckets {
		if b := tx.Bucket(name); b != nil {
			b.FillPercent = appendFill
		}
	}
}
