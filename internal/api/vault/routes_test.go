package vault

import (
	"net/http/httptest"
	"testing"

	"github.com/coffer-kms/coffer/internal/api/forward"
)

// TestRouteFacts: health and seal status are about this node (no token,
// not audited, never forwarded); every other Vault path needs a token, is
// served by the leader and audited under its operation.
func TestRouteFacts(t *testing.T) {
	a := &api{}
	for _, tc := range []struct {
		method, path string
		want         forward.Facts
	}{
		{"GET", "/v1/sys/health", forward.Facts{Placement: forward.NodeLocal}},
		{"POST", "/v1/sys/health", forward.Facts{Placement: forward.NodeLocal}},
		{"GET", "/v1/sys/seal-status", forward.Facts{Placement: forward.NodeLocal}},
		{"GET", "/v1/sys/mounts", forward.Facts{Auth: true, Placement: forward.Leader, Audit: "vault.sys.mounts.list"}},
		{"POST", "/v1/sys/mounts/kv", forward.Facts{Auth: true, Placement: forward.Leader, Audit: "vault.sys.mounts.enable"}},
		{"GET", "/v1/auth/token/lookup-self", forward.Facts{Auth: true, Placement: forward.Leader, Audit: "vault.auth.token.lookup-self"}},
		{"GET", "/v1/sys/leader", forward.Facts{Placement: forward.NodeLocal}},
		{"GET", "/v1/sys/internal/ui/mounts", forward.Facts{Auth: true, Placement: forward.Leader, Audit: "vault.sys.internal.ui.mounts"}},
		{"GET", "/v1/sys/internal/ui/mounts/kv/a/b", forward.Facts{Auth: true, Placement: forward.Leader, Audit: "vault.sys.internal.ui.mounts.read"}},
		{"POST", "/v1/sys/capabilities-self", forward.Facts{Auth: true, Placement: forward.Leader, Audit: "vault.sys.capabilities-self"}},
		{"POST", "/v1/auth/token/renew-self", forward.Facts{Auth: true, Placement: forward.Leader, Audit: "vault.auth.token.renew-self"}},
		{"POST", "/v1/auth/token/revoke-self", forward.Facts{Auth: true, Placement: forward.Leader, Audit: "vault.auth.token.revoke-self"}},
		{"POST", "/v1/auth/approle/login", forward.Facts{Placement: forward.Leader, Audit: "vault.auth.approle.login"}},
		{"PUT", "/v1/auth/cert/login", forward.Facts{Auth: true, Placement: forward.Leader, Audit: "vault.auth.cert.login"}},
		{"GET", "/v1/sys/unknown", forward.Facts{Auth: true, Placement: forward.Leader, Audit: "vault.unsupported"}},
		{"PUT", "/v1/kv/data/a", forward.Facts{Auth: true, Placement: forward.Leader, Audit: "vault.mount"}},
		{"GET", "/v1/transit/keys/k", forward.Facts{Auth: true, Placement: forward.Leader, Audit: "vault.mount"}},
	} {
		f, ok := a.RouteFacts(httptest.NewRequest(tc.method, tc.path, nil))
		if !ok || f != tc.want {
			t.Errorf("%s %s: %+v (%v), want %+v", tc.method, tc.path, f, ok, tc.want)
		}
	}
}
