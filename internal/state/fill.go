package state

import bolt "go.etcd.io/bbolt"

// appendFill is how full bbolt fills the pages it splits in the buckets
// keyed by object id when a transaction only appends to them. Object ids
// are time-ordered (UUIDv7), so a new object's record, its first version's
// material and its KV metadata land at the end of the objects, versions
// and kv_meta buckets: at bbolt's default of 0.5 every split there leaves
// a half-empty page behind that no later key falls into. 0.9 leaves room
// for records that grow in place later (a state change, a new version in
// the object's record).
//
// A transaction that also writes a new version of an existing object
// inserts into the middle of the versions bucket (its key follows the
// object's last version) and grows records in place; splitting those
// pages 90/10 would leave a trail of nearly empty pages, so such
// transactions keep bbolt's default, as do the buckets keyed by name
// (random order).
const appendFill = 0.9

// appendBuckets are the buckets keyed by object id.
var appendBuckets = [][]byte{bucketObjects, bucketValues, bucketKVMeta}

// fillAppendBuckets sets appendFill on the id-keyed buckets of the write
// transaction tx. bbolt keeps one handle per bucket per write transaction,
// reads FillPercent from it when it splits pages at commit, and starts
// every transaction at the default: call it in a transaction whose every
// write to those buckets was an append (a batch of object creates), before
// the commit.
func fillAppendBuckets(tx *bolt.Tx) {
	for _, name := range appendBuckets {
		if b := tx.Bucket(name); b != nil {
			b.FillPercent = appendFill
		}
	}
}
