package rest

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/keystore"
	"github.com/coffer-kms/coffer/internal/service"
)

// newService is a real, open service in a temporary data dir, its handler
// and a root token.
func newService(t testing.TB) (http.Handler, string) {
	t.Helper()
	h, _, tok := newServiceWith(t)
	return h, tok
}

func newServiceWith(t testing.TB) (http.Handler, *service.Service, string) {
	t.Helper()
	svc, err := service.New(service.Config{DataDir: t.TempDir(), KDF: keystore.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1},
		MachineIdentity: func() ([]byte, error) { return []byte("m"), nil }, WriteRetryDelay: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	tok, err := svc.Init(context.Background(), service.Identity{Local: true}, []byte("rest-test-passphrase"))
	if err != nil {
		t.Fatal(err)
	}
	return Handler(svc, Options{}), svc, tok
}

func setup(t *testing.T) (*httptest.Server, *service.Service, string) {
	t.Helper()
	h, svc, tok := newServiceWith(t)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, svc, tok
}

func do(t *testing.T, srv *httptest.Server, tok, method, path, body string) (int, ErrorBody, string) {
	t.Helper()
	req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var eb ErrorBody
	json.Unmarshal(raw, &eb)
	return resp.StatusCode, eb, string(raw)
}

// TestBadInputIsRefusedAndChangesNothing: every malformed request gets a clear
// 4xx in the one error shape, and the state's applied index does not move.
func TestBadInputIsRefusedAndChangesNothing(t *testing.T) {
	srv, svc, tok := setup(t)
	before := svc.Status().AppliedIndex
	cases := []struct {
		name, method, path, body string
		status                   int
		code, mention            string
	}{
		{"malformed json", "PUT", "/api/v1/secrets/a", `{"value":`, 400, "invalid_request", "malformed JSON"},
		{"empty body", "PUT", "/api/v1/secrets/a", ``, 400, "invalid_request", "empty body"},
		{"unknown field", "PUT", "/api/v1/secrets/a", `{"value":"eA==","extra":1}`, 400, "invalid_request", "unknown field"},
		{"bad base64", "PUT", "/api/v1/secrets/a", `{"value":"***"}`, 400, "invalid_request", "base64"},
		{"wrong type", "PUT", "/api/v1/secrets/a", `{"value":42}`, 400, "invalid_request", "malformed JSON"},
		{"trailing data", "PUT", "/api/v1/secrets/a", `{"value":"eA=="} {}`, 400, "invalid_request", "trailing"},
		{"oversized", "PUT", "/api/v1/secrets/a", `{"value":"` + strings.Repeat("A", MaxBody) + `"}`, 400, "invalid_request", "larger than"},
		{"odd name", "PUT", "/api/v1/secrets/a%20b", `{"value":"eA=="}`, 400, "invalid_request", "name"},
		{"dot-dot name", "PUT", "/api/v1/secrets/..%2Fx", `{"value":"eA=="}`, 400, "invalid_request", "name"},
		{"empty value", "PUT", "/api/v1/secrets/a", `{"value":""}`, 400, "invalid_request", "1 to"},
		{"bad version", "GET", "/api/v1/secrets/a?version=x", ``, 400, "invalid_request", "version"},
		{"zero version", "GET", "/api/v1/secrets/a?version=0", ``, 400, "invalid_request", "version"},
		{"unknown route", "GET", "/api/v1/nope", ``, 404, "not_found", "no route"},
		{"no token", "", "", ``, 0, "", ""},
		{"bad stop mode", "POST", "/api/v1/sys/stop", `{"mode":"sideways"}`, 400, "invalid_request", "smart, fast or immediate"},
		{"short passphrase", "POST", "/api/v1/sys/keystore/change-passphrase", `{"old_passphrase":"rest-test-passphrase","new_passphrase":"short"}`, 400, "invalid_passphrase", "8 to 200"},
		{"wrong old passphrase", "POST", "/api/v1/sys/keystore/change-passphrase", `{"old_passphrase":"not-the-passphrase","new_passphrase":"long-enough-pass"}`, 400, "wrong_passphrase", "passphrase"},
		{"remote reset", "POST", "/api/v1/sys/keystore/reset-passphrase", `{"new_passphrase":"long-enough-pass"}`, 403, "forbidden", "local control socket"},
		{"init over the network", "POST", "/api/v1/sys/init", `{"passphrase":"whatever-passphrase"}`, 403, "forbidden", "local control socket"},
		{"root token over the network", "POST", "/api/v1/sys/root-token", ``, 403, "forbidden", "local control socket"},
	}
	for _, c := range cases {
		if c.method == "" {
			continue
		}
		status, eb, raw := do(t, srv, tok, c.method, c.path, c.body)
		if status != c.status || eb.Error.Code != c.code || !strings.Contains(eb.Error.Message, c.mention) {
			t.Errorf("%s: got %d %q %q, want %d %s mentioning %q", c.name, status, eb.Error.Code, raw[:min(len(raw), 200)], c.status, c.code, c.mention)
		}
	}
	if after := svc.Status().AppliedIndex; after != before {
		t.Fatalf("bad requests changed the state: applied index %d -> %d", before, after)
	}
	if _, err := svc.GetSecret(context.Background(), "a", 0); err == nil {
		t.Fatal("a secret was written by a bad request")
	}
	// Authentication: missing and wrong tokens.
	for _, tk := range []string{"", "cof_wrong"} {
		if status, eb, _ := do(t, srv, tk, "GET", "/api/v1/secrets/a", ""); status != 401 || eb.Error.Code != "unauthenticated" {
			t.Errorf("token %q: %d %s", tk, status, eb.Error.Code)
		}
	}
	// Health needs no token.
	if status, _, raw := do(t, srv, "", "GET", "/api/v1/sys/health", ""); status != 200 || !strings.Contains(raw, `"state":"open"`) {
		t.Errorf("health: %d %s", status, raw)
	}
}

func TestPutGetOverHTTP(t *testing.T) {
	srv, _, tok := setup(t)
	if status, _, raw := do(t, srv, tok, "PUT", "/api/v1/secrets/db/tde", `{"value":"c2VjcmV0"}`); status != 200 || !strings.Contains(raw, `"version":1`) {
		t.Fatalf("put: %d %s", status, raw)
	}
	status, _, raw := do(t, srv, tok, "GET", "/api/v1/secrets/db/tde", "")
	if status != 200 || !strings.Contains(raw, `"value":"c2VjcmV0"`) {
		t.Fatalf("get: %d %s", status, raw)
	}
	if status, eb, _ := do(t, srv, tok, "GET", "/api/v1/secrets/db/tde?version=2", ""); status != 404 || eb.Error.Code != "not_found" {
		t.Fatalf("missing version: %d %s", status, eb.Error.Code)
	}
}
