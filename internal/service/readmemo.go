package service

import (
	"sync"

	"github.com/coffer-kms/coffer/internal/state"
)

// memoMax bounds the entries of one appliedMemo; a full memo is emptied.
const memoMax = 1024

// appliedMemo remembers records read from the state, each valid while the
// state has applied no command since it was read: tokens, endpoints, users,
// mounts and grants change only by applied commands (as for CertAuth), so
// an entry read at the current applied index is what a read would return
// now. A request on a state that applies commands finds its entry stale
// and reads again. Only successful reads are remembered.
type appliedMemo[K comparable, V any] struct {
	mu sync.RWMutex
	m  map[K]memoEntry[V]
}

type memoEntry[V any] struct {
	st *state.Store
	at uint64
	v  V
}

// get returns key's value when it was read from st at st's applied index.
func (m *appliedMemo[K, V]) get(st *state.Store, key K) (V, bool) {
	m.mu.RLock()
	e, ok := m.m[key]
	m.mu.RUnlock()
	if ok && e.st == st && e.at == st.AppliedIndex() {
		return e.v, true
	}
	var zero V
	return zero, false
}

// put remembers v for key, read from st after its applied index was at
// (read before the read: a command applied in between makes the entry
// stale, never wrong).
func (m *appliedMemo[K, V]) put(st *state.Store, at uint64, key K, v V) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.m == nil || len(m.m) >= memoMax {
		m.m = make(map[K]memoEntry[V])
	}
	m.m[key] = memoEntry[V]{st: st, at: at, v: v}
}

// tokenRead is what Authenticate reads of a token: the token and, for an
// endpoint's token, whether its endpoint exists, its name and its state.
type tokenRead struct {
	t             state.Token
	haveEndpoint  bool
	endpointName  string
	endpointState string
}

// readToken is state.TokenAndEndpoint through the memo.
func (s *core) readToken(hash string) (tokenRead, error) {
	if r, ok := s.tokens.get(s.st, hash); ok {
		if r.t.Expires != nil {
			x := *r.t.Expires // each caller its own copy
			r.t.Expires = &x
		}
		return r, nil
	}
	at := s.st.AppliedIndex()
	t, e, ok, err := s.st.TokenAndEndpoint(hash)
	if err != nil {
		return tokenRead{}, err
	}
	r := tokenRead{t: t, haveEndpoint: ok, endpointName: e.Name, endpointState: e.State}
	memo := r
	if t.Expires != nil {
		x := *t.Expires
		memo.t.Expires = &x
	}
	s.tokens.put(s.st, at, hash, memo)
	return r, nil
}

// vaultMount is state.VaultMount through the memo.
func (s *core) vaultMount(path string) (state.VaultMount, error) {
	if m, ok := s.mounts.get(s.st, path); ok {
		return m, nil
	}
	at := s.st.AppliedIndex()
	m, err := s.st.VaultMount(path)
	if err == nil {
		s.mounts.put(s.st, at, path, m)
	}
	return m, err
}

// grantKey is an endpoint's grant on a wallet.
type grantKey struct{ wallet, endpoint string }

// walletGrant is state.WalletGrant through the memo.
func (s *core) walletGrant(wallet, endpoint string) (string, error) {
	k := grantKey{wallet, endpoint}
	if g, ok := s.grants.get(s.st, k); ok {
		return g, nil
	}
	at := s.st.AppliedIndex()
	g, err := s.st.WalletGrant(wallet, endpoint)
	if err == nil {
		s.grants.put(s.st, at, k, g)
	}
	return g, err
}
