package server

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/coffer-kms/coffer/internal/api/forward"
	kmipapi "github.com/coffer-kms/coffer/internal/api/kmip"
	"github.com/coffer-kms/coffer/internal/api/ui"
)

// TestPrefixFirstAgreesWithMux: for every request prefixFirst serves
// without the mux, the server's mux (its patterns as Start registers them)
// would have served the same handler, without a redirect; the others reach
// the mux.
func TestPrefixFirstAgreesWithMux(t *testing.T) {
	name := func(n string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Header().Set("X-Handler", n) })
	}
	mux := forward.NewServeMux()
	mux.Handle("GET /metrics", name("metrics"))
	mux.Handle("/", name("rest"))
	mux.Handle("/v1/", name("vault"))
	mux.Handle(ui.Prefix, name("ui"))
	mux.Handle("POST "+kmipapi.RelayPath, name("relay"))
	pf := &prefixFirst{prefix: "/v1/", h: name("vault"), mux: mux}
	pf.check(mux.Patterns())
	if !pf.on {
		t.Fatalf("the shortcut is off with the patterns %q", mux.Patterns())
	}
	paths := []string{
		"/v1/", "/v1/kv/data/a", "/v1/kv/data/a/b", "/v1/sys/health", "/v1//kv/data/a", "/v1/kv/../x",
		"/v1/./kv", "/v1/kv/.", "/v1/kv/..", "/v1/kv/.hidden", "/v1/kv/data/a%20b", "/v1%2Fkv/data/a",
		"/v1/kv%2Fdata/a", "/v1/kv/data/%2e%2e/x", "/v1", "/v10/x", "/V1/x", "/v1/kv/data/a?version=2",
		"/v1/kv/data/a/", "/api/v1/objects", "/ui/", "/metrics", "/v1/kv/data/é", "/v1/kv/data/a;b",
	}
	methods := []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodHead, "LIST", http.MethodConnect, http.MethodOptions}
	direct := 0
	for _, p := range paths {
		for _, m := range methods {
			req := httptest.NewRequest(m, "http://coffer"+p, nil)
			if m == http.MethodConnect {
				req = httptest.NewRequest(m, "coffer:443", nil)
				req.URL.Path, req.URL.RawPath = p, ""
			}
			want := httptest.NewRecorder()
			mux.ServeHTTP(want, req.Clone(req.Context()))
			got := httptest.NewRecorder()
			pf.ServeHTTP(got, req)
			if got.Code != want.Code || got.Header().Get("X-Handler") != want.Header().Get("X-Handler") || got.Header().Get("Location") != want.Header().Get("Location") {
				t.Errorf("%s %s: prefixFirst %d %q %q, mux %d %q %q", m, p, got.Code, got.Header().Get("X-Handler"), got.Header().Get("Location"),
					want.Code, want.Header().Get("X-Handler"), want.Header().Get("Location"))
			}
			if directReq := httptest.NewRequest(m, "http://coffer"+p, nil); m != http.MethodConnect && strings.HasPrefix(p, "/v1/") {
				if _, pattern := mux.Handler(directReq); pattern != "/v1/" && pf.direct(directReq) {
					t.Errorf("%s %s: served directly, the mux's pattern is %q", m, p, pattern)
				} else if pf.direct(directReq) {
					direct++
				}
			}
		}
	}
	if direct == 0 {
		t.Fatal("no request was served directly")
	}
}

// TestPrefixFirstOffBesideAnotherPattern: a pattern that could match a path
// under the prefix (more specific, with wildcards, or naming a host) turns
// the shortcut off, so that the mux serves that path as registered.
func TestPrefixFirstOffBesideAnotherPattern(t *testing.T) {
	base := []string{"GET /metrics", "/", "/v1/", "/ui/", "POST /api/v1/sys/cluster/kmip", "/v1"}
	if !onlyPatternUnder(base, "/v1/") {
		t.Fatalf("off with %q", base)
	}
	if onlyPatternUnder(base[:2], "/v1/") {
		t.Fatal("on without the prefix's own pattern")
	}
	for _, extra := range []string{"/v1/sys/other", "GET /v1/kv/data/x", "/{any}/x", "GET coffer.example/v1/", "example.org/"} {
		if onlyPatternUnder(append(base[:len(base):len(base)], extra), "/v1/") {
			t.Errorf("on beside %q", extra)
		}
	}
	// And served by the mux when off.
	mux := forward.NewServeMux()
	mux.Handle("/v1/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Header().Set("X-Handler", "vault") }))
	mux.Handle("/v1/sys/other", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Header().Set("X-Handler", "other") }))
	pf := &prefixFirst{prefix: "/v1/", h: http.NotFoundHandler(), mux: mux}
	pf.check(mux.Patterns())
	rec := httptest.NewRecorder()
	pf.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://coffer/v1/sys/other", nil))
	if got := rec.Header().Get("X-Handler"); got != "other" {
		t.Fatalf("GET /v1/sys/other went to %q, want the mux's other handler", got)
	}
}
