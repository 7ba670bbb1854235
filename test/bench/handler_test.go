package bench

// Coffer's own share of a Vault KV read, without TLS, sockets or a client:
// the request goes through the handler chain the server builds (leader
// forwarding, the audit of unrouted requests, the mux, the Vault handler)
// into a recorder. Its allocs/op and ns/op are the server's per-request
// cost alone (go test -run '^$' -bench VaultKVReadHandler -benchmem).

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/coffer-kms/coffer/internal/api/forward"
	"github.com/coffer-kms/coffer/internal/api/rest"
	"github.com/coffer-kms/coffer/internal/api/vault"
	"github.com/coffer-kms/coffer/internal/service"
)

// serverChain is the HTTP handler internal/server builds for svc (without
// metrics and the console).
func serverChain(svc *service.Service) http.Handler {
	mux := forward.NewServeMux()
	mux.Handle("/", rest.Handler(svc, rest.Options{}))
	mux.Handle("/v1/", vault.Handler(svc, vault.Options{}))
	return forward.Handler(rest.AuditEvery(svc, mux), svc.Cluster, forward.Options{IsLocal: rest.IsLocal, Routes: mux})
}

// discard is a ResponseWriter that keeps the status and drops the body.
type discard struct {
	h      http.Header
	status int
	n      int
}

func (d *discard) Header() http.Header { return d.h }
func (d *discard) WriteHeader(s int) {
	if d.status == 0 {
		d.status = s
	}
}
func (d *discard) Write(p []byte) (int, error) {
	if d.status == 0 {
		d.status = http.StatusOK
	}
	d.n += len(p)
	return len(p), nil
}

func BenchmarkVaultKVReadHandler(b *testing.B) {
	svc, tok := cofferVaultService(b)
	h := serverChain(svc)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		req := httptest.NewRequest("GET", kvPath, nil)
		req.Header.Set("X-Vault-Token", tok)
		w := &discard{h: make(http.Header)}
		for pb.Next() {
			clear(w.h)
			w.status, w.n = 0, 0
			h.ServeHTTP(w, req)
			if w.status != http.StatusOK || w.n == 0 {
				b.Errorf("status %d, %d bytes", w.status, w.n)
				return
			}
		}
	})
}
