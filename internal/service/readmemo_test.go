package service_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/service"
	"github.com/coffer-kms/coffer/internal/service/servicetest"
)

// TestReadMemoFollowsCommands: the token, mount and grant a request reads
// are remembered between requests, and every command that changes them is
// seen by the next request: a grant taken away, a mount deleted, an
// endpoint revoked, a root token revoked.
func TestReadMemoFollowsCommands(t *testing.T) {
	svc, rootTok := servicetest.NewOpen(t)
	root := service.WithIdentity(context.Background(), service.LocalRoot())
	if _, err := svc.Access.CreateWallet(root, "w", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Objects.CreateMount(root, service.Mount{Path: "m", Type: service.MountKV, Wallet: "w"}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Objects.KVPut(root, "w", "k", []byte(`{"v":"1"}`), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Access.EnrollEndpoint(root, "app", "", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Access.SetGrant(root, "w", "app", service.PermRead); err != nil {
		t.Fatal(err)
	}
	sec, err := svc.Access.IssueAppRoleSecret(root, "app", 10*time.Minute, 0)
	if err != nil {
		t.Fatal(err)
	}
	lt, err := svc.Access.AppRoleLogin(context.Background(), "app", sec.SecretID)
	if err != nil {
		t.Fatal(err)
	}

	read := func() error {
		id, err := svc.Access.Authenticate(lt.Token)
		if err != nil {
			return err
		}
		m, err := svc.Objects.ResolveMount("m")
		if err != nil {
			return err
		}
		_, err = svc.Objects.KVGet(service.WithIdentity(context.Background(), id), m.Wallet, "k", 0)
		return err
	}
	for range 3 { // the first reads the state, the others the memo
		if err := read(); err != nil {
			t.Fatalf("read by the endpoint: %v", err)
		}
	}

	if _, err := svc.Access.SetGrant(root, "w", "app", ""); err != nil {
		t.Fatal(err)
	}
	if err := read(); !errors.Is(err, service.ErrForbidden) {
		t.Fatalf("after the grant was taken away: %v", err)
	}
	if _, err := svc.Access.SetGrant(root, "w", "app", service.PermRead); err != nil {
		t.Fatal(err)
	}
	if err := read(); err != nil {
		t.Fatalf("after the grant was given again: %v", err)
	}

	if err := svc.Objects.DeleteMount(root, "m"); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Objects.ResolveMount("m"); !errors.Is(err, service.ErrNotFound) {
		t.Fatalf("a deleted mount resolved: %v", err)
	}

	if _, err := svc.Access.RevokeEndpoint(root, "app"); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Access.Authenticate(lt.Token); !errors.Is(err, service.ErrUnauthenticated) {
		t.Fatalf("a revoked endpoint's token authenticated: %v", err)
	}

	for range 2 {
		if _, err := svc.Access.Authenticate(rootTok); err != nil {
			t.Fatalf("root token: %v", err)
		}
	}
	toks, err := svc.Access.ListRootTokens(root)
	if err != nil || len(toks) != 1 {
		t.Fatalf("root tokens %+v %v", toks, err)
	}
	if _, err := svc.Access.RevokeRootToken(root, toks[0].Accessor); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Access.Authenticate(rootTok); !errors.Is(err, service.ErrUnauthenticated) {
		t.Fatalf("a revoked root token authenticated: %v", err)
	}
}
