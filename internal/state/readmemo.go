package state

import "sync"

// memoMax bounds the entries of one appliedMemo (a full memo starts over);
// material over memoMaxMaterial bytes is not remembered.
const (
	memoMax         = 1024
	memoMaxMaterial = 4096
)

// appliedMemo remembers what a read returned, valid while the store has
// applied no command since: every change to the state is an applied
// command, and the applied index moves after its transaction committed.
// The index is read before the read, so a command applied in between
// makes the entry stale, never wrong. A read-mostly load (a KV secret or a
// key read again and again) then takes no read transaction; a store that
// applies commands between two reads reads again. Only successful reads
// are remembered, and callers get their own copies of what a value shares.
type appliedMemo[K comparable, V any] struct {
	mu sync.RWMutex
	m  map[K]memoAt[V]
}

type memoAt[V any] struct {
	at uint64
	v  V
}

func (m *appliedMemo[K, V]) get(s *Store, k K) (V, bool) {
	m.mu.RLock()
	e, ok := m.m[k]
	m.mu.RUnlock()
	if ok && e.at == s.applied.Load() {
		return e.v, true
	}
	var zero V
	return zero, false
}

func (m *appliedMemo[K, V]) put(at uint64, k K, v V) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.m == nil || len(m.m) >= memoMax {
		m.m = make(map[K]memoAt[V])
	}
	m.m[k] = memoAt[V]{at: at, v: v}
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
