package service_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/service"
	"github.com/coffer-kms/coffer/internal/service/servicetest"
	"github.com/coffer-kms/coffer/internal/testutil"
)

// TestAppRoleExpiry: an AppRole secret_id is refused once its TTL has
// passed, and the login token it gave expires after LoginTokenTTL.
func TestAppRoleExpiry(t *testing.T) {
	clock := &testutil.Clock{}
	svc, _ := servicetest.NewOpen(t, func(c *service.Config) { c.Now = clock.Now })
	root := service.WithIdentity(context.Background(), service.LocalRoot())
	if _, err := svc.Access.EnrollEndpoint(root, "app", "", nil); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []time.Duration{time.Second, service.MaxAppRoleTTL + time.Hour} {
		if _, err := svc.Access.IssueAppRoleSecret(root, "app", bad, 0); !errors.Is(err, service.ErrInvalid) {
			t.Errorf("ttl %s: %v", bad, err)
		}
	}
	sec, err := svc.Access.IssueAppRoleSecret(root, "app", 10*time.Minute, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Access.Authenticate(sec.SecretID); !errors.Is(err, service.ErrUnauthenticated) {
		t.Errorf("a secret_id authenticated a request: %v", err)
	}
	lt, err := svc.Access.AppRoleLogin(context.Background(), "app", sec.SecretID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Access.Authenticate(lt.Token); err != nil {
		t.Fatalf("login token: %v", err)
	}
	clock.Advance(11 * time.Minute)
	if _, err := svc.Access.AppRoleLogin(context.Background(), "app", sec.SecretID); !errors.Is(err, service.ErrUnauthenticated) {
		t.Errorf("expired secret_id: %v", err)
	}
	clock.Advance(service.LoginTokenTTL)
	if _, err := svc.Access.Authenticate(lt.Token); !errors.Is(err, service.ErrUnauthenticated) {
		t.Errorf("login token after its TTL: %v", err)
	}
}
