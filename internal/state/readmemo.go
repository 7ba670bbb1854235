package state

import "sync"

// memoMax bounds the entries of one AppliedMemo (a full memo starts over);
// material over memoMaxMaterial bytes, and entries whose decoded records
// come to more than about memoMaxBytes (an object with more than about a
// hundred versions, or many attributes), are not remembered: roughly
// 12 MiB per memo at most, keys and map overhead aside.
const (
	memoMax         = 1024
	memoMaxMaterial = 4096
	memoMaxBytes    = 8192
)

// AppliedMemo remembers what reads of a Store returned, valid while the
// store has applied no command since: every change to the state is an
// applied command, and the applied index moves after its transaction
// committed. The caller reads the index (AppliedIndex) before the read,
// so a command applied in between makes the entry stale, never wrong. A
// read-mostly load (a KV secret, a key, a token read again and again)
// then takes no read transaction; a store that applies commands between
// two reads reads again. Remember only successful reads, and give callers
// their own copies of what a value shares. The memo holds the reads of one
// store at one applied index: the first read at a newer index drops the
// others, and the store drops its own memos when it applies a batch
// (dropMemos), so what an entry holds, sealed material of a version
// destroyed since included, is not kept past the next command. At most
// memoMax entries (a full memo starts over).
type AppliedMemo[K comparable, V any] struct {
	mu sync.RWMutex
	st *Store // the store every entry of m was read from
	at uint64 // the applied index every entry of m was read at
	m  map[K]V
}

// Get returns what was remembered for k when it was read from s at s's
// current applied index.
func (m *AppliedMemo[K, V]) Get(s *Store, k K) (V, bool) {
	at := s.applied.Load()
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.m != nil && m.st == s && m.at == at {
		v, ok := m.m[k]
		return v, ok
	}
	var zero V
	return zero, false
}

// Put remembers v for k, read from s after its applied index was at.
func (m *AppliedMemo[K, V]) Put(s *Store, at uint64, k K, v V) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.m != nil && m.st == s && at < m.at:
		return // a newer read is already remembered: this one is stale
	case m.m == nil || m.st != s || at > m.at || len(m.m) >= memoMax:
		m.m, m.st, m.at = make(map[K]V), s, at
	}
	m.m[k] = v
}

// drop forgets every entry.
func (m *AppliedMemo[K, V]) drop() {
	m.mu.Lock()
	m.m = nil
	m.mu.Unlock()
}

// dropMemos forgets what the read memos hold: called once the applied
// index has moved.
func (s *Store) dropMemos() {
	s.kvMemo.drop()
	s.omgMemo.drop()
}

// memoWorth reports whether an entry of about footprint bytes is
// remembered.
func memoWorth(footprint int) bool { return footprint <= memoMaxBytes }

// objectFootprint is about how many bytes a decoded object holds.
func objectFootprint(o Object) int {
	n := 256 + len(o.ID) + len(o.Wallet) + len(o.Name) + len(o.Type) + len(o.Algorithm) + len(o.Reason) + len(o.CreatedBy)
	for k, v := range o.Attributes {
		n += 32 + len(k) + len(v)
	}
	for _, v := range o.Versions {
		n += 72 + len(v.Public)
	}
	return n
}

// kvMetaFootprint is about how many bytes decoded KV metadata holds.
func kvMetaFootprint(m KVMeta) int {
	n := 64 + 48*len(m.Deleted)
	for k, v := range m.CustomMetadata {
		n += 32 + len(k) + len(v)
	}
	return n
}

// kvEntryKey and kvEntryRead are a KVEntry read and what it returned.
type kvEntryKey struct {
	wallet, name string
	material     bool
	version      uint64
}

type kvEntryRead struct {
	o      Object
	m      KVMeta
	sealed []byte
}

// omgKey and omgRead are an ObjectMaterialGrant read and what it returned.
type omgKey struct {
	id       string
	version  uint64
	endpoint string
}

type omgRead struct {
	o        Object
	sealed   []byte
	grant    string
	grantErr error
}
