package service

import (
	"github.com/coffer-kms/coffer/internal/state"
)

// The records the request path reads for every request (a token with its
// endpoint, a mount, an endpoint's grant on a wallet) go through
// state.AppliedMemo: they change only by applied commands.

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
	if r, ok := s.tokens.Get(s.st, hash); ok {
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
	s.tokens.Put(s.st, at, hash, memo)
	return r, nil
}

// vaultMount is state.VaultMount through the memo.
func (s *core) vaultMount(path string) (state.VaultMount, error) {
	if m, ok := s.mounts.Get(s.st, path); ok {
		return m, nil
	}
	at := s.st.AppliedIndex()
	m, err := s.st.VaultMount(path)
	if err == nil {
		s.mounts.Put(s.st, at, path, m)
	}
	return m, err
}

// grantKey is an endpoint's grant on a wallet.
type grantKey struct{ wallet, endpoint string }

// walletGrant is state.WalletGrant through the memo.
func (s *core) walletGrant(wallet, endpoint string) (string, error) {
	k := grantKey{wallet, endpoint}
	if g, ok := s.grants.Get(s.st, k); ok {
		return g, nil
	}
	at := s.st.AppliedIndex()
	g, err := s.st.WalletGrant(wallet, endpoint)
	if err == nil {
		s.grants.Put(s.st, at, k, g)
	}
	return g, err
}
