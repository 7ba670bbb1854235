package vault

import (
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/coffer-kms/coffer/internal/service"
)

func TestHealthAndSealStatus(t *testing.T) {
	f := newFixture(t)
	r := f.do(t, "", "GET", "/v1/sys/health", "")
	if r.status != 200 || r.body["initialized"] != true || r.body["sealed"] != false || r.body["standby"] != false {
		t.Fatalf("health open: %d %s", r.status, r.raw)
	}
	if r := f.do(t, "", "GET", "/v1/sys/health?activecode=299", ""); r.status != 299 {
		t.Fatalf("activecode: %d", r.status)
	}
	if r := f.do(t, "", "GET", "/v1/sys/seal-status", ""); r.status != 200 || r.body["sealed"] != false || r.body["t"] != 1.0 {
		t.Fatalf("seal-status: %d %s", r.status, r.raw)
	}
	if err := f.svc.Seal(rootCtx()); err != nil {
		t.Fatal(err)
	}
	if r := f.do(t, "", "GET", "/v1/sys/health", ""); r.status != 503 || r.body["sealed"] != true {
		t.Fatalf("health sealed: %d %s", r.status, r.raw)
	}
	if r := f.do(t, "", "GET", "/v1/sys/health?sealedcode=200", ""); r.status != 200 {
		t.Fatalf("sealedcode: %d", r.status)
	}
	// KV reads while sealed: 503, Vault's sealed code.
	if r := f.do(t, f.tokens["root"], "GET", "/v1/kv/data/x", ""); r.status != 503 {
		t.Fatalf("read sealed: %d %s", r.status, r.raw)
	}

	svc := newUninitialised(t)
	srv := Handler(svc, Options{})
	rec := newRecorder()
	srv.ServeHTTP(rec, mustRequest(t, "GET", "/v1/sys/health"))
	if rec.Code != 501 || !strings.Contains(rec.Body.String(), `"initialized":false`) {
		t.Fatalf("health uninitialised: %d %s", rec.Code, rec.Body)
	}
}

func TestTuneAndLookupSelf(t *testing.T) {
	f := newFixture(t)
	r := f.do(t, f.tokens["ep-read"], "GET", "/v1/sys/mounts/kv/tune", "")
	if r.status != 200 {
		t.Fatalf("tune: %d %s", r.status, r.raw)
	}
	opts, _ := r.body["options"].(map[string]any)
	if opts["version"] != "2" {
		t.Fatalf("tune must have a top-level options.version \"2\" (MariaDB checks it): %s", r.raw)
	}
	if r := f.do(t, f.tokens["ep-read"], "GET", "/v1/sys/mounts/nope/tune", ""); r.status != 403 {
		t.Fatalf("tune of an unknown mount for an endpoint: %d %s", r.status, r.raw)
	}
	if r := f.do(t, f.tokens["root"], "GET", "/v1/sys/mounts/nope/tune", ""); r.status != 404 {
		t.Fatalf("tune of an unknown mount for root: %d %s", r.status, r.raw)
	}
	r = f.do(t, f.tokens["ep-rm"], "GET", "/v1/auth/token/lookup-self", "")
	if r.status != 200 || r.data(t)["display_name"] != "endpoint-ep-rm" {
		t.Fatalf("lookup-self: %d %s", r.status, r.raw)
	}
	if strings.Contains(r.raw, f.tokens["ep-rm"]) {
		t.Fatal("lookup-self echoes the token")
	}
	// Authorization: Bearer works as well as X-Vault-Token.
	req := mustRequest(t, "GET", f.srv.URL+"/v1/auth/token/lookup-self")
	req.Header.Set("Authorization", "Bearer "+f.tokens["root"])
	res, err := f.srv.Client().Do(req)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("bearer: %v %v", err, res.StatusCode)
	}
	res.Body.Close()
	// No token, bad token: 403 permission denied, as Vault.
	for _, tok := range []string{"", "cof_not-a-token"} {
		r := f.do(t, tok, "GET", "/v1/kv/data/x", "")
		errs, _ := r.body["errors"].([]any)
		if r.status != 403 || len(errs) != 1 || !strings.HasPrefix(errs[0].(string), "permission denied") {
			t.Fatalf("token %q: %d %s", tok, r.status, r.raw)
		}
		if strings.Count(errs[0].(string), "permission denied") != 1 {
			t.Fatalf("token %q: the message repeats its prefix: %q", tok, errs[0])
		}
		if tok != "" && strings.Contains(r.raw, tok) {
			t.Fatal("error echoes the token")
		}
	}
}

func TestKVReadWriteVersions(t *testing.T) {
	f := newFixture(t)
	root := f.tokens["root"]
	// MariaDB's shape: the key as hex under "data".
	k1 := strings.Repeat("ab", 32)
	r := f.do(t, root, "POST", "/v1/kv/data/1", `{"data":{"data":"`+k1+`"}}`)
	if r.status != 200 || r.data(t)["version"] != 1.0 || r.data(t)["destroyed"] != false {
		t.Fatalf("write: %d %s", r.status, r.raw)
	}
	for _, key := range []string{"request_id", "lease_id", "renewable", "lease_duration", "data", "wrap_info", "warnings", "auth"} {
		if _, ok := r.body[key]; !ok {
			t.Fatalf("envelope lacks %q: %s", key, r.raw)
		}
	}
	k2 := strings.Repeat("cd", 32)
	if r := f.do(t, root, "PUT", "/v1/kv/data/1", `{"data":{"data":"`+k2+`"},"options":{"cas":1}}`); r.status != 200 || r.data(t)["version"] != 2.0 {
		t.Fatalf("write v2 with cas: %d %s", r.status, r.raw)
	}
	// A stale cas changes nothing.
	if r := f.do(t, root, "PUT", "/v1/kv/data/1", `{"data":{"data":"x"},"options":{"cas":1}}`); r.status != 400 || !strings.Contains(r.raw, "check-and-set") {
		t.Fatalf("stale cas: %d %s", r.status, r.raw)
	}
	r = f.do(t, root, "GET", "/v1/kv/data/1", "")
	d := r.data(t)
	md := d["metadata"].(map[string]any)
	if r.status != 200 || d["data"].(map[string]any)["data"] != k2 || md["version"] != 2.0 {
		t.Fatalf("read latest: %d %s", r.status, r.raw)
	}
	r = f.do(t, root, "GET", "/v1/kv/data/1?version=1", "")
	if r.status != 200 || r.data(t)["data"].(map[string]any)["data"] != k1 || r.data(t)["metadata"].(map[string]any)["version"] != 1.0 {
		t.Fatalf("read v1: %d %s", r.status, r.raw)
	}
	// Missing key and missing version: 404 {"errors":[]}.
	for _, p := range []string{"/v1/kv/data/2", "/v1/kv/data/1?version=9"} {
		if r := f.do(t, root, "GET", p, ""); r.status != 404 || strings.TrimSpace(r.raw) != `{"errors":[]}` {
			t.Fatalf("%s: %d %q", p, r.status, r.raw)
		}
	}
	// cas 0 on an existing key is refused; on a new key it creates.
	if r := f.do(t, root, "POST", "/v1/kv/data/1", `{"data":{"a":"b"},"options":{"cas":0}}`); r.status != 400 {
		t.Fatalf("cas 0 existing: %d %s", r.status, r.raw)
	}
	if r := f.do(t, root, "POST", "/v1/kv/data/app/db", `{"data":{"user":"u","password":"p"},"options":{"cas":"0"}}`); r.status != 200 {
		t.Fatalf("cas 0 new: %d %s", r.status, r.raw)
	}
	// Bad bodies: clear 400, no new version.
	for _, body := range []string{`{}`, `{"data":"string"}`, `{"data":[1]}`, `[`, `{"data":{}} x`, `{"data":{"a":1},"options":{"cas":-1}}`} {
		if r := f.do(t, root, "POST", "/v1/kv/data/1", body); r.status != 400 || len(r.body["errors"].([]any)) != 1 {
			t.Fatalf("body %q: %d %s", body, r.status, r.raw)
		}
	}
	if r := f.do(t, root, "GET", "/v1/kv/metadata/1", ""); r.data(t)["current_version"] != 2.0 {
		t.Fatalf("bad bodies wrote a version: %s", r.raw)
	}
	// Unknown fields are ignored with a warning, as Vault does.
	r = f.do(t, root, "POST", "/v1/kv/data/w", `{"data":{"a":"b"},"bogus":1}`)
	if r.status != 200 || !strings.Contains(r.raw, "unrecognized parameters") {
		t.Fatalf("unknown field: %d %s", r.status, r.raw)
	}
	// LIST (method and ?list=true).
	for _, req := range [][2]string{{"LIST", "/v1/kv/metadata/"}, {"GET", "/v1/kv/metadata?list=true"}} {
		r := f.do(t, root, req[0], req[1], "")
		keys, _ := r.data(t)["keys"].([]any)
		if r.status != 200 || len(keys) != 3 || keys[0] != "1" || keys[1] != "app/" || keys[2] != "w" {
			t.Fatalf("%s %s: %d %s", req[0], req[1], r.status, r.raw)
		}
	}
	if r := f.do(t, root, "LIST", "/v1/kv/metadata/app", ""); r.status != 200 || r.data(t)["keys"].([]any)[0] != "db" {
		t.Fatalf("list app: %d %s", r.status, r.raw)
	}
	if r := f.do(t, root, "LIST", "/v1/kv/metadata/none/", ""); r.status != 404 {
		t.Fatalf("list empty: %d %s", r.status, r.raw)
	}
}

func TestKVDeleteUndeleteDestroy(t *testing.T) {
	f := newFixture(t)
	root := f.tokens["root"]
	for i := 0; i < 3; i++ {
		if r := f.do(t, root, "POST", "/v1/kv/data/s", `{"data":{"n":"`+string(rune('a'+i))+`"}}`); r.status != 200 {
			t.Fatal(r.raw)
		}
	}
	// DELETE data: soft-deletes the latest (3); reading it is a 404 with metadata.
	if r := f.do(t, root, "DELETE", "/v1/kv/data/s", ""); r.status != 204 {
		t.Fatalf("delete latest: %d %s", r.status, r.raw)
	}
	r := f.do(t, root, "GET", "/v1/kv/data/s", "")
	if r.status != 404 || r.data(t)["data"] != nil || r.data(t)["metadata"].(map[string]any)["deletion_time"] == "" {
		t.Fatalf("read deleted: %d %s", r.status, r.raw)
	}
	if r := f.do(t, root, "GET", "/v1/kv/data/s?version=2", ""); r.status != 200 || r.data(t)["data"].(map[string]any)["n"] != "b" {
		t.Fatalf("older version after delete: %d %s", r.status, r.raw)
	}
	// Destroy needs the soft delete first (two steps): version 2 is refused.
	if r := f.do(t, root, "PUT", "/v1/kv/destroy/s", `{"versions":[2]}`); r.status != 400 || !strings.Contains(r.raw, "delete it first") {
		t.Fatalf("destroy undeleted: %d %s", r.status, r.raw)
	}
	if r := f.do(t, root, "POST", "/v1/kv/undelete/s", `{"versions":[3]}`); r.status != 204 {
		t.Fatalf("undelete: %d %s", r.status, r.raw)
	}
	if r := f.do(t, root, "GET", "/v1/kv/data/s", ""); r.status != 200 || r.data(t)["data"].(map[string]any)["n"] != "c" {
		t.Fatalf("read undeleted: %d %s", r.status, r.raw)
	}
	if r := f.do(t, root, "POST", "/v1/kv/delete/s", `{"versions":["1"]}`); r.status != 204 {
		t.Fatalf("delete v1: %d %s", r.status, r.raw)
	}
	if r := f.do(t, root, "PUT", "/v1/kv/destroy/s", `{"versions":[1]}`); r.status != 204 {
		t.Fatalf("destroy v1: %d %s", r.status, r.raw)
	}
	r = f.do(t, root, "GET", "/v1/kv/data/s?version=1", "")
	if r.status != 404 || r.data(t)["metadata"].(map[string]any)["destroyed"] != true {
		t.Fatalf("read destroyed: %d %s", r.status, r.raw)
	}
	// Undelete cannot bring a destroyed version back.
	f.do(t, root, "POST", "/v1/kv/undelete/s", `{"versions":[1]}`)
	if r := f.do(t, root, "GET", "/v1/kv/data/s?version=1", ""); r.status != 404 {
		t.Fatalf("destroyed version came back: %d %s", r.status, r.raw)
	}
	r = f.do(t, root, "GET", "/v1/kv/metadata/s", "")
	vs := r.data(t)["versions"].(map[string]any)
	if r.data(t)["current_version"] != 3.0 || r.data(t)["oldest_version"] != 1.0 || vs["1"].(map[string]any)["destroyed"] != true || vs["2"].(map[string]any)["destroyed"] != false {
		t.Fatalf("metadata: %s", r.raw)
	}
	// Missing versions are skipped and the rest acted on, as Vault does (a
	// version above the current one included): 204.
	if r := f.do(t, root, "POST", "/v1/kv/delete/s", `{"versions":[2,99]}`); r.status != 204 {
		t.Fatalf("delete with a missing version: %d %s", r.status, r.raw)
	}
	if r := f.do(t, root, "GET", "/v1/kv/data/s?version=2", ""); r.status != 404 {
		t.Fatalf("version 2 not deleted along a missing version: %d %s", r.status, r.raw)
	}
	if r := f.do(t, root, "POST", "/v1/kv/undelete/s", `{"versions":[99,2]}`); r.status != 204 {
		t.Fatalf("undelete with a missing version: %d %s", r.status, r.raw)
	}
	if r := f.do(t, root, "GET", "/v1/kv/data/s?version=2", ""); r.status != 200 {
		t.Fatalf("version 2 not undeleted along a missing version: %d %s", r.status, r.raw)
	}
	if r := f.do(t, root, "PUT", "/v1/kv/destroy/s", `{"versions":[98,99]}`); r.status != 204 {
		t.Fatalf("destroy of missing versions only: %d %s", r.status, r.raw)
	}
	// Nothing is half-applied: a destroy refused for a live version (2)
	// destroys nothing else it names (3, soft-deleted first).
	f.do(t, root, "POST", "/v1/kv/delete/s", `{"versions":[3]}`)
	if r := f.do(t, root, "PUT", "/v1/kv/destroy/s", `{"versions":[3,2,99]}`); r.status != 400 {
		t.Fatalf("destroy of a live version with others: %d %s", r.status, r.raw)
	}
	if r := f.do(t, root, "GET", "/v1/kv/data/s?version=3", ""); r.data(t)["metadata"].(map[string]any)["destroyed"] != false {
		t.Fatalf("a refused destroy destroyed version 3: %d %s", r.status, r.raw)
	}
	f.do(t, root, "POST", "/v1/kv/undelete/s", `{"versions":[3]}`)
	// A path that does not exist: every delete answers 204, as Vault does.
	for _, c := range []struct{ method, path, body string }{
		{"DELETE", "/v1/kv/data/nothing", ""},
		{"POST", "/v1/kv/delete/nothing", `{"versions":[1]}`},
		{"POST", "/v1/kv/undelete/nothing", `{"versions":[1]}`},
		{"PUT", "/v1/kv/destroy/nothing", `{"versions":[1]}`},
		{"DELETE", "/v1/kv/metadata/nothing", ""},
		{"DELETE", "/v1/sys/mounts/notmounted", ""},
	} {
		if r := f.do(t, root, c.method, c.path, c.body); r.status != 204 {
			t.Errorf("%s %s of nothing: %d %s, want 204", c.method, c.path, r.status, r.raw)
		}
	}
	if r := f.do(t, root, "GET", "/v1/kv/metadata/nothing", ""); r.status != 404 {
		t.Fatalf("a delete of nothing made something: %d %s", r.status, r.raw)
	}
	// Without the permission it is still 403, existing or not.
	for _, c := range []struct{ token, method, path, body string }{
		{"ep-read", "DELETE", "/v1/kv/data/nothing", ""},
		{"ep-read", "POST", "/v1/kv/delete/nothing", `{"versions":[1]}`},
		{"ep-rm", "PUT", "/v1/kv/destroy/nothing", `{"versions":[1]}`},
		{"ep-rm", "DELETE", "/v1/kv/metadata/nothing", ""},
		{"ep-manage", "DELETE", "/v1/sys/mounts/notmounted", ""},
		{"ep-read", "DELETE", "/v1/kv/data/s", ""},
	} {
		if r := f.do(t, f.tokens[c.token], c.method, c.path, c.body); r.status != 403 {
			t.Errorf("%s %s %s: %d %s, want 403", c.token, c.method, c.path, r.status, r.raw)
		}
	}
	if r := f.do(t, root, "POST", "/v1/kv/delete/s", `{}`); r.status != 400 {
		t.Fatalf("delete without versions: %d %s", r.status, r.raw)
	}
	// Metadata delete: refused while a version is live, then hides the path.
	if r := f.do(t, root, "DELETE", "/v1/kv/metadata/s", ""); r.status != 400 {
		t.Fatalf("metadata delete with live versions: %d %s", r.status, r.raw)
	}
	f.do(t, root, "POST", "/v1/kv/delete/s", `{"versions":[2,3]}`)
	if r := f.do(t, root, "DELETE", "/v1/kv/metadata/s", ""); r.status != 204 {
		t.Fatalf("metadata delete: %d %s", r.status, r.raw)
	}
	if r := f.do(t, root, "GET", "/v1/kv/metadata/s", ""); r.status != 404 {
		t.Fatalf("metadata after delete: %d %s", r.status, r.raw)
	}
	// Deleting again (a clean-up run twice) answers 204 and changes nothing.
	if r := f.do(t, root, "DELETE", "/v1/kv/metadata/s", ""); r.status != 204 {
		t.Fatalf("metadata delete again: %d %s", r.status, r.raw)
	}
	if r := f.do(t, root, "DELETE", "/v1/kv/data/s", ""); r.status != 204 {
		t.Fatalf("data delete after metadata delete: %d %s", r.status, r.raw)
	}
	// A new write brings the path back with the next version number.
	if r := f.do(t, root, "POST", "/v1/kv/data/s", `{"data":{"n":"d"},"options":{"cas":0}}`); r.status != 200 || r.data(t)["version"] != 4.0 {
		t.Fatalf("write after metadata delete: %d %s", r.status, r.raw)
	}
}

func TestKVMetadataSettings(t *testing.T) {
	f := newFixture(t)
	root := f.tokens["root"]
	f.do(t, root, "POST", "/v1/kv/data/m", `{"data":{"a":"1"}}`)
	if r := f.do(t, root, "POST", "/v1/kv/metadata/m", `{"cas_required":true,"custom_metadata":{"owner":"dba"}}`); r.status != 204 {
		t.Fatalf("metadata write: %d %s", r.status, r.raw)
	}
	if r := f.do(t, root, "POST", "/v1/kv/data/m", `{"data":{"a":"2"}}`); r.status != 400 || !strings.Contains(r.raw, "check-and-set parameter required") {
		t.Fatalf("write without cas when required: %d %s", r.status, r.raw)
	}
	r := f.do(t, root, "GET", "/v1/kv/data/m", "")
	if r.data(t)["metadata"].(map[string]any)["custom_metadata"].(map[string]any)["owner"] != "dba" {
		t.Fatalf("custom metadata: %s", r.raw)
	}
	if r := f.do(t, root, "POST", "/v1/kv/metadata/m", `{"max_versions":10}`); r.status != 400 || !strings.Contains(r.raw, "keeps every version") {
		t.Fatalf("max_versions: %d %s", r.status, r.raw)
	}
	// A partial write keeps the other fields.
	f.do(t, root, "POST", "/v1/kv/metadata/m", `{"custom_metadata":{"owner":"ops"}}`)
	r = f.do(t, root, "GET", "/v1/kv/metadata/m", "")
	if r.data(t)["cas_required"] != true || r.data(t)["max_versions"] != 0.0 || r.data(t)["custom_metadata"].(map[string]any)["owner"] != "ops" {
		t.Fatalf("metadata: %s", r.raw)
	}
	if r := f.do(t, root, "POST", "/v1/kv/metadata/none", `{"cas_required":true}`); r.status != 404 {
		t.Fatalf("metadata of a missing path: %d %s", r.status, r.raw)
	}
}

// A symmetric key created and rotated in Coffer reads through KV as
// {"data":"<hex>"}, versions 1:1: how MariaDB uses keys Coffer generates.
func TestKVServesSymmetricKeysAsHex(t *testing.T) {
	f := newFixture(t)
	ctx := rootCtx()
	o, err := f.svc.Objects.CreateObject(ctx, service.CreateObject{Wallet: "kvw", Name: "7", Type: service.TypeSymmetricKey})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Objects.RotateObject(ctx, service.Ref{ID: o.ID}, nil); err != nil {
		t.Fatal(err)
	}
	for v := uint64(1); v <= 2; v++ {
		_, mat, err := f.svc.Objects.GetObject(ctx, service.Ref{ID: o.ID}, v)
		if err != nil {
			t.Fatal(err)
		}
		r := f.do(t, f.tokens["ep-read"], "GET", "/v1/kv/data/7?version="+string(rune('0'+v)), "")
		if r.status != 200 || r.data(t)["data"].(map[string]any)["data"] != hex.EncodeToString(mat.Value) || r.data(t)["metadata"].(map[string]any)["version"] != float64(v) {
			t.Fatalf("version %d: %d %s", v, r.status, r.raw)
		}
	}
	if r := f.do(t, f.tokens["root"], "POST", "/v1/kv/data/7", `{"data":{"data":"00"}}`); r.status != 400 {
		t.Fatalf("KV write over a key: %d %s", r.status, r.raw)
	}
}

func TestTransitRoundTrip(t *testing.T) {
	f := newFixture(t)
	root := f.tokens["root"]
	r := f.do(t, root, "POST", "/v1/transit/keys/app", `{"type":"aes256-gcm96"}`)
	if r.status != 200 || r.data(t)["type"] != "aes256-gcm96" || r.data(t)["latest_version"] != 1.0 {
		t.Fatalf("create: %d %s", r.status, r.raw)
	}
	pt := base64.StdEncoding.EncodeToString([]byte("card 4111"))
	aad := base64.StdEncoding.EncodeToString([]byte("row 7"))
	r = f.do(t, f.tokens["ep-read"], "POST", "/v1/transit/encrypt/app", `{"plaintext":"`+pt+`","associated_data":"`+aad+`"}`)
	ct1, _ := r.data(t)["ciphertext"].(string)
	if r.status != 200 || !strings.HasPrefix(ct1, "vault:v1:") || r.data(t)["key_version"] != 1.0 {
		t.Fatalf("encrypt: %d %s", r.status, r.raw)
	}
	if strings.Contains(r.raw, "card 4111") {
		t.Fatal("plaintext in the ciphertext response")
	}
	r = f.do(t, f.tokens["ep-read"], "POST", "/v1/transit/decrypt/app", `{"ciphertext":"`+ct1+`","associated_data":"`+aad+`"}`)
	if r.status != 200 || r.data(t)["plaintext"] != pt {
		t.Fatalf("decrypt: %d %s", r.status, r.raw)
	}
	// Wrong associated data and a flipped byte fail to authenticate.
	if r := f.do(t, root, "POST", "/v1/transit/decrypt/app", `{"ciphertext":"`+ct1+`"}`); r.status != 400 || !strings.Contains(r.raw, "authentication failed") {
		t.Fatalf("decrypt without aad: %d %s", r.status, r.raw)
	}
	raw, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(ct1, "vault:v1:"))
	raw[len(raw)-1] ^= 1
	bad := "vault:v1:" + base64.StdEncoding.EncodeToString(raw)
	if r := f.do(t, root, "POST", "/v1/transit/decrypt/app", `{"ciphertext":"`+bad+`","associated_data":"`+aad+`"}`); r.status != 400 {
		t.Fatalf("decrypt damaged: %d %s", r.status, r.raw)
	}
	// Rotate; old ciphertexts still decrypt; rewrap moves them to v2.
	if r := f.do(t, root, "POST", "/v1/transit/keys/app/rotate", ""); r.status != 200 || r.data(t)["latest_version"] != 2.0 {
		t.Fatalf("rotate: %d %s", r.status, r.raw)
	}
	r = f.do(t, root, "POST", "/v1/transit/rewrap/app", `{"ciphertext":"`+ct1+`","associated_data":"`+aad+`"}`)
	ct2, _ := r.data(t)["ciphertext"].(string)
	if r.status != 200 || !strings.HasPrefix(ct2, "vault:v2:") {
		t.Fatalf("rewrap: %d %s", r.status, r.raw)
	}
	for _, ct := range []string{ct1, ct2} {
		if r := f.do(t, root, "POST", "/v1/transit/decrypt/app", `{"ciphertext":"`+ct+`","associated_data":"`+aad+`"}`); r.data(t)["plaintext"] != pt {
			t.Fatalf("decrypt %s: %s", ct[:9], r.raw)
		}
	}
	r = f.do(t, root, "GET", "/v1/transit/keys/app", "")
	if keys := r.data(t)["keys"].(map[string]any); len(keys) != 2 || r.data(t)["min_decryption_version"] != 1.0 {
		t.Fatalf("read key: %s", r.raw)
	}
	if strings.Contains(strings.ToLower(r.raw), "material") || strings.Contains(r.raw, "value") {
		t.Fatalf("key read shows material: %s", r.raw)
	}
	// Batch: one bad item fails with its own error; the others succeed; status 400.
	r = f.do(t, root, "POST", "/v1/transit/encrypt/app", `{"batch_input":[{"plaintext":"`+pt+`","reference":"a"},{"plaintext":"%%%","reference":"b"},{"plaintext":"","reference":"c"}]}`)
	res, _ := r.data(t)["batch_results"].([]any)
	if r.status != 400 || len(res) != 3 || res[0].(map[string]any)["reference"] != "a" || res[1].(map[string]any)["error"] == nil || res[2].(map[string]any)["ciphertext"] == nil {
		t.Fatalf("batch encrypt: %d %s", r.status, r.raw)
	}
	r = f.do(t, root, "POST", "/v1/transit/encrypt/app", `{"partial_failure_response_code":207,"batch_input":[{"plaintext":"`+pt+`"},{"plaintext":"%%%"}]}`)
	if r.status != 207 {
		t.Fatalf("partial failure code: %d %s", r.status, r.raw)
	}
	good := res[0].(map[string]any)["ciphertext"].(string)
	r = f.do(t, root, "POST", "/v1/transit/decrypt/app", `{"batch_input":[{"ciphertext":"`+good+`"},{"ciphertext":"`+good+`"}]}`)
	res, _ = r.data(t)["batch_results"].([]any)
	if r.status != 200 || len(res) != 2 || res[1].(map[string]any)["plaintext"] != pt {
		t.Fatalf("batch decrypt: %d %s", r.status, r.raw)
	}
	// Data keys.
	r = f.do(t, root, "POST", "/v1/transit/datakey/plaintext/app", `{"bits":512}`)
	dk, _ := base64.StdEncoding.DecodeString(r.data(t)["plaintext"].(string))
	if r.status != 200 || len(dk) != 64 {
		t.Fatalf("datakey plaintext: %d %s", r.status, r.raw)
	}
	r2 := f.do(t, root, "POST", "/v1/transit/decrypt/app", `{"ciphertext":"`+r.data(t)["ciphertext"].(string)+`"}`)
	if r2.data(t)["plaintext"] != r.data(t)["plaintext"] {
		t.Fatalf("datakey does not decrypt to its plaintext")
	}
	r = f.do(t, root, "POST", "/v1/transit/datakey/wrapped/app", `{}`)
	if _, has := r.data(t)["plaintext"]; r.status != 200 || has {
		t.Fatalf("datakey wrapped: %d %s", r.status, r.raw)
	}
	if r := f.do(t, root, "POST", "/v1/transit/datakey/plaintext/app", `{"bits":100}`); r.status != 400 {
		t.Fatalf("bits 100: %d", r.status)
	}
	// Upsert: encrypt with a missing key creates it.
	if r := f.do(t, f.tokens["ep-rm"], "POST", "/v1/transit/encrypt/new", `{"plaintext":"`+pt+`"}`); r.status != 200 {
		t.Fatalf("upsert: %d %s", r.status, r.raw)
	}
	if r := f.do(t, root, "LIST", "/v1/transit/keys", ""); r.status != 200 || len(r.data(t)["keys"].([]any)) != 2 {
		t.Fatalf("list keys: %d %s", r.status, r.raw)
	}
	// Unsupported features are refused clearly.
	for _, body := range []string{`{"derived":true}`, `{"exportable":true}`, `{"type":"rsa-2048"}`} {
		if r := f.do(t, root, "POST", "/v1/transit/keys/other", body); r.status != 400 {
			t.Fatalf("create %s: %d %s", body, r.status, r.raw)
		}
	}
	if r := f.do(t, root, "POST", "/v1/transit/encrypt/app", `{"plaintext":"`+pt+`","context":"Y3R4"}`); r.status != 400 {
		t.Fatalf("context: %d %s", r.status, r.raw)
	}
}

func TestTransitKeyStateRules(t *testing.T) {
	f := newFixture(t)
	root := f.tokens["root"]
	f.do(t, root, "POST", "/v1/transit/keys/k", `{}`)
	pt := base64.StdEncoding.EncodeToString([]byte("x"))
	ct := f.do(t, root, "POST", "/v1/transit/encrypt/k", `{"plaintext":"`+pt+`"}`).data(t)["ciphertext"].(string)
	o, err := f.svc.Objects.DescribeObject(rootCtx(), service.Ref{Wallet: "tw", Name: "k"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Objects.ChangeState(rootCtx(), service.Ref{ID: o.ID}, service.Deactivate, "retired"); err != nil {
		t.Fatal(err)
	}
	// A deactivated key decrypts but no longer encrypts.
	if r := f.do(t, root, "POST", "/v1/transit/decrypt/k", `{"ciphertext":"`+ct+`"}`); r.status != 200 {
		t.Fatalf("decrypt with a deactivated key: %d %s", r.status, r.raw)
	}
	if r := f.do(t, root, "POST", "/v1/transit/encrypt/k", `{"plaintext":"`+pt+`"}`); r.status != 400 || !strings.Contains(r.raw, "only an active key") {
		t.Fatalf("encrypt with a deactivated key: %d %s", r.status, r.raw)
	}
	if _, err := f.svc.Objects.ChangeState(rootCtx(), service.Ref{ID: o.ID}, service.Destroy, ""); err != nil {
		t.Fatal(err)
	}
	if r := f.do(t, root, "POST", "/v1/transit/decrypt/k", `{"ciphertext":"`+ct+`"}`); r.status != 400 || !strings.Contains(r.raw, "destroyed") {
		t.Fatalf("decrypt with a destroyed key: %d %s", r.status, r.raw)
	}
}

func TestMountsAPI(t *testing.T) {
	f := newFixture(t)
	root := f.tokens["root"]
	if _, err := f.svc.Access.CreateWallet(rootCtx(), "db", ""); err != nil {
		t.Fatal(err)
	}
	if r := f.do(t, root, "POST", "/v1/sys/mounts/mariadb", `{"type":"kv","options":{"version":"2","wallet":"db"}}`); r.status != 204 {
		t.Fatalf("enable: %d %s", r.status, r.raw)
	}
	if r := f.do(t, root, "POST", "/v1/sys/mounts/mariadb", `{"type":"kv-v2","options":{"wallet":"db"}}`); r.status != 400 {
		t.Fatalf("enable twice: %d %s", r.status, r.raw)
	}
	for _, body := range []string{`{"type":"kv"}`, `{"type":"pki"}`, `{"type":"transit","options":{"wallet":"nope"}}`} {
		if r := f.do(t, root, "POST", "/v1/sys/mounts/x2", body); r.status == 204 {
			t.Fatalf("enable %s accepted", body)
		}
	}
	if r := f.do(t, root, "POST", "/v1/sys/mounts/sys", `{"type":"kv-v2","options":{"wallet":"db"}}`); r.status != 400 {
		t.Fatalf("reserved path: %d %s", r.status, r.raw)
	}
	r := f.do(t, root, "GET", "/v1/sys/mounts", "")
	m, _ := r.data(t)["mariadb/"].(map[string]any)
	if r.status != 200 || m["type"] != "kv" || m["options"].(map[string]any)["wallet"] != "db" {
		t.Fatalf("list mounts: %d %s", r.status, r.raw)
	}
	if r := f.do(t, root, "POST", "/v1/mariadb/data/1", `{"data":{"data":"00"}}`); r.status != 200 {
		t.Fatalf("write through the new mount: %d %s", r.status, r.raw)
	}
	if r := f.do(t, root, "DELETE", "/v1/sys/mounts/mariadb", ""); r.status != 204 {
		t.Fatalf("disable: %d %s", r.status, r.raw)
	}
	if r := f.do(t, root, "GET", "/v1/mariadb/data/1", ""); r.status != 404 {
		t.Fatalf("read after unmount: %d %s", r.status, r.raw)
	}
	// The data stays in the wallet.
	if _, err := f.svc.Objects.DescribeObject(rootCtx(), service.Ref{Wallet: "db", Name: "1"}); err != nil {
		t.Fatalf("unmount removed data: %v", err)
	}
	if r := f.do(t, root, "GET", "/v1/kv/nothing/x", ""); r.status != 404 {
		t.Fatalf("unknown KV section: %d", r.status)
	}
	if r := f.do(t, root, "PATCH", "/v1/kv/data/x", `{}`); r.status != http.StatusUnsupportedMediaType {
		t.Fatalf("PATCH without a merge-patch content type: %d", r.status)
	}
	if r := f.do(t, root, "OPTIONS", "/v1/kv/data/x", `{}`); r.status != http.StatusMethodNotAllowed {
		t.Fatalf("OPTIONS: %d", r.status)
	}
}

// Every Vault request is audited like a native one: transport vault, the
// operation, the caller, the object touched, the result; health is not.
func TestVaultRequestsAreAudited(t *testing.T) {
	f := newFixture(t)
	f.do(t, f.tokens["root"], "POST", "/v1/kv/data/a", `{"data":{"k":"v"}}`)
	f.do(t, f.tokens["ep-read"], "GET", "/v1/kv/data/a", "")
	f.do(t, f.tokens["ep-none"], "GET", "/v1/kv/data/a", "")
	f.do(t, "", "GET", "/v1/sys/health", "")
	o, err := f.svc.Objects.DescribeObject(rootCtx(), service.Ref{Wallet: "kvw", Name: "a"})
	if err != nil {
		t.Fatal(err)
	}
	recs, err := f.svc.AuditRecords(rootCtx(), 1, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range recs {
		if r.Transport != "vault" {
			continue
		}
		if strings.Contains(r.Operation, "health") {
			t.Fatalf("health audited: %+v", r)
		}
		objs := strings.Join(r.Objects, ",")
		got = append(got, fmt.Sprintf("%s %s %s %d %v", r.Operation, r.Actor, r.Result, r.Status, objs == o.ID))
	}
	want := []string{"vault.kv.write root ok 200 true", "vault.kv.read endpoint:ep-read ok 200 true", "vault.kv.read endpoint:ep-none forbidden 403 false"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("audit records:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, r := range recs {
		if strings.Contains(r.Error, `"k":"v"`) {
			t.Fatal("a secret value is in the audit log")
		}
	}
}

// TestKVMetadataWritesOfDifferentFieldsDoNotLoseEachOther: two writers
// setting different metadata fields at once both take effect (a write
// changes only the fields it names, in one state command), and
// custom_metadata null clears it while an absent one keeps it, as Vault.
func TestKVMetadataWritesOfDifferentFieldsDoNotLoseEachOther(t *testing.T) {
	f := newFixture(t)
	root := f.tokens["root"]
	f.do(t, root, "POST", "/v1/kv/data/race", `{"data":{"a":"1"}}`)
	for round := 0; round < 40; round++ {
		if r := f.do(t, root, "POST", "/v1/kv/metadata/race", `{"cas_required":false,"custom_metadata":null}`); r.status != 204 {
			t.Fatalf("reset: %d %s", r.status, r.raw)
		}
		want := fmt.Sprintf("r%d", round)
		var wg sync.WaitGroup
		for _, body := range []string{`{"cas_required":true}`, `{"custom_metadata":{"round":"` + want + `"}}`} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if r := f.do(t, root, "POST", "/v1/kv/metadata/race", body); r.status != 204 {
					t.Errorf("write %s: %d %s", body, r.status, r.raw)
				}
			}()
		}
		wg.Wait()
		r := f.do(t, root, "GET", "/v1/kv/metadata/race", "")
		custom, _ := r.data(t)["custom_metadata"].(map[string]any)
		if r.data(t)["cas_required"] != true || custom["round"] != want {
			t.Fatalf("round %d: an update was lost: %s", round, r.raw)
		}
	}
	// Absent keeps; null clears (Vault sets what is sent, and null is an empty map).
	f.do(t, root, "POST", "/v1/kv/metadata/race", `{"cas_required":false}`)
	r := f.do(t, root, "GET", "/v1/kv/metadata/race", "")
	if custom, _ := r.data(t)["custom_metadata"].(map[string]any); custom["round"] == nil {
		t.Fatalf("custom_metadata not sent was changed: %s", r.raw)
	}
	f.do(t, root, "POST", "/v1/kv/metadata/race", `{"custom_metadata":null}`)
	r = f.do(t, root, "GET", "/v1/kv/metadata/race", "")
	if custom, _ := r.data(t)["custom_metadata"].(map[string]any); len(custom) != 0 {
		t.Fatalf("custom_metadata null kept the map: %s", r.raw)
	}
}

// TestKVUndeleteSkipsDestroyedVersions: undelete of a destroyed version
// changes nothing, as Vault (which skips a version that does not exist or
// is destroyed): the version keeps its deletion_time, and the live ones
// named with it are undeleted.
func TestKVUndeleteSkipsDestroyedVersions(t *testing.T) {
	f := newFixture(t)
	root := f.tokens["root"]
	for i := 0; i < 2; i++ {
		if r := f.do(t, root, "POST", "/v1/kv/data/u", `{"data":{"n":"x"}}`); r.status != 200 {
			t.Fatal(r.raw)
		}
	}
	if r := f.do(t, root, "POST", "/v1/kv/delete/u", `{"versions":[1,2]}`); r.status != 204 {
		t.Fatalf("delete: %d %s", r.status, r.raw)
	}
	if r := f.do(t, root, "PUT", "/v1/kv/destroy/u", `{"versions":[1]}`); r.status != 204 {
		t.Fatalf("destroy: %d %s", r.status, r.raw)
	}
	version := func(n string) map[string]any {
		r := f.do(t, root, "GET", "/v1/kv/metadata/u", "")
		return r.data(t)["versions"].(map[string]any)[n].(map[string]any)
	}
	deleted := version("1")["deletion_time"]
	if deleted == "" {
		t.Fatalf("destroyed version 1 has no deletion_time: %v", version("1"))
	}
	if r := f.do(t, root, "POST", "/v1/kv/undelete/u", `{"versions":[1,2]}`); r.status != 204 {
		t.Fatalf("undelete: %d %s", r.status, r.raw)
	}
	if v := version("1"); v["destroyed"] != true || v["deletion_time"] != deleted {
		t.Fatalf("undelete changed destroyed version 1: %v, want deletion_time %v kept", v, deleted)
	}
	if v := version("2"); v["deletion_time"] != "" {
		t.Fatalf("version 2 not undeleted: %v", v)
	}
}
