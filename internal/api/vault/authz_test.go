package vault

import (
	"encoding/base64"
	"slices"
	"strings"
	"testing"
)

// The callers of the Vault authorisation matrix.
var vaultCallers = []string{"anonymous", "bad-token", "ep-none", "ep-read", "ep-rm", "ep-manage", "root"}

// vaultAllowed lists, per operation, who gets past authorisation. Written
// out by hand, like the native API's matrix: "*" is everyone, "authenticated"
// every valid token, "read+" endpoints with read or more on the mount's
// wallet plus root (key_admin), "rm+" read_modify or more, "manage+" manage.
var vaultAllowed = map[string]string{
	"sys.health": "*", "sys.seal-status": "*",
	"sys.mounts.list": "root", "sys.mounts.enable": "root", "sys.mounts.disable": "root",
	"sys.mounts.tune": "read+", "auth.token.lookup-self": "authenticated", "kv.config": "authenticated",
	"kv.read": "read+", "kv.list": "read+", "kv.metadata.read": "read+",
	"kv.write": "rm+", "kv.metadata.write": "rm+", "kv.delete": "rm+", "kv.undelete": "rm+", "kv.delete-latest": "rm+",
	"kv.destroy": "manage+", "kv.metadata.delete": "manage+",
	"transit.keys.read": "read+", "transit.keys.list": "read+", "transit.encrypt": "read+", "transit.decrypt": "read+",
	"transit.rewrap": "read+", "transit.datakey": "read+",
	"transit.keys.create": "rm+", "transit.keys.rotate": "rm+",
}

func expandCallers(spec string) []string {
	switch spec {
	case "*":
		return vaultCallers
	case "authenticated":
		return []string{"ep-none", "ep-read", "ep-rm", "ep-manage", "root"}
	case "read+":
		return []string{"ep-read", "ep-rm", "ep-manage", "root"}
	case "rm+":
		return []string{"ep-rm", "ep-manage", "root"}
	case "manage+":
		return []string{"ep-manage", "root"}
	}
	return strings.Fields(spec)
}

// TestVaultAuthorizationMatrix calls every Vault route as each caller on a
// fresh fixture and checks that exactly the allowed callers get through:
// allowed calls succeed (2xx), the others get Vault's 403.
func TestVaultAuthorizationMatrix(t *testing.T) {
	pt := base64.StdEncoding.EncodeToString([]byte("x"))
	for _, who := range vaultCallers {
		t.Run(who, func(t *testing.T) {
			f := newFixture(t)
			root := f.tokens["root"]
			tok := f.tokens[who]
			if who == "bad-token" {
				tok = "cof_bad-token"
			}
			// Seed: KV "s" with v1 soft-deleted (destroyable), "u" for
			// delete-latest, "d" with every version deleted; Transit key "k".
			for _, p := range []string{"s", "s", "u", "d"} {
				f.do(t, root, "POST", "/v1/kv/data/"+p, `{"data":{"a":"b"}}`)
			}
			f.do(t, root, "POST", "/v1/kv/delete/s", `{"versions":[1]}`)
			f.do(t, root, "POST", "/v1/kv/delete/d", `{"versions":[1]}`)
			f.do(t, root, "POST", "/v1/transit/keys/k", `{}`)
			ct := f.do(t, root, "POST", "/v1/transit/encrypt/k", `{"plaintext":"`+pt+`"}`).data(t)["ciphertext"].(string)
			if _, err := f.svc.Access.CreateWallet(rootCtx(), "x", ""); err != nil {
				t.Fatal(err)
			}

			calls := []struct{ op, method, path, body string }{
				{"sys.health", "GET", "/v1/sys/health", ""},
				{"sys.seal-status", "GET", "/v1/sys/seal-status", ""},
				{"sys.mounts.list", "GET", "/v1/sys/mounts", ""},
				{"sys.mounts.enable", "POST", "/v1/sys/mounts/extra", `{"type":"transit","options":{"wallet":"x"}}`},
				{"sys.mounts.disable", "DELETE", "/v1/sys/mounts/extra", ""},
				{"sys.mounts.tune", "GET", "/v1/sys/mounts/kv/tune", ""},
				{"auth.token.lookup-self", "GET", "/v1/auth/token/lookup-self", ""},
				{"kv.config", "GET", "/v1/kv/config", ""},
				{"kv.read", "GET", "/v1/kv/data/s", ""},
				{"kv.list", "LIST", "/v1/kv/metadata/", ""},
				{"kv.metadata.read", "GET", "/v1/kv/metadata/s", ""},
				{"kv.write", "POST", "/v1/kv/data/w", `{"data":{"a":"b"}}`},
				{"kv.metadata.write", "POST", "/v1/kv/metadata/s", `{"custom_metadata":{"k":"v"}}`},
				{"kv.delete", "POST", "/v1/kv/delete/s", `{"versions":[2]}`},
				{"kv.undelete", "POST", "/v1/kv/undelete/s", `{"versions":[2]}`},
				{"kv.delete-latest", "DELETE", "/v1/kv/data/u", ""},
				{"kv.destroy", "PUT", "/v1/kv/destroy/s", `{"versions":[1]}`},
				{"kv.metadata.delete", "DELETE", "/v1/kv/metadata/d", ""},
				{"transit.keys.read", "GET", "/v1/transit/keys/k", ""},
				{"transit.keys.list", "LIST", "/v1/transit/keys", ""},
				{"transit.encrypt", "POST", "/v1/transit/encrypt/k", `{"plaintext":"` + pt + `"}`},
				{"transit.decrypt", "POST", "/v1/transit/decrypt/k", `{"ciphertext":"` + ct + `"}`},
				{"transit.rewrap", "POST", "/v1/transit/rewrap/k", `{"ciphertext":"` + ct + `"}`},
				{"transit.datakey", "POST", "/v1/transit/datakey/wrapped/k", `{}`},
				{"transit.keys.create", "POST", "/v1/transit/keys/k2", `{}`},
				{"transit.keys.rotate", "POST", "/v1/transit/keys/k/rotate", ""},
			}
			seen := map[string]bool{}
			for _, c := range calls {
				seen[c.op] = true
				spec, ok := vaultAllowed[c.op]
				if !ok {
					t.Fatalf("operation %s is missing from the matrix", c.op)
				}
				r := f.do(t, tok, c.method, c.path, c.body)
				allowed := slices.Contains(expandCallers(spec), who)
				switch {
				case allowed && (r.status < 200 || r.status > 299):
					t.Errorf("%s as %s: %d %s, want success", c.op, who, r.status, r.raw)
				case !allowed && r.status != 403:
					t.Errorf("%s as %s: %d %s, want 403", c.op, who, r.status, r.raw)
				case !allowed && !strings.Contains(r.raw, "permission denied"):
					t.Errorf("%s as %s: 403 without Vault's message: %s", c.op, who, r.raw)
				case !allowed && strings.Count(r.raw, "permission denied") != 1:
					t.Errorf("%s as %s: the message repeats its prefix: %s", c.op, who, r.raw)
				}
			}
			for op := range vaultAllowed {
				if !seen[op] {
					t.Errorf("matrix operation %s is never called", op)
				}
			}
			// Nothing a refused caller did changed the data.
			if who != "root" && !slices.Contains(expandCallers("rm+"), who) {
				if r := f.do(t, root, "GET", "/v1/kv/metadata/s", ""); r.data(t)["current_version"] != 2.0 {
					t.Errorf("refused writes changed s: %s", r.raw)
				}
				if r := f.do(t, root, "GET", "/v1/kv/data/w", ""); r.status != 404 {
					t.Errorf("refused write created w: %d", r.status)
				}
			}
		})
	}
}
