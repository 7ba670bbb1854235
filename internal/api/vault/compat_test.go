package vault

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/coffer-kms/coffer/internal/service"
)

// TestUIMountsListsWhatTheCallerMayRead: sys/internal/ui/mounts answers
// every valid token with the mounts whose wallet it may read (Vault's UI
// and clients list mounts with it), not only key administrators.
func TestUIMountsListsWhatTheCallerMayRead(t *testing.T) {
	f := newFixture(t)
	if _, err := f.svc.Access.CreateWallet(rootCtx(), "other", ""); err != nil {
		t.Fatal(err)
	}
	f.do(t, f.tokens["root"], "POST", "/v1/sys/mounts/hidden", `{"type":"kv","options":{"version":"2","wallet":"other"}}`)
	for who, want := range map[string][]string{
		"root":    {"kv/", "transit/", "hidden/"},
		"ep-read": {"kv/", "transit/"},
		"ep-none": {},
	} {
		r := f.do(t, f.tokens[who], "GET", "/v1/sys/internal/ui/mounts", "")
		if r.status != 200 {
			t.Fatalf("%s: status %d %s", who, r.status, r.raw)
		}
		secret, _ := r.data(t)["secret"].(map[string]any)
		if len(secret) != len(want) {
			t.Errorf("%s: mounts %v, want %v", who, secret, want)
		}
		for _, m := range want {
			if _, ok := secret[m]; !ok {
				t.Errorf("%s: mount %s missing from %v", who, m, secret)
			}
		}
		if auth, _ := r.data(t)["auth"].(map[string]any); auth["token/"] == nil {
			t.Errorf("%s: no token/ auth method in %s", who, r.raw)
		}
	}
	if r := f.do(t, "", "GET", "/v1/sys/internal/ui/mounts", ""); r.status != 403 {
		t.Errorf("without a token: status %d, want 403", r.status)
	}
}

// TestEnableMountOfAMissingWalletSaysSo: "secrets enable" naming a wallet
// that does not exist (by default the mount path) is bad input, answered
// 400 with the reason, not 404 {"errors":[]} (Vault never answers a mount
// enable 404, and an empty error list told the operator nothing).
func TestEnableMountOfAMissingWalletSaysSo(t *testing.T) {
	f := newFixture(t)
	root := f.tokens["root"]
	for _, body := range []string{`{"type":"kv","options":{"version":"2"}}`, `{"type":"transit","options":{"wallet":"nowallet"}}`} {
		r := f.do(t, root, "POST", "/v1/sys/mounts/mariadb", body)
		errs, _ := r.body["errors"].([]any)
		if r.status != 400 || len(errs) != 1 || !strings.Contains(errs[0].(string), "does not exist") {
			t.Errorf("enable %s: %d %s, want 400 naming the missing wallet", body, r.status, r.raw)
		}
	}
	if r := f.do(t, root, "GET", "/v1/sys/mounts/mariadb", ""); r.status != 404 {
		t.Errorf("a refused enable left a mount: %d %s", r.status, r.raw)
	}
	r := f.do(t, root, "POST", "/v1/sys/mounts/kv", `{"type":"kv","options":{"version":"2","wallet":"kvw"}}`)
	if errs, _ := r.body["errors"].([]any); r.status != 400 || len(errs) != 1 {
		t.Errorf("enable of a mount in use: %d %s, want 400 with a reason", r.status, r.raw)
	}
}

// TestKVListShowsOnlyFoldersWithSecrets: a folder is listed only while it
// holds something KV shows. After the metadata delete of its last secret,
// or when it holds only objects KV does not serve (a key pair), Vault
// lists no such folder; Coffer listed it, and listing it then answered 404.
func TestKVListShowsOnlyFoldersWithSecrets(t *testing.T) {
	f := newFixture(t)
	root := f.tokens["root"]
	for _, p := range []string{"app/db/creds", "app/web/tls", "app/web/z", "app.x", "app0", "top"} {
		if r := f.do(t, root, "POST", "/v1/kv/data/"+p, `{"data":{"a":"b"}}`); r.status != 200 {
			t.Fatalf("write %s: %d %s", p, r.status, r.raw)
		}
	}
	if _, err := f.svc.Objects.CreateObject(rootCtx(), service.CreateObject{Wallet: "kvw", Name: "pairs/ec", Type: service.TypeKeyPair, Algorithm: "EC", Length: 256}); err != nil {
		t.Fatal(err)
	}
	f.do(t, root, "POST", "/v1/kv/delete/app/db/creds", `{"versions":[1]}`)
	if r := f.do(t, root, "DELETE", "/v1/kv/metadata/app/db/creds", ""); r.status != 204 {
		t.Fatalf("metadata delete: %d %s", r.status, r.raw)
	}
	list := func(p string) []any {
		r := f.do(t, root, "LIST", "/v1/kv/metadata/"+p, "")
		if r.status == 404 {
			return nil
		}
		if r.status != 200 {
			t.Fatalf("list %q: %d %s", p, r.status, r.raw)
		}
		return r.data(t)["keys"].([]any)
	}
	if got := fmt.Sprint(list("")); got != "[app.x app/ app0 top]" {
		t.Errorf("list of the mount: %s, want [app.x app/ app0 top]", got)
	}
	if got := fmt.Sprint(list("app/")); got != "[web/]" {
		t.Errorf("list of app/: %s, want [web/]", got)
	}
	if got := fmt.Sprint(list("app/web/")); got != "[tls z]" {
		t.Errorf("list of app/web/: %s, want [tls z]", got)
	}
	if got := list("app/db/"); got != nil {
		t.Errorf("list of app/db/: %v, want 404", got)
	}
}

// TestKVWriteAnswersTheCustomMetadata: a KV write's (and patch's) answer
// carries the path's custom_metadata, as Vault's does, not null.
func TestKVWriteAnswersTheCustomMetadata(t *testing.T) {
	f := newFixture(t)
	root := f.tokens["root"]
	f.do(t, root, "POST", "/v1/kv/data/c", `{"data":{"a":"1"}}`)
	if r := f.do(t, root, "POST", "/v1/kv/metadata/c", `{"custom_metadata":{"owner":"dba"}}`); r.status != 204 {
		t.Fatalf("metadata write: %d %s", r.status, r.raw)
	}
	check := func(what string, r resp) {
		t.Helper()
		cm, _ := r.data(t)["custom_metadata"].(map[string]any)
		if r.status != 200 || cm["owner"] != "dba" {
			t.Errorf("%s: %d %s, want custom_metadata {owner: dba}", what, r.status, r.raw)
		}
	}
	check("write", f.do(t, root, "POST", "/v1/kv/data/c", `{"data":{"a":"2"}}`))
	req, err := http.NewRequest("PATCH", f.srv.URL+"/v1/kv/data/c", strings.NewReader(`{"data":{"b":"3"}}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Vault-Token", root)
	req.Header.Set("Content-Type", "application/merge-patch+json")
	res, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	check("patch", resp{status: res.StatusCode, body: body, raw: fmt.Sprint(body)})
	if r := f.do(t, root, "POST", "/v1/kv/data/fresh", `{"data":{"a":"1"}}`); r.status != 200 || r.data(t)["custom_metadata"] != nil {
		t.Errorf("first write of a path: %d %s, want custom_metadata null", r.status, r.raw)
	}
}

// TestHMACNeedsAnActiveKey: making an HMAC protects data, as signing and
// encrypting do, so only an active key makes one (a deactivated or
// compromised key went on issuing tags); verifying stays possible.
func TestHMACNeedsAnActiveKey(t *testing.T) {
	f := newFixture(t)
	root := f.tokens["root"]
	f.do(t, root, "POST", "/v1/transit/keys/m", `{}`)
	r := f.do(t, root, "POST", "/v1/transit/hmac/m", `{"input":"aGVsbG8="}`)
	mac, _ := r.data(t)["hmac"].(string)
	if r.status != 200 || mac == "" {
		t.Fatalf("hmac with an active key: %d %s", r.status, r.raw)
	}
	o, err := f.svc.Objects.DescribeObject(rootCtx(), service.Ref{Wallet: "tw", Name: "m"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tr := range []service.Transition{service.Deactivate, service.Revoke} {
		if _, err := f.svc.Objects.ChangeState(rootCtx(), service.Ref{ID: o.ID}, tr, "test"); err != nil {
			t.Fatal(err)
		}
		if r := f.do(t, root, "POST", "/v1/transit/hmac/m", `{"input":"aGVsbG8="}`); r.status != 400 || !strings.Contains(r.raw, "active") {
			t.Errorf("hmac after %s: %d %s, want 400 (only an active key)", tr, r.status, r.raw)
		}
		r := f.do(t, root, "POST", "/v1/transit/verify/m", `{"input":"aGVsbG8=","hmac":"`+mac+`"}`)
		if r.status != 200 || r.data(t)["valid"] != true {
			t.Errorf("verify after %s: %d %s, want valid", tr, r.status, r.raw)
		}
	}
}

// TestUnbatchedTransitRoutesNameBatchInput: hmac, sign and verify take one
// input; a batch_input is refused with a 400 naming it (as the reference
// says of refused features), not "missing input".
func TestUnbatchedTransitRoutesNameBatchInput(t *testing.T) {
	f := newFixture(t)
	root := f.tokens["root"]
	f.do(t, root, "POST", "/v1/transit/keys/m", `{}`)
	f.do(t, root, "POST", "/v1/transit/keys/s", `{"type":"ecdsa-p256"}`)
	for _, p := range []string{"/v1/transit/hmac/m", "/v1/transit/sign/s", "/v1/transit/verify/m"} {
		r := f.do(t, root, "POST", p, `{"batch_input":[{"input":"aGVsbG8=","hmac":"vault:v1:AAAA"}]}`)
		if r.status != 400 || !strings.Contains(r.raw, "batch_input") {
			t.Errorf("%s with batch_input: %d %s, want 400 naming batch_input", p, r.status, r.raw)
		}
	}
}

// TestSubkeysOfADeletedVersionAnswersItsMetadata: as a read, subkeys of a
// soft-deleted version answers 404 with the version's metadata (Vault's
// shape: subkeys null), so a client can tell "deleted" from "missing".
func TestSubkeysOfADeletedVersionAnswersItsMetadata(t *testing.T) {
	f := newFixture(t)
	root := f.tokens["root"]
	f.do(t, root, "POST", "/v1/kv/data/d", `{"data":{"a":"1"}}`)
	f.do(t, root, "DELETE", "/v1/kv/data/d", "")
	r := f.do(t, root, "GET", "/v1/kv/subkeys/d", "")
	md, _ := r.body["data"].(map[string]any)
	meta, _ := md["metadata"].(map[string]any)
	deleted, _ := meta["deletion_time"].(string)
	if r.status != 404 || md == nil || md["subkeys"] != nil || deleted == "" || meta["version"] != 1.0 {
		t.Errorf("subkeys of a deleted version: %d %s, want 404 with subkeys null and the version's metadata", r.status, r.raw)
	}
	if r := f.do(t, root, "GET", "/v1/kv/subkeys/none", ""); r.status != 404 || r.raw != "{\"errors\":[]}\n" {
		t.Errorf("subkeys of a missing path: %d %q, want 404 {\"errors\":[]}", r.status, r.raw)
	}
}

// TestDeleteVersionAfterTakesVaultsZeroForms: delete_version_after is a
// Vault duration: a number of seconds (Terraform sends 0) or a duration
// string ("0s", "0h", "0m0s"). Every zero is accepted; anything else is
// refused with Coffer's reason.
func TestDeleteVersionAfterTakesVaultsZeroForms(t *testing.T) {
	f := newFixture(t)
	root := f.tokens["root"]
	f.do(t, root, "POST", "/v1/kv/data/z", `{"data":{"a":"1"}}`)
	for _, v := range []string{`0`, `"0"`, `"0s"`, `"0h"`, `"0m0s"`, `""`, `null`} {
		if r := f.do(t, root, "POST", "/v1/kv/metadata/z", `{"delete_version_after":`+v+`}`); r.status != 204 {
			t.Errorf("delete_version_after %s: %d %s, want 204", v, r.status, r.raw)
		}
	}
	for _, v := range []string{`30`, `"30"`, `"1h"`, `"soon"`, `true`} {
		r := f.do(t, root, "POST", "/v1/kv/metadata/z", `{"delete_version_after":`+v+`}`)
		if r.status != 400 || !strings.Contains(r.raw, "delete_version_after") {
			t.Errorf("delete_version_after %s: %d %s, want 400 naming the field", v, r.status, r.raw)
		}
	}
}

// TestResponseWrappingAndNamespacesAreRefused: a client that asks for a
// wrapped answer (X-Vault-Wrap-TTL) expects a one-time wrapping token in
// place of the secret, and one that names a namespace expects its own
// mounts; Coffer has neither, so both are refused with a 400 saying so,
// instead of answering the secret itself in the clear to a caller that
// may print or pass on what it gets.
func TestResponseWrappingAndNamespacesAreRefused(t *testing.T) {
	f := newFixture(t)
	root := f.tokens["root"]
	f.do(t, root, "POST", "/v1/kv/data/w", `{"data":{"password":"hunter2"}}`)
	send := func(h, v string) (int, string) {
		req, err := http.NewRequest("GET", f.srv.URL+"/v1/kv/data/w", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Vault-Token", root)
		req.Header.Set(h, v)
		res, err := f.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var b strings.Builder
		if _, err := io.Copy(&b, res.Body); err != nil {
			t.Fatal(err)
		}
		return res.StatusCode, b.String()
	}
	for _, h := range [][2]string{{"X-Vault-Wrap-TTL", "5m"}, {"X-Vault-Namespace", "team-a"}} {
		st, body := send(h[0], h[1])
		if st != 400 || strings.Contains(body, "hunter2") || !strings.Contains(body, h[0]) {
			t.Errorf("%s: %d %s, want 400 naming the header, without the secret", h[0], st, body)
		}
	}
	for _, ns := range []string{"", "root", "root/"} {
		if st, body := send("X-Vault-Namespace", ns); st != 200 {
			t.Errorf("X-Vault-Namespace %q: %d %s, want 200 (the root namespace)", ns, st, body)
		}
	}
}

// TestZeroWrapTTLIsNoWrapping: Vault wraps an answer only for a wrap TTL
// other than zero, so X-Vault-Wrap-TTL: 0 (or "0s") asks for the plain
// answer, which Coffer gives; a TTL that would wrap is still refused.
func TestZeroWrapTTLIsNoWrapping(t *testing.T) {
	f := newFixture(t)
	root := f.tokens["root"]
	f.do(t, root, "POST", "/v1/kv/data/z", `{"data":{"a":"b"}}`)
	for ttl, want := range map[string]int{"0": 200, "0s": 200, " 0m ": 200, "1": 400, "30s": 400, "-1": 400, "soon": 400} {
		req, err := http.NewRequest("GET", f.srv.URL+"/v1/kv/data/z", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Vault-Token", root)
		req.Header.Set("X-Vault-Wrap-TTL", ttl)
		res, err := f.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if res.StatusCode != want {
			t.Errorf("X-Vault-Wrap-TTL %q: %d %s, want %d", ttl, res.StatusCode, b, want)
		}
	}
}
