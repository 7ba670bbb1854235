package rest

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/coffer-kms/coffer/internal/api/openapi"
	"github.com/coffer-kms/coffer/internal/service"
	"github.com/coffer-kms/coffer/internal/service/servicetest"
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
	svc := servicetest.New(t)
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
		{"malformed json", "PUT", "/api/v1/wallets/default/secrets/a", `{"value":`, 400, "invalid_request", "malformed JSON"},
		{"empty body", "PUT", "/api/v1/wallets/default/secrets/a", ``, 400, "invalid_request", "empty body"},
		{"unknown field", "PUT", "/api/v1/wallets/default/secrets/a", `{"value":"eA==","extra":1}`, 400, "invalid_request", "unknown field"},
		{"bad base64", "PUT", "/api/v1/wallets/default/secrets/a", `{"value":"***"}`, 400, "invalid_request", "base64"},
		{"wrong type", "PUT", "/api/v1/wallets/default/secrets/a", `{"value":42}`, 400, "invalid_request", "malformed JSON"},
		{"trailing data", "PUT", "/api/v1/wallets/default/secrets/a", `{"value":"eA=="} {}`, 400, "invalid_request", "trailing"},
		{"trailing brace", "PUT", "/api/v1/wallets/default/secrets/a", `{"value":"eA=="}}`, 400, "invalid_request", "trailing"},
		{"trailing bracket", "PUT", "/api/v1/wallets/default/secrets/a", `{"value":"eA=="}]`, 400, "invalid_request", "trailing"},
		{"oversized", "PUT", "/api/v1/wallets/default/secrets/a", `{"value":"` + strings.Repeat("A", MaxBody) + `"}`, 400, "invalid_request", "larger than"},
		{"odd name", "PUT", "/api/v1/wallets/default/secrets/a%20b", `{"value":"eA=="}`, 400, "invalid_request", "name"},
		{"dot-dot name", "PUT", "/api/v1/wallets/default/secrets/..%2Fx", `{"value":"eA=="}`, 400, "invalid_request", "name"},
		{"empty value", "PUT", "/api/v1/wallets/default/secrets/a", `{"value":""}`, 400, "invalid_request", "1 to"},
		{"bad version", "GET", "/api/v1/wallets/default/objects/a?version=x", ``, 400, "invalid_request", "version"},
		{"zero version", "GET", "/api/v1/wallets/default/objects/a?version=0", ``, 400, "invalid_request", "version"},
		{"unknown route", "GET", "/api/v1/nope", ``, 404, "not_found", "no route"},
		{"unknown wallet", "PUT", "/api/v1/wallets/nope/secrets/a", `{"value":"eA=="}`, 404, "not_found", "wallet"},
		{"odd wallet name", "PUT", "/api/v1/wallets/a%20b/secrets/a", `{"value":"eA=="}`, 400, "invalid_request", "wallet name"},
		{"create: unknown type", "POST", "/api/v1/objects", `{"wallet":"default","name":"k","type":"blob"}`, 400, "invalid_request", "object type"},
		{"create: AES 100 bits", "POST", "/api/v1/objects", `{"wallet":"default","name":"k","type":"symmetric_key","length":100}`, 400, "invalid_request", "128, 192 or 256"},
		{"create: RSA 1024", "POST", "/api/v1/objects", `{"wallet":"default","name":"k","type":"key_pair","algorithm":"RSA","length":1024}`, 400, "invalid_request", "2048, 3072 or 4096"},
		{"create: EC 521", "POST", "/api/v1/objects", `{"wallet":"default","name":"k","type":"key_pair","algorithm":"EC","length":521}`, 400, "invalid_request", "P-256"},
		{"create: DSA", "POST", "/api/v1/objects", `{"wallet":"default","name":"k","type":"key_pair","algorithm":"DSA"}`, 400, "invalid_request", "RSA or EC"},
		{"create: secret without value", "POST", "/api/v1/objects", `{"wallet":"default","name":"k","type":"secret_data"}`, 400, "invalid_request", "1 to 65536"},
		{"create: secret too big", "POST", "/api/v1/objects", `{"wallet":"default","name":"k","type":"secret_data","value":"` + strings.Repeat("QUFB", 65537/3+1) + `"}`, 400, "invalid_request", "1 to 65536"},
		{"create: wrong type of length", "POST", "/api/v1/objects", `{"wallet":"default","name":"k","type":"symmetric_key","length":"256"}`, 400, "invalid_request", "malformed JSON"},
		{"create: unknown field", "POST", "/api/v1/objects", `{"wallet":"default","name":"k","type":"symmetric_key","colour":"red"}`, 400, "invalid_request", "unknown field"},
		{"create: odd name", "POST", "/api/v1/objects", `{"wallet":"default","name":"a\u0000b","type":"symmetric_key"}`, 400, "invalid_request", "name"},
		{"create: odd attribute name", "POST", "/api/v1/objects", `{"wallet":"default","name":"k","type":"symmetric_key","attributes":{"a b":"x"}}`, 400, "invalid_request", "attribute name"},
		{"create: control char in attribute", "POST", "/api/v1/objects", `{"wallet":"default","name":"k","type":"symmetric_key","attributes":{"ab":"x\ny"}}`, 400, "invalid_request", "printable"},
		{"create: bad base64", "POST", "/api/v1/objects", `{"wallet":"default","name":"k","type":"secret_data","value":"%%%"}`, 400, "invalid_request", "base64"},
		{"list: bad state", "GET", "/api/v1/objects?state=sleepy", ``, 400, "invalid_request", "state"},
		{"list: bad limit", "GET", "/api/v1/objects?limit=5000", ``, 400, "invalid_request", "limit"},
		{"list: bad attr", "GET", "/api/v1/objects?attr=novalue", ``, 400, "invalid_request", "key=value"},
		{"list: forged page token", "GET", "/api/v1/objects?page_token=***", ``, 400, "invalid_request", "page token"},
		{"get: missing object", "GET", "/api/v1/objects/00000000-0000-4000-8000-000000000000", ``, 404, "not_found", "object"},
		{"transition: missing object", "POST", "/api/v1/objects/nope/destroy", ``, 404, "not_found", "object"},
		{"wallet: odd name", "POST", "/api/v1/wallets", `{"name":"../etc"}`, 400, "invalid_request", "wallet name"},
		{"wallet: exists", "POST", "/api/v1/wallets", `{"name":"default"}`, 409, "conflict", "already exists"},
		{"user: short password", "POST", "/api/v1/users", `{"name":"bob","password":"short","roles":["key_admin"]}`, 400, "invalid_request", "password"},
		{"user: unknown role", "POST", "/api/v1/users", `{"name":"bob","password":"long-enough-pw","roles":["god"]}`, 400, "invalid_request", "role"},
		{"user: no role", "POST", "/api/v1/users", `{"name":"bob","password":"long-enough-pw","roles":[]}`, 400, "invalid_request", "at least one role"},
		{"grant: bad permission", "PUT", "/api/v1/wallets/default/grants/x", `{"permission":"owner"}`, 400, "invalid_request", "permission"},
		{"grant: unknown endpoint", "PUT", "/api/v1/wallets/default/grants/x", `{"permission":"read"}`, 404, "not_found", "endpoint"},
		{"enroll: bad csr", "POST", "/api/v1/endpoints", `{"name":"db1","csr":"not a csr"}`, 400, "invalid_request", "csr"},
		{"audit: bad from", "GET", "/api/v1/audit?from=-1", ``, 400, "invalid_request", "from"},
		{"audit: bad order", "GET", "/api/v1/audit?order=sideways", ``, 400, "invalid_request", "oldest or newest"},
		{"audit: before oldest first", "GET", "/api/v1/audit?before=4", ``, 400, "invalid_request", "order=newest"},
		{"audit: from newest first", "GET", "/api/v1/audit?order=newest&from=4", ``, 400, "invalid_request", "order=oldest"},
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
		b0 := svc.Status().AppliedIndex
		status, eb, raw := do(t, srv, tok, c.method, c.path, c.body)
		if a := svc.Status().AppliedIndex; a != b0 {
			t.Errorf("%s: applied index moved %d -> %d", c.name, b0, a)
		}
		if status != c.status || eb.Error.Code != c.code || !strings.Contains(eb.Error.Message, c.mention) {
			t.Errorf("%s: got %d %q %q, want %d %s mentioning %q", c.name, status, eb.Error.Code, raw[:min(len(raw), 200)], c.status, c.code, c.mention)
		}
	}
	if after := svc.Status().AppliedIndex; after != before {
		t.Fatalf("bad requests changed the state: applied index %d -> %d", before, after)
	}
	if _, err := svc.Objects.DescribeObject(service.WithIdentity(context.Background(), service.LocalRoot()), service.Ref{Wallet: "default", Name: "a"}); err == nil {
		t.Fatal("a secret was written by a bad request")
	}
	// Authentication: missing and wrong tokens.
	for _, tk := range []string{"", "cof_wrong"} {
		if status, eb, _ := do(t, srv, tk, "GET", "/api/v1/wallets/default/objects/a", ""); status != 401 || eb.Error.Code != "unauthenticated" {
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
	if status, _, raw := do(t, srv, tok, "PUT", "/api/v1/wallets/default/secrets/db/tde", `{"value":"c2VjcmV0"}`); status != 200 || !strings.Contains(raw, `"latest_version":1`) {
		t.Fatalf("put: %d %s", status, raw)
	}
	status, _, raw := do(t, srv, tok, "GET", "/api/v1/wallets/default/objects/db/tde", "")
	if status != 200 || !strings.Contains(raw, `"value":"c2VjcmV0"`) {
		t.Fatalf("get: %d %s", status, raw)
	}
	if status, eb, _ := do(t, srv, tok, "GET", "/api/v1/wallets/default/objects/db/tde?version=2", ""); status != 404 || eb.Error.Code != "not_found" {
		t.Fatalf("missing version: %d %s", status, eb.Error.Code)
	}
}

var update = flag.Bool("update", false, "rewrite openapi.json from the route table")

// TestOpenAPIMatchesRoutes: the checked-in document is exactly what the
// route table generates, and lists every route the server serves.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	doc, err := BuildOpenAPI()
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile("openapi.json", doc, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(doc, OpenAPIDocument) {
		t.Fatal("openapi.json is out of date with the route table: run go test ./internal/api/rest -run TestOpenAPIMatchesRoutes -update")
	}
	docPaths, err := openapi.Paths(OpenAPIDocument)
	if err != nil {
		t.Fatal(err)
	}
	routePaths := openapi.RoutePaths(Routes())
	if !slices.Equal(docPaths, routePaths) {
		t.Fatalf("document paths %v\nroute paths %v", docPaths, routePaths)
	}
	// And the server serves the document.
	srv, _, _ := setup(t)
	status, _, raw := do(t, srv, "", "GET", "/api/v1/openapi.json", "")
	if status != 200 || raw != string(OpenAPIDocument) {
		t.Fatalf("GET openapi.json: %d", status)
	}
}
