package service

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/coffer-kms/coffer/internal/state"
)

// MaxRootTokenTTL bounds the lifetime asked for a root token.
const MaxRootTokenTTL = 8760 * time.Hour

// accessorLen hex digits of a token's SHA-256 name it in lists and
// revocations: enough to tell tokens apart, useless to authenticate.
const accessorLen = 16

func accessorOf(hash string) string { return hash[:min(len(hash), accessorLen)] }

// RootTokenInfo describes a root token without the token itself.
type RootTokenInfo struct {
	Accessor string     `json:"accessor" doc:"first 16 hex digits of the token's SHA-256"`
	Created  time.Time  `json:"created"`
	Expires  *time.Time `json:"expires,omitempty"`
	Expired  bool       `json:"expired,omitempty"`
	Current  bool       `json:"current,omitempty" doc:"the token of this request"`
}

// ListRootTokens lists the root tokens by accessor (system administrators):
// the one printed at init and every one created since that was not revoked.
func (s *Access) ListRootTokens(ctx context.Context) ([]RootTokenInfo, error) {
	id, err := requireRole(ctx, RoleSystemAdmin, "listing root tokens")
	if err != nil {
		return nil, err
	}
	toks, err := s.st.RootTokens()
	if err != nil {
		return nil, err
	}
	now := s.now()
	out := make([]RootTokenInfo, 0, len(toks))
	for _, t := range toks {
		out = append(out, RootTokenInfo{Accessor: accessorOf(t.Hash), Created: t.Created, Expires: t.Expires,
			Expired: t.Expires != nil && !now.Before(*t.Expires), Current: id.tokenHash == t.Hash})
	}
	slices.SortFunc(out, func(a, b RootTokenInfo) int { return a.Created.Compare(b.Created) })
	return out, nil
}

// RevokeRootToken deletes the root token whose accessor starts with prefix
// (at least 8 hex digits, matching one token) (system administrators). A
// lost or leaked root token is revoked this way; a new one is created with
// coffer token create-root on the server host.
func (s *Access) RevokeRootToken(ctx context.Context, prefix string) (string, error) {
	if _, err := requireRole(ctx, RoleSystemAdmin, "revoking a root token"); err != nil {
		return "", err
	}
	prefix = strings.ToLower(prefix)
	if len(prefix) < 8 || len(prefix) > 64 || strings.Trim(prefix, "0123456789abcdef") != "" {
		return "", fmt.Errorf("%w: accessor: give at least 8 (at most 64) hex digits as coffer token list shows them", ErrInvalid)
	}
	note(ctx, "root-token:"+prefix)
	toks, err := s.st.RootTokens()
	if err != nil {
		return "", err
	}
	var match []state.Token
	for _, t := range toks {
		if strings.HasPrefix(t.Hash, prefix) {
			match = append(match, t)
		}
	}
	switch len(match) {
	case 0:
		return "", fmt.Errorf("%w: no root token with accessor %s", ErrNotFound, prefix)
	case 1:
	default:
		return "", fmt.Errorf("%w: %d root tokens start with %s: give more digits", ErrInvalid, len(match), prefix)
	}
	if _, err := s.applyOpen(ctx, state.TypeTokenRevoke, state.TokenRevoke{Hash: match[0].Hash}); err != nil {
		return "", err
	}
	acc := accessorOf(match[0].Hash)
	s.log.Warn("root token revoked", "accessor", acc)
	return acc, nil
}
