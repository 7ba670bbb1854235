package vault

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/coffer-kms/coffer/internal/service"
	"github.com/coffer-kms/coffer/internal/service/servicetest"
)

// fixture is a service behind the Vault handler on an httptest TLS server,
// with wallets "kvw" (mounted as KV v2 at "kv") and "tw" (Transit at
// "transit"), and endpoints holding each permission on both.
type fixture struct {
	svc    *service.Service
	srv    *httptest.Server
	tokens map[string]string // root, ep-none, ep-read, ep-rm, ep-manage
}

func newService(t testing.TB, opts ...servicetest.Option) (*service.Service, string) {
	t.Helper()
	svc := servicetest.New(t, opts...)
	tok, err := svc.Init(context.Background(), service.Identity{Local: true}, []byte("vault-test-passphrase"))
	if err != nil {
		t.Fatal(err)
	}
	return svc, tok
}

func rootCtx() context.Context {
	return service.WithIdentity(context.Background(), service.LocalRoot())
}

func newFixture(t testing.TB, opts ...servicetest.Option) *fixture {
	t.Helper()
	svc, root := newService(t, opts...)
	srv := httptest.NewTLSServer(Handler(svc, Options{}))
	t.Cleanup(srv.Close)
	f := &fixture{svc: svc, srv: srv, tokens: map[string]string{"root": root}}
	ctx := rootCtx()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, w := range []string{"kvw", "tw"} {
		_, err := svc.Access.CreateWallet(ctx, w, "")
		must(err)
	}
	_, err := svc.Objects.CreateMount(ctx, service.Mount{Path: "kv", Type: service.MountKV, Wallet: "kvw"})
	must(err)
	_, err = svc.Objects.CreateMount(ctx, service.Mount{Path: "transit", Type: service.MountTransit, Wallet: "tw"})
	must(err)
	for name, perm := range map[string]service.Permission{"ep-none": "", "ep-read": service.PermRead,
		"ep-rm": service.PermReadModify, "ep-manage": service.PermManage} {
		e, err := svc.Access.EnrollEndpoint(ctx, name, "", nil)
		must(err)
		f.tokens[name] = e.Token
		if perm != "" {
			for _, w := range []string{"kvw", "tw"} {
				_, err = svc.Access.SetGrant(ctx, w, name, perm)
				must(err)
			}
		}
	}
	return f
}

// resp is a decoded response.
type resp struct {
	status int
	body   map[string]any
	raw    string
}

// do sends a request with X-Vault-Token tok (none when empty).
func (f *fixture) do(t testing.TB, tok, method, path, body string) resp {
	t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("X-Vault-Token", tok)
	}
	res, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	out := resp{status: res.StatusCode, raw: string(b)}
	if len(b) > 0 {
		if err := json.Unmarshal(b, &out.body); err != nil {
			t.Fatalf("%s %s: response is not a JSON object: %q", method, path, b)
		}
	}
	return out
}

// data returns body.data as a map.
func (r resp) data(t testing.TB) map[string]any {
	t.Helper()
	d, ok := r.body["data"].(map[string]any)
	if !ok {
		t.Fatalf("no data object in %s", r.raw)
	}
	return d
}

func newUninitialised(t testing.TB) *service.Service {
	t.Helper()
	return servicetest.New(t)
}

func newRecorder() *httptest.ResponseRecorder { return httptest.NewRecorder() }

func mustRequest(t testing.TB, method, url string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}
