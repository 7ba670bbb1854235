package rest

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/coffer-kms/coffer/internal/service"
)

// TestEveryRequestIsAudited: with the server's handler chain (a top-level
// mux, as internal/server builds it, inside AuditEvery), requests that no
// route serves (a path the mux redirects to its clean form, an unknown
// path) get one audit record with the status and the reason; a request a
// route audits gets exactly one; health stays unaudited.
func TestEveryRequestIsAudited(t *testing.T) {
	h, svc, root := newServiceWith(t)
	mux := http.NewServeMux()
	mux.Handle("/", h)
	srv := httptest.NewServer(AuditEvery(svc, mux))
	t.Cleanup(srv.Close)
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	admin := service.WithIdentity(context.Background(), service.LocalRoot())
	send := func(method, path, body string) int {
		t.Helper()
		req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+root)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	cases := []struct {
		name, method, path, body string
		status                   int
		records                  int
		op, result, mention      string
	}{
		{"dot-dot", "GET", "/api/v1/wallets/../sys/status", "", 307, 1, "unrouted", "redirected", `"/api/v1/wallets/../sys/status" is not a clean path`},
		{"double slash", "POST", "/api/v1//wallets", `{"name":"w"}`, 307, 1, "unrouted", "redirected", `POST "/api/v1//wallets"`},
		{"unknown path", "GET", "/nothing-here", "", 404, 1, "unrouted", "not_found", `no route GET "/nothing-here"`},
		{"routed", "GET", "/api/v1/sys/status", "", 200, 1, "status", "ok", ""},
		{"routed 404", "GET", "/api/v1/no-such-route", "", 404, 1, "notFound", "not_found", "no route"},
		{"health", "GET", "/api/v1/sys/health", "", 200, 0, "", "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := svc.AuditCount()
			if got := send(tc.method, tc.path, tc.body); got != tc.status {
				t.Fatalf("%s %s: %d, want %d", tc.method, tc.path, got, tc.status)
			}
			recs, err := svc.AuditRecords(admin, before+1, 10)
			if err != nil {
				t.Fatal(err)
			}
			if len(recs) != tc.records {
				t.Fatalf("%d audit records, want %d: %+v", len(recs), tc.records, recs)
			}
			if tc.records == 0 {
				return
			}
			r := recs[0]
			if r.Operation != tc.op || r.Status != tc.status || r.Result != tc.result || !strings.Contains(r.Error, tc.mention) ||
				r.Actor != "root" || r.Transport != "rest" || r.Source == "" {
				t.Fatalf("audit record %+v, want %s %d %s by root mentioning %q", r, tc.op, tc.status, tc.result, tc.mention)
			}
			if strings.Contains(r.Error, `"name"`) {
				t.Fatalf("audit record carries the body: %q", r.Error)
			}
		})
	}
	// The redirect served nothing: no wallet was created.
	if _, err := svc.Access.GetWallet(admin, "w"); err == nil {
		t.Fatal("a redirected POST created a wallet")
	}
}
