package service

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/testutil"
)

// TestAppRoleLoginRefusalWritesNothing: an AppRole login with a secret_id
// that names nothing (or another endpoint's, or an expired one) is refused
// without a command: anyone can send logins, and each refused one must not
// cost a raft entry, an fsync and a journal record.
func TestAppRoleLoginRefusalWritesNothing(t *testing.T) {
	dir := t.TempDir()
	clock := &testutil.Clock{}
	s := newSvcWith(t, testConfig(Config{DataDir: dir, Now: clock.Now}))
	defer s.Close()
	ctx := rootCtx()
	if _, err := s.Init(ctx, local, []byte(pass)); err != nil {
		t.Fatal(err)
	}
	for _, e := range []string{"app", "other"} {
		if _, err := s.Access.EnrollEndpoint(ctx, e, "", nil); err != nil {
			t.Fatal(err)
		}
	}
	sec, err := s.Access.IssueAppRoleSecret(ctx, "app", time.Minute, 0)
	if err != nil {
		t.Fatal(err)
	}
	anon := WithCall(context.Background(), &Call{Transport: "vault", Source: "192.0.2.7:4000", Start: time.Now()})
	refused := func(what, role, secret string) {
		t.Helper()
		before := s.st.AppliedIndex()
		if _, err := s.Access.AppRoleLogin(anon, role, secret); !errors.Is(err, ErrUnauthenticated) {
			t.Fatalf("%s: %v, want unauthenticated", what, err)
		}
		if after := s.st.AppliedIndex(); after != before {
			t.Fatalf("%s: the refused login applied %d command(s)", what, after-before)
		}
	}
	refused("unknown secret_id", "app", "cof_guessed")
	refused("another endpoint's secret_id", "other", sec.SecretID)
	refused("an endpoint's token as secret_id", "app", "cof_x"+sec.SecretID)
	if _, err := s.Access.AppRoleLogin(anon, "app", sec.SecretID); err != nil {
		t.Fatalf("a valid login: %v", err)
	}
	clock.Advance(2 * time.Minute)
	refused("expired secret_id", "app", sec.SecretID)
}
