package service

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestAutoOpenNeedsAnAdministrator: with auto-open enabled, a keystore an
// administrator sealed is not opened again by an anonymous network caller
// (auto-open takes no passphrase, so the caller's credentials are all there
// is to check); a system administrator, the control socket and the server
// itself (no transport) may.
func TestAutoOpenNeedsAnAdministrator(t *testing.T) {
	dir := t.TempDir()
	s := initSvc(t, dir)
	defer s.Close()
	ctx := rootCtx()
	if err := s.EnableAutoOpen(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Seal(ctx); err != nil {
		t.Fatal(err)
	}
	from := func(id Identity) context.Context {
		return WithCall(context.Background(), &Call{Identity: id, Transport: "rest", Source: "192.0.2.7:4000", Start: time.Now()})
	}
	if err := s.OpenAuto(from(Identity{})); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("auto-open by an anonymous network caller: %v, want unauthenticated", err)
	}
	keyAdmin := Identity{Kind: KindUser, Name: "kim", Roles: []Role{RoleKeyAdmin}}
	if err := s.OpenAuto(from(keyAdmin)); !errors.Is(err, ErrForbidden) {
		t.Fatalf("auto-open by a key administrator: %v, want forbidden", err)
	}
	if s.State() != StateSealed {
		t.Fatalf("state %s after refused auto-opens, want sealed", s.State())
	}
	sysAdmin := Identity{Kind: KindUser, Name: "sam", Roles: []Role{RoleSystemAdmin}}
	if err := s.OpenAuto(from(sysAdmin)); err != nil {
		t.Fatalf("auto-open by a system administrator: %v", err)
	}
	if err := s.Seal(ctx); err != nil {
		t.Fatal(err)
	}
	sock := WithCall(context.Background(), &Call{Transport: "socket", Source: "local", Identity: LocalRoot(), Start: time.Now()})
	if err := s.OpenAuto(sock); err != nil {
		t.Fatalf("auto-open through the control socket: %v", err)
	}
	if err := s.Seal(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.OpenAuto(context.Background()); err != nil {
		t.Fatalf("auto-open at start (no transport): %v", err)
	}
}
