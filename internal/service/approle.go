package service

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/coffer-kms/coffer/internal/state"
)

// AppRole: an endpoint's role_id / secret_id pair for the Vault API's
// auth/approle/login. The role_id is the endpoint's name; a secret_id is
// shown once, stored as its SHA-256, expires, may be limited to a number of
// logins, and is revoked with its endpoint or on its own. A login spends a
// use and yields a login token of the endpoint (its grants).

// Limits of a secret id's lifetime.
const (
	DefaultAppRoleTTL = 24 * time.Hour
	MaxAppRoleTTL     = 366 * 24 * time.Hour
)

// AppRoleSecret is a freshly issued secret id (shown once).
type AppRoleSecret struct {
	RoleID   string    `json:"role_id"`
	SecretID string    `json:"secret_id"`
	Accessor string    `json:"secret_id_accessor"`
	Expires  time.Time `json:"expires"`
	Uses     int       `json:"uses,omitempty" doc:"logins allowed; 0 is unlimited"`
}

// IssueAppRoleSecret issues endpoint a new secret id valid for ttl (0: a
// day) and uses logins (0: unlimited). Key administrators only.
func (s *Access) IssueAppRoleSecret(ctx context.Context, endpoint string, ttl time.Duration, uses int) (AppRoleSecret, error) {
	note(ctx, "endpoint:"+endpoint)
	id, err := requireRole(ctx, RoleKeyAdmin, "issuing an AppRole secret id")
	if err != nil {
		return AppRoleSecret{}, err
	}
	if ttl == 0 {
		ttl = DefaultAppRoleTTL
	}
	if ttl < time.Minute || ttl > MaxAppRoleTTL {
		return AppRoleSecret{}, fmt.Errorf("%w: ttl %s: use 1m to %s", ErrInvalid, ttl, MaxAppRoleTTL)
	}
	if uses < 0 {
		return AppRoleSecret{}, fmt.Errorf("%w: uses %d: use 0 (unlimited) or more", ErrInvalid, uses)
	}
	if err := ValidLabel("endpoint", endpoint); err != nil {
		return AppRoleSecret{}, err
	}
	tok, h := newToken()
	exp := s.now().Add(ttl).UTC()
	if _, err := s.applyOpen(ctx, state.TypeTokenCreate, state.Token{Hash: h, Kind: state.TokenAppRole, Subject: endpoint,
		Name: "approle " + endpoint, Created: s.now().UTC(), Expires: &exp, UsesLeft: uses}); err != nil {
		return AppRoleSecret{}, fmt.Errorf("issue an AppRole secret id for endpoint %q: %w", endpoint, err)
	}
	s.log.Info("approle secret id issued", "endpoint", endpoint, "by", id.Actor(), "accessor", h[:24], "expires", exp, "uses", uses)
	return AppRoleSecret{RoleID: endpoint, SecretID: tok, Accessor: h[:24], Expires: exp, Uses: uses}, nil
}

// RevokeAppRoleSecrets revokes every secret id of endpoint and returns how
// many there were. Key administrators only.
func (s *Access) RevokeAppRoleSecrets(ctx context.Context, endpoint string) (int, error) {
	note(ctx, "endpoint:"+endpoint)
	id, err := requireRole(ctx, RoleKeyAdmin, "revoking AppRole secret ids")
	if err != nil {
		return 0, err
	}
	ts, err := s.st.TokensOf(state.TokenAppRole, endpoint)
	if err != nil {
		return 0, fmt.Errorf("listing the AppRole secret ids of endpoint %q: %w", endpoint, mapStateErr(err))
	}
	n := 0
	for _, t := range ts {
		if _, err := s.applyOpen(ctx, state.TypeTokenRevoke, state.TokenRevoke{Hash: t.Hash}); err != nil && !errors.Is(err, ErrNotFound) {
			return n, fmt.Errorf("revoke an AppRole secret id of endpoint %q: %w", endpoint, err)
		}
		n++
	}
	s.log.Warn("approle secret ids revoked", "endpoint", endpoint, "by", id.Actor(), "count", n)
	return n, nil
}

// AppRoleLogin exchanges a role_id (the endpoint's name) and a secret_id
// for a login token. It needs no caller: the pair is the credential.
func (s *Access) AppRoleLogin(ctx context.Context, roleID, secretID string) (LoginToken, error) {
	if ValidLabel("endpoint", roleID) == nil {
		note(ctx, "endpoint:"+roleID)
	}
	refused := fmt.Errorf("%w: invalid role_id or secret_id", ErrUnauthenticated)
	if roleID == "" || secretID == "" {
		return LoginToken{}, fmt.Errorf("%w: missing role_id or secret_id", ErrUnauthenticated)
	}
	if err := s.checkOpen(); err != nil {
		return LoginToken{}, err
	}
	// Refused here, without a command, when the secret id names nothing
	// usable: anyone may send logins, and a refused one must not cost a
	// raft entry and a journal record. The state machine checks again.
	secretHash := hashToken(secretID)
	sec, err := s.st.TokenByHash(secretHash)
	if errors.Is(err, state.ErrNotFound) || err == nil && (sec.Kind != state.TokenAppRole || sec.Subject != roleID ||
		sec.Expires != nil && !sec.Expires.After(s.now())) {
		s.log.Warn("approle login refused", "role_id", roleID)
		return LoginToken{}, refused
	}
	if err != nil {
		return LoginToken{}, fmt.Errorf("approle login of endpoint %q: read the secret id: %w", roleID, mapStateErr(err))
	}
	tok, h := newToken()
	exp := s.now().Add(LoginTokenTTL).UTC()
	_, err = s.applyOpen(ctx, state.TypeAppRoleLogin, state.AppRoleLogin{SecretHash: secretHash, Endpoint: roleID,
		Token: state.Token{Hash: h, Kind: state.TokenEndpoint, Subject: roleID, Name: "approle login " + roleID, Created: s.now().UTC(), Expires: &exp}})
	if err != nil {
		if errors.Is(err, ErrNotFound) || errors.Is(err, ErrConflict) {
			s.log.Warn("approle login refused", "role_id", roleID)
			return LoginToken{}, refused
		}
		return LoginToken{}, fmt.Errorf("approle login of endpoint %q: %w", roleID, err)
	}
	grants, err := s.grantsOf(roleID)
	if err != nil {
		return LoginToken{}, err
	}
	return LoginToken{Token: tok, Accessor: h[:24], Endpoint: roleID, Expires: exp, Grants: grants}, nil
}
