package vault

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/coffer-kms/coffer/internal/service"
)

// jsonAt walks a decoded JSON document along keys ("data", "options", ...).
func jsonAt(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// TestCLICalls replays the HTTP calls the vault CLI makes (method, path,
// body, content type, as its command/*.go and the api package send them)
// for status, kv put/get/list/patch/metadata get/delete/undelete/destroy,
// secrets list/enable, write -f and token lookup, in order, and checks
// each answer is the one Vault gives.
func TestCLICalls(t *testing.T) {
	f := newFixture(t)
	if _, err := f.svc.Access.CreateWallet(rootCtx(), "app", ""); err != nil {
		t.Fatal(err)
	}
	root := f.tokens["root"]
	type check func(t *testing.T, body map[string]any)
	field := func(want any, keys ...string) check {
		return func(t *testing.T, body map[string]any) {
			t.Helper()
			got, _ := json.Marshal(jsonAt(body, keys...))
			w, _ := json.Marshal(want)
			if string(got) != string(w) {
				t.Errorf("%s = %s, want %s", strings.Join(keys, "."), got, w)
			}
		}
	}
	set := func(keys ...string) check {
		return func(t *testing.T, body map[string]any) {
			t.Helper()
			if v, _ := jsonAt(body, keys...).(string); v == "" {
				t.Errorf("%s is empty", strings.Join(keys, "."))
			}
		}
	}
	const merge = "application/merge-patch+json"
	for _, c := range []struct {
		cmd, method, path, ctype, body string
		status                         int
		checks                         []check
	}{
		// vault status: seal status, then the leader.
		{"status", "GET", "/v1/sys/seal-status", "", "", 200, []check{field(false, "sealed"), field(true, "initialized")}},
		{"status", "GET", "/v1/sys/leader", "", "", 200, []check{field(false, "ha_enabled"), field(true, "is_self")}},
		// vault secrets enable -path=app -version=2 kv
		{"secrets enable", "POST", "/v1/sys/mounts/app", "", `{"type":"kv","description":"","config":{"options":null,"default_lease_ttl":"0s","max_lease_ttl":"0s","force_no_cache":false},"local":false,"seal_wrap":false,"external_entropy_access":false,"options":{"version":"2"}}`, 204, nil},
		{"secrets list", "GET", "/v1/sys/mounts", "", "", 200, []check{field("kv", "data", "app/", "type"), field("2", "data", "app/", "options", "version")}},
		// vault kv put -mount=app db/creds user=alice: the KV version preflight, then the write.
		{"kv put", "GET", "/v1/sys/internal/ui/mounts/app/db/creds", "", "", 200, []check{field("app/", "data", "path"), field("kv", "data", "type"), field("2", "data", "options", "version")}},
		{"kv put", "PUT", "/v1/app/data/db/creds", "", `{"data":{"user":"alice"},"options":{}}`, 200, []check{field(1, "data", "version"), set("data", "created_time")}},
		{"kv get", "GET", "/v1/sys/internal/ui/mounts/app/db/creds", "", "", 200, []check{field("app/", "data", "path")}},
		{"kv get", "GET", "/v1/app/data/db/creds", "", "", 200, []check{field("alice", "data", "data", "user"), field(1, "data", "metadata", "version")}},
		// vault kv list: the api client sends LIST as GET ?list=true.
		{"kv list", "GET", "/v1/app/metadata/db?list=true", "", "", 200, []check{field([]string{"creds"}, "data", "keys")}},
		{"kv list", "LIST", "/v1/app/metadata/db/", "", "", 200, []check{field([]string{"creds"}, "data", "keys")}},
		// vault kv patch -mount=app db/creds pass=x: a JSON merge patch.
		{"kv patch", "PATCH", "/v1/app/data/db/creds", merge, `{"data":{"pass":"x"},"options":{}}`, 200, []check{field(2, "data", "version")}},
		{"kv patch", "PATCH", "/v1/app/data/db/creds", merge, `{"data":{"pass":"y"},"options":{"cas":1}}`, 400, []check{func(t *testing.T, b map[string]any) {
			if s, _ := json.Marshal(b["errors"]); !strings.Contains(string(s), "check-and-set") {
				t.Errorf("cas conflict: %s", s)
			}
		}}},
		{"kv patch", "PATCH", "/v1/app/data/db/none", merge, `{"data":{"a":"b"}}`, 404, nil},
		{"kv get", "GET", "/v1/app/data/db/creds", "", "", 200, []check{field(map[string]string{"user": "alice", "pass": "x"}, "data", "data")}},
		{"kv get -version", "GET", "/v1/app/data/db/creds?version=1", "", "", 200, []check{field(map[string]string{"user": "alice"}, "data", "data")}},
		{"kv subkeys", "GET", "/v1/app/subkeys/db/creds", "", "", 200, []check{field(map[string]any{"user": nil, "pass": nil}, "data", "subkeys")}},
		{"kv metadata get", "GET", "/v1/app/metadata/db/creds", "", "", 200, []check{field(2, "data", "current_version"), set("data", "versions", "1", "created_time")}},
		{"kv metadata put", "POST", "/v1/app/metadata/db/creds", "", `{"custom_metadata":{"owner":"ops"},"cas_required":false}`, 204, nil},
		{"kv metadata get", "GET", "/v1/app/metadata/db/creds", "", "", 200, []check{field(map[string]string{"owner": "ops"}, "data", "custom_metadata")}},
		// vault kv delete: the latest version.
		{"kv delete", "DELETE", "/v1/app/data/db/creds", "", "", 204, nil},
		{"kv get", "GET", "/v1/app/data/db/creds", "", "", 404, []check{set("data", "metadata", "deletion_time"), field(nil, "data", "data")}},
		{"kv undelete", "PUT", "/v1/app/undelete/db/creds", "", `{"versions":["2"]}`, 204, nil},
		{"kv get", "GET", "/v1/app/data/db/creds", "", "", 200, []check{field("x", "data", "data", "pass")}},
		// Coffer destroys only a soft-deleted version (Vault destroys any):
		// vault kv delete -versions=1, then vault kv destroy -versions=1.
		{"kv destroy", "PUT", "/v1/app/destroy/db/creds", "", `{"versions":["1"]}`, 400, nil},
		{"kv delete -versions", "PUT", "/v1/app/delete/db/creds", "", `{"versions":["1"]}`, 204, nil},
		{"kv destroy", "PUT", "/v1/app/destroy/db/creds", "", `{"versions":["1"]}`, 204, nil},
		{"kv get -version", "GET", "/v1/app/data/db/creds?version=1", "", "", 404, []check{field(true, "data", "metadata", "destroyed")}},
		// vault write -f transit/keys/k1: the api client sends a null body.
		{"write -f", "PUT", "/v1/transit/keys/k1", "", "null", 200, []check{field("k1", "data", "name")}},
		{"write -f", "PUT", "/v1/transit/keys/k2", "", "", 200, []check{field("k2", "data", "name")}},
		// vault token lookup
		{"token lookup", "GET", "/v1/auth/token/lookup-self", "", "", 200, []check{field([]string{"root"}, "data", "policies")}},
		// A path under no mount: Vault's preflight answers permission denied.
		{"kv get", "GET", "/v1/sys/internal/ui/mounts/nomount/x", "", "", 403, nil},
	} {
		req, err := http.NewRequest(c.method, f.srv.URL+c.path, strings.NewReader(c.body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Vault-Token", root)
		if c.ctype != "" {
			req.Header.Set("Content-Type", c.ctype)
		}
		res, err := f.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body map[string]any
		json.NewDecoder(res.Body).Decode(&body)
		res.Body.Close()
		if res.StatusCode != c.status {
			t.Errorf("%s: %s %s: %d %v, want %d", c.cmd, c.method, c.path, res.StatusCode, body, c.status)
			continue
		}
		for _, ch := range c.checks {
			ch(t, body)
		}
	}
}

// TestCapabilitiesSelf: an endpoint's capabilities on a mount path follow
// its grant on the mount's wallet; root has root; no grant is deny.
func TestCapabilitiesSelf(t *testing.T) {
	f := newFixture(t)
	for tok, want := range map[string]string{"root": `["root"]`, "ep-read": `["list","read"]`,
		"ep-rm": `["create","list","patch","read","update"]`, "ep-manage": `["create","delete","list","patch","read","update"]`, "ep-none": `["deny"]`} {
		r := f.do(t, f.tokens[tok], "POST", "/v1/sys/capabilities-self", `{"paths":["kv/data/x"]}`)
		if r.status != 200 {
			t.Fatalf("%s: %d %s", tok, r.status, r.raw)
		}
		for _, got := range []any{r.data(t)["kv/data/x"], r.body["capabilities"]} {
			if b, _ := json.Marshal(got); string(b) != want {
				t.Errorf("%s: %s, want %s", tok, b, want)
			}
		}
	}
	if r := f.do(t, f.tokens["ep-manage"], "POST", "/v1/sys/capabilities-self", `{"paths":["sys/mounts"]}`); r.status != 200 || jsonAt(r.body, "data", "capabilities").([]any)[0] != "deny" {
		t.Errorf("sys path: %d %s", r.status, r.raw)
	}
}

// TestTransitExtras: hmac and verify round-trip and reject a changed input
// or a MAC from another key; random and hash answer Vault's shapes; sign is
// refused with a reason; keys/<name>/config accepts no-ops only.
func TestTransitExtras(t *testing.T) {
	f := newFixture(t)
	tok := f.tokens["ep-rm"]
	for _, k := range []string{"m1", "m2"} {
		if r := f.do(t, tok, "POST", "/v1/transit/keys/"+k, ""); r.status != 200 {
			t.Fatalf("create: %d %s", r.status, r.raw)
		}
	}
	r := f.do(t, tok, "POST", "/v1/transit/hmac/m1/sha2-512", `{"input":"aGVsbG8="}`)
	mac, _ := jsonAt(r.body, "data", "hmac").(string)
	if r.status != 200 || !strings.HasPrefix(mac, "vault:v1:") {
		t.Fatalf("hmac: %d %s", r.status, r.raw)
	}
	for _, c := range []struct {
		path, body string
		valid      bool
	}{
		{"/v1/transit/verify/m1/sha2-512", `{"input":"aGVsbG8=","hmac":"` + mac + `"}`, true},
		{"/v1/transit/verify/m1", `{"input":"aGVsbG8=","hmac":"` + mac + `","algorithm":"sha2-512"}`, true},
		{"/v1/transit/verify/m1/sha2-512", `{"input":"aGVsbG9v","hmac":"` + mac + `"}`, false},
		{"/v1/transit/verify/m1/sha2-256", `{"input":"aGVsbG8=","hmac":"` + mac + `"}`, false},
		{"/v1/transit/verify/m2/sha2-512", `{"input":"aGVsbG8=","hmac":"` + mac + `"}`, false},
	} {
		r := f.do(t, tok, "POST", c.path, c.body)
		if r.status != 200 || jsonAt(r.body, "data", "valid") != c.valid {
			t.Errorf("verify %s %s: %d %s, want valid=%v", c.path, c.body, r.status, r.raw, c.valid)
		}
	}
	// A rotation keeps old MACs verifiable and new ones use the new version.
	if r := f.do(t, tok, "POST", "/v1/transit/keys/m1/rotate", ""); r.status != 200 {
		t.Fatalf("rotate: %d", r.status)
	}
	if r := f.do(t, tok, "POST", "/v1/transit/verify/m1/sha2-512", `{"input":"aGVsbG8=","hmac":"`+mac+`"}`); jsonAt(r.body, "data", "valid") != true {
		t.Errorf("old mac after rotation: %s", r.raw)
	}
	if r := f.do(t, tok, "POST", "/v1/transit/hmac/m1", `{"input":"aGVsbG8="}`); !strings.HasPrefix(jsonAt(r.body, "data", "hmac").(string), "vault:v2:") {
		t.Errorf("hmac after rotation: %s", r.raw)
	}
	if r := f.do(t, f.tokens["ep-none"], "POST", "/v1/transit/hmac/m1", `{"input":"aGVsbG8="}`); r.status != 403 {
		t.Errorf("hmac without a grant: %d", r.status)
	}
	r = f.do(t, tok, "POST", "/v1/transit/random/16", `{"format":"hex"}`)
	if s, _ := jsonAt(r.body, "data", "random_bytes").(string); r.status != 200 || len(s) != 32 {
		t.Errorf("random: %d %s", r.status, r.raw)
	}
	r = f.do(t, tok, "POST", "/v1/transit/hash/sha2-256", `{"input":"aGVsbG8=","format":"hex"}`)
	if s := jsonAt(r.body, "data", "sum"); r.status != 200 || s != "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824" {
		t.Errorf("hash: %d %s", r.status, r.raw)
	}
	if r := f.do(t, tok, "POST", "/v1/transit/hash/md5", `{"input":"aGVsbG8="}`); r.status != 400 {
		t.Errorf("hash md5: %d", r.status)
	}
	if r := f.do(t, tok, "POST", "/v1/transit/sign/m1", `{"input":"aGVsbG8="}`); r.status != 400 || !strings.Contains(r.raw, "not a signing key") {
		t.Errorf("sign with an AES key: %d %s", r.status, r.raw)
	}
	if r := f.do(t, tok, "POST", "/v1/transit/keys/m1/config", `{"deletion_allowed":false,"min_decryption_version":1}`); r.status != 200 || jsonAt(r.body, "data", "name") != "m1" {
		t.Errorf("config no-op: %d %s", r.status, r.raw)
	}
	for _, body := range []string{`{"deletion_allowed":true}`, `{"min_decryption_version":2}`} {
		if r := f.do(t, tok, "POST", "/v1/transit/keys/m1/config", body); r.status != 400 {
			t.Errorf("config %s: %d %s", body, r.status, r.raw)
		}
	}
}

// TestTransitSign: ECDSA P-256 and P-384 keys sign (ASN.1 or JWS
// marshaling, hashed here or prehashed) and verify; a changed input, another
// key or another version's signature does not verify; signing keys do not
// encrypt; key reads show public keys.
func TestTransitSign(t *testing.T) {
	f := newFixture(t)
	tok := f.tokens["ep-rm"]
	if r := f.do(t, tok, "POST", "/v1/transit/keys/m-other", `{"type":"ecdsa-p256"}`); r.status != 200 {
		t.Fatalf("create: %d", r.status)
	}
	for _, typ := range []string{"ecdsa-p256", "ecdsa-p384"} {
		name := "s-" + typ
		r := f.do(t, tok, "POST", "/v1/transit/keys/"+name, `{"type":"`+typ+`"}`)
		if r.status != 200 || jsonAt(r.body, "data", "supports_signing") != true || jsonAt(r.body, "data", "supports_encryption") != false {
			t.Fatalf("create %s: %d %s", typ, r.status, r.raw)
		}
		if pk, _ := jsonAt(r.body, "data", "keys", "1", "public_key").(string); !strings.HasPrefix(pk, "-----BEGIN PUBLIC KEY-----") {
			t.Errorf("%s public key: %s", typ, r.raw)
		}
		for _, c := range []struct{ path, extra string }{
			{"/v1/transit/sign/" + name, ``},
			{"/v1/transit/sign/" + name + "/sha2-512", ``},
			{"/v1/transit/sign/" + name, `,"marshaling_algorithm":"jws"`},
		} {
			r := f.do(t, tok, "POST", c.path, `{"input":"aGVsbG8="`+c.extra+`}`)
			sig, _ := jsonAt(r.body, "data", "signature").(string)
			if r.status != 200 || !strings.HasPrefix(sig, "vault:v1:") {
				t.Fatalf("sign %s%s: %d %s", c.path, c.extra, r.status, r.raw)
			}
			vpath := strings.Replace(c.path, "/sign/", "/verify/", 1)
			for input, want := range map[string]bool{"aGVsbG8=": true, "aGVsbG9v": false} {
				r := f.do(t, tok, "POST", vpath, `{"input":"`+input+`","signature":"`+sig+`"`+c.extra+`}`)
				if r.status != 200 || jsonAt(r.body, "data", "valid") != want {
					t.Errorf("verify %s %s%s: %d %s, want %v", vpath, input, c.extra, r.status, r.raw, want)
				}
			}
			if r := f.do(t, tok, "POST", "/v1/transit/verify/m-other", `{"input":"aGVsbG8=","signature":"`+sig+`"`+c.extra+`}`); r.status != 200 || jsonAt(r.body, "data", "valid") != false {
				t.Errorf("another key verified %s", sig)
			}
		}
		// prehashed: the input is the SHA-256 digest of "hello".
		r = f.do(t, tok, "POST", "/v1/transit/sign/"+name, `{"input":"LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=","prehashed":true}`)
		sig, _ := jsonAt(r.body, "data", "signature").(string)
		if r := f.do(t, tok, "POST", "/v1/transit/verify/"+name, `{"input":"aGVsbG8=","signature":"`+sig+`"}`); jsonAt(r.body, "data", "valid") != true {
			t.Errorf("prehashed signature does not verify over the input: %s", r.raw)
		}
		// A rotation signs with version 2; version 1's signatures still verify.
		if r := f.do(t, tok, "POST", "/v1/transit/keys/"+name+"/rotate", ""); r.status != 200 {
			t.Fatalf("rotate: %d", r.status)
		}
		r = f.do(t, tok, "POST", "/v1/transit/sign/"+name, `{"input":"aGVsbG8="}`)
		sig2, _ := jsonAt(r.body, "data", "signature").(string)
		if !strings.HasPrefix(sig2, "vault:v2:") {
			t.Errorf("after rotation: %s", r.raw)
		}
		if r := f.do(t, tok, "POST", "/v1/transit/verify/"+name, `{"input":"aGVsbG8=","signature":"`+sig+`"}`); jsonAt(r.body, "data", "valid") != true {
			t.Errorf("v1 signature after rotation: %s", r.raw)
		}
		forged := "vault:v2:" + strings.TrimPrefix(sig, "vault:v1:")
		if r := f.do(t, tok, "POST", "/v1/transit/verify/"+name, `{"input":"aGVsbG8=","signature":"`+forged+`"}`); jsonAt(r.body, "data", "valid") != false {
			t.Errorf("v1 signature relabelled v2 verified: %s", r.raw)
		}
		if r := f.do(t, tok, "POST", "/v1/transit/encrypt/"+name, `{"plaintext":"aGVsbG8="}`); r.status != 400 {
			t.Errorf("encrypt with a signing key: %d %s", r.status, r.raw)
		}
	}
	if r := f.do(t, f.tokens["ep-none"], "POST", "/v1/transit/sign/s-ecdsa-p256", `{"input":"aGVsbG8="}`); r.status != 403 {
		t.Errorf("sign without a grant: %d", r.status)
	}
	if r := f.do(t, tok, "POST", "/v1/transit/keys/s-rsa", `{"type":"rsa-2048"}`); r.status != 400 {
		t.Errorf("rsa-2048: %d", r.status)
	}
}

// TestTokenSelf: renew-self answers a token without expiry as renewed;
// revoke-self refuses credentials that have their own revoke commands.
func TestTokenSelf(t *testing.T) {
	f := newFixture(t)
	r := f.do(t, f.tokens["ep-read"], "POST", "/v1/auth/token/renew-self", "")
	if r.status != 200 || jsonAt(r.body, "auth", "client_token") != "" || jsonAt(r.body, "auth", "renewable") != false {
		t.Fatalf("renew-self: %d %s", r.status, r.raw)
	}
	if b, _ := json.Marshal(jsonAt(r.body, "auth", "policies")); string(b) != `["kvw:read","tw:read"]` {
		t.Errorf("policies: %s", b)
	}
	if r := f.do(t, f.tokens["ep-read"], "POST", "/v1/auth/token/revoke-self", ""); r.status != 400 {
		t.Errorf("revoke-self of an endpoint credential: %d %s", r.status, r.raw)
	}
	if r := f.do(t, f.tokens["ep-read"], "GET", "/v1/kv/data/x", ""); r.status != 404 {
		t.Errorf("credential after a refused revoke-self: %d", r.status)
	}
	_ = service.LoginTokenTTL
}
