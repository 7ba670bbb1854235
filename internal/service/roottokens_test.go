package service

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/state"
)

// TestRootTokens: root tokens with and without a lifetime, listed by
// accessor only, revoked by accessor; expired ones stop working.
func TestRootTokens(t *testing.T) {
	s := initSvc(t, t.TempDir())
	ctx := rootCtx()
	if _, err := s.CreateRootToken(ctx, Identity{Name: "remote"}, 0); !errors.Is(err, ErrForbidden) {
		t.Fatalf("root token through the network: %v", err)
	}
	for _, bad := range []time.Duration{-time.Minute, time.Second, MaxRootTokenTTL + time.Hour} {
		if _, err := s.CreateRootToken(ctx, local, bad); !errors.Is(err, ErrInvalid) {
			t.Fatalf("ttl %s: %v", bad, err)
		}
	}
	short, err := s.CreateRootToken(ctx, local, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	id, err := s.Access.Authenticate(short)
	if err != nil || id.Kind != KindRoot {
		t.Fatalf("the new root token: %+v %v", id, err)
	}
	as := WithCall(ctx, &Call{Identity: id})
	list, err := s.Access.ListRootTokens(as)
	if err != nil {
		t.Fatal(err)
	}
	var mine RootTokenInfo
	for _, r := range list {
		if r.Current {
			mine = r
		}
	}
	// An accessor names a token but does not authenticate.
	if _, err := s.Access.Authenticate(mine.Accessor); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("an accessor authenticated: %v", err)
	}
	if len(list) < 2 || mine.Accessor == "" || mine.Expires == nil || mine.Expires.Sub(mine.Created) != time.Hour {
		t.Fatalf("list %+v", list)
	}
	// An expired root token no longer authenticates and shows as expired.
	past := time.Now().Add(-time.Minute).UTC()
	old, oldHash := newToken()
	if _, err := s.applyOpen(ctx, state.TypeTokenCreate, state.Token{Hash: oldHash, Kind: state.TokenRoot, Name: "root", Created: past.Add(-time.Hour), Expires: &past}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Access.Authenticate(old); !errors.Is(err, ErrUnauthenticated) || !strings.Contains(err.Error(), "token expired at") {
		t.Fatalf("an expired root token: %v", err)
	}
	list, _ = s.Access.ListRootTokens(ctx)
	expired := false
	for _, r := range list {
		expired = expired || r.Accessor == accessorOf(oldHash) && r.Expired
	}
	if !expired {
		t.Fatalf("expired token not shown as expired: %+v", list)
	}
	for prefix, want := range map[string]error{"abc": ErrInvalid, "zzzzzzzz": ErrInvalid, "00000000": ErrNotFound} {
		if _, err := s.Access.RevokeRootToken(ctx, prefix); !errors.Is(err, want) {
			t.Fatalf("revoke %q: %v, want %v", prefix, err, want)
		}
	}
	if acc, err := s.Access.RevokeRootToken(ctx, strings.ToUpper(mine.Accessor[:8])); err != nil || acc != mine.Accessor {
		t.Fatalf("revoke by 8 digits: %q %v", acc, err)
	}
	if _, err := s.Access.Authenticate(short); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("a revoked root token still works: %v", err)
	}
	if _, err := s.Access.RevokeRootToken(ctx, mine.Accessor); !errors.Is(err, ErrNotFound) {
		t.Fatalf("revoke twice: %v", err)
	}
	// Only system administrators list and revoke.
	kctx := WithIdentity(ctx, Identity{Kind: KindUser, Name: "k", Roles: []Role{RoleKeyAdmin}})
	if _, err := s.Access.ListRootTokens(kctx); !errors.Is(err, ErrForbidden) {
		t.Fatalf("key admin lists root tokens: %v", err)
	}
}
