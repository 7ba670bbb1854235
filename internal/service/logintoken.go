package service

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/coffer-kms/coffer/internal/state"
)

// Login tokens: the Vault API's auth/cert/login gives an enrolled endpoint,
// identified by its client certificate, a token that expires. It is one more
// credential of the same endpoint (its grants, revoked with it), not a
// second identity system.

// LoginTokenTTL is how long a login token lasts.
const LoginTokenTTL = time.Hour

// LoginToken is a freshly issued login token (shown once).
type LoginToken struct {
	Token    string
	Accessor string // the token's hash prefix: names it without revealing it
	Endpoint string
	Expires  time.Time
	Grants   []string // "wallet:permission", sorted
}

// CertLogin issues a login token to the caller, an endpoint identified by
// its enrolled client certificate.
func (s *Access) CertLogin(ctx context.Context) (LoginToken, error) {
	id, err := caller(ctx)
	if err != nil {
		return LoginToken{}, err
	}
	if id.Kind != KindEndpoint || id.tokenHash != "" {
		return LoginToken{}, fmt.Errorf("%w: certificate login needs an enrolled endpoint's client certificate on the TLS connection, and no token", ErrUnauthenticated)
	}
	tok, h := newToken()
	exp := s.now().Add(LoginTokenTTL).UTC()
	if _, err := s.applyOpen(ctx, state.TypeTokenCreate, state.Token{Hash: h, Kind: state.TokenEndpoint, Subject: id.Name,
		Name: "login " + id.Name, Created: s.now().UTC(), Expires: &exp}); err != nil {
		return LoginToken{}, fmt.Errorf("store login token of endpoint %q: %w", id.Name, err)
	}
	grants, err := s.grantsOf(id.Name)
	if err != nil {
		return LoginToken{}, err
	}
	return LoginToken{Token: tok, Accessor: h[:24], Endpoint: id.Name, Expires: exp, Grants: grants}, nil
}

// grantsOf lists an endpoint's grants as "wallet:permission".
func (s *Access) grantsOf(endpoint string) ([]string, error) {
	ws, err := s.st.Wallets()
	if err != nil {
		return nil, fmt.Errorf("listing the grants of endpoint %q: %w", endpoint, mapStateErr(err))
	}
	var out []string
	for _, w := range ws {
		if p := w.Grants[endpoint]; p != "" {
			out = append(out, w.Name+":"+string(p))
		}
	}
	sort.Strings(out)
	return out, nil
}

// CallerGrants lists the caller's grants when it is an endpoint
// ("wallet:permission"); nil for other callers.
func (s *Access) CallerGrants(ctx context.Context) ([]string, error) {
	id, err := caller(ctx)
	if err != nil {
		return nil, err
	}
	if id.Kind != KindEndpoint {
		return nil, nil
	}
	return s.grantsOf(id.Name)
}

// CallerAccessor names the caller's token without revealing it (empty for
// a certificate or the control socket).
func (s *Access) CallerAccessor(ctx context.Context) string {
	id, err := caller(ctx)
	if err != nil || len(id.tokenHash) < 24 {
		return ""
	}
	return id.tokenHash[:24]
}

// RevokeSelf revokes the caller's token when it is one that expires (a
// session or a login token). Root tokens and an endpoint's enrollment
// credential are revoked with their own commands.
func (s *Access) RevokeSelf(ctx context.Context) error {
	id, err := caller(ctx)
	if err != nil {
		return err
	}
	if id.tokenHash == "" || id.Expires == nil {
		return fmt.Errorf("%w: only session and login tokens revoke themselves; root tokens and endpoint credentials have their own revoke commands (caller %s)", ErrInvalid, id.Actor())
	}
	_, err = s.applyOpen(ctx, state.TypeTokenRevoke, state.TokenRevoke{Hash: id.tokenHash})
	return err
}

// WalletPermission is the caller's permission on a wallet: an endpoint's
// grant, manage for key administrators, "" otherwise.
func (s *Objects) WalletPermission(ctx context.Context, wallet string) (Permission, error) {
	id, err := caller(ctx)
	if err != nil {
		return "", err
	}
	if id.Kind != KindEndpoint {
		if id.Has(RoleKeyAdmin) {
			return PermManage, nil
		}
		return "", nil
	}
	w, err := s.st.Wallet(wallet)
	if err != nil {
		return "", nil //nolint:nilerr // no such wallet: no permission, and nothing said about which wallets exist
	}
	return Permission(w.Grants[id.Name]), nil
}
