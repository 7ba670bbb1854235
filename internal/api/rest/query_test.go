package rest

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/coffer-kms/coffer/internal/service"
)

// TestUnknownQueryParametersAreRefused: a query parameter the route does
// not declare (a typo such as ?wallets=) is refused with 400 naming it and
// the ones the route takes, and the request does nothing; the declared
// ones (the same list as the OpenAPI document's) are served.
func TestUnknownQueryParametersAreRefused(t *testing.T) {
	srv, svc, tok := setup(t)
	if _, err := svc.Access.CreateWallet(service.WithIdentity(t.Context(), service.LocalRoot()), "w", ""); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ method, path, body, names string }{
		{"GET", "/api/v1/wallets?wallets=w", "", `"wallets"; this route takes limit, page_token`},
		{"GET", "/api/v1/objects?wallet=w&walet=w", "", `"walet"; this route takes wallet, name, type, state, attr, limit, page_token`},
		{"GET", "/api/v1/sys/status?verbose=1", "", `"verbose"; this route takes no query parameters`},
		{"POST", "/api/v1/wallets?dry_run=true", `{"name":"w2"}`, `"dry_run"; this route takes no query parameters`},
	} {
		status, eb, raw := do(t, srv, tok, c.method, c.path, c.body)
		if status != http.StatusBadRequest || !strings.Contains(eb.Error.Message, "unknown query parameter "+c.names) {
			t.Errorf("%s %s: %d %s, want 400 naming the parameter and the route's", c.method, c.path, status, raw)
		}
	}
	if _, err := svc.Access.GetWallet(service.WithIdentity(t.Context(), service.LocalRoot()), "w2"); err == nil {
		t.Errorf("a refused request created wallet w2")
	}
	for _, path := range []string{"/api/v1/wallets?limit=5", "/api/v1/objects?wallet=w&attr=a=b&limit=2", "/api/v1/audit?order=newest&limit=3"} {
		if status, _, raw := do(t, srv, tok, "GET", path, ""); status != http.StatusOK {
			t.Errorf("GET %s: %d %s", path, status, raw)
		}
	}
	if status, _, raw := do(t, srv, tok, "GET", "/api/v1/nothing?x=1", ""); status != http.StatusNotFound {
		t.Errorf("no route with a parameter: %d %s, want 404", status, raw)
	}
}

// TestProbesTakeAnyQuery: the health check, the cluster CA and the OpenAPI
// document (the unaudited, read-only routes) answer whatever query a
// load balancer's probe or a monitoring tool adds (a cache-buster, Vault's
// ?standbyok=true): a 400 there would mark a working node down.
func TestProbesTakeAnyQuery(t *testing.T) {
	srv, _, tok := setup(t)
	for _, path := range []string{"/api/v1/sys/health?standbyok=true&_=1733600000", "/api/v1/cluster/ca?x=1", "/api/v1/openapi.json?v=2"} {
		if status, _, raw := do(t, srv, tok, "GET", path, ""); status == http.StatusBadRequest {
			t.Errorf("GET %s: %d %s, want the route's answer", path, status, raw)
		}
	}
}

// TestProbesDocumentNoRefusedQuery: the OpenAPI document does not list 400
// for the probes (health, the cluster CA, the document itself): they take
// any query and refuse nothing else with 400. Every other route lists it.
func TestProbesDocumentNoRefusedQuery(t *testing.T) {
	for _, rt := range (&api{}).routes() {
		key := rt.Method + " " + rt.Pattern
		if lists := slices.Contains(rt.Errors, http.StatusBadRequest); lists == slices.Contains(unauditedRoutes, key) {
			t.Errorf("%s: 400 listed %v, want %v", key, lists, !lists)
		}
	}
}
