package e2e

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/coffer-kms/coffer/internal/testutil"
)

// hvacPython returns a python3 that imports hvac. The Vault ecosystem
// tests use Debian's python3-hvac (0.11.2): this machine kind reaches
// Debian's archive but not PyPI, so hvac 2.x cannot be installed; 0.11.2
// speaks the same HTTP API for everything driven here, and its KV v2 patch
// (read, merge, write) is complemented by a raw JSON merge patch request.
// Without it the test fails under CI=true and is skipped otherwise.
func hvacPython(t *testing.T) string {
	t.Helper()
	for _, py := range []string{"/usr/bin/python3", "python3"} {
		if p, err := exec.LookPath(py); err == nil && exec.Command(p, "-c", "import hvac").Run() == nil {
			return p
		}
	}
	testutil.Unavailable(t, "%s", "hvac is not installed: apt-get install -y python3-hvac (Debian 12: version 0.11.2)")
	return ""
}

// TestHvac drives the real coffer binary with hvac: KV v2 (create, read a
// version, list, patch, metadata, delete, undelete, destroy, CAS conflict),
// Transit (create, encrypt, decrypt, rewrap, rotate, datakey, hmac, verify,
// sign/verify with an ecdsa-p256 key, random, hash) after an auth.cert.login with an enrolled
// endpoint's certificate, then auth.approle.login with a one-use secret_id
// from "coffer endpoint approle".
func TestHvac(t *testing.T) {
	py := hvacPython(t)
	n := initialisedNode(t, filepath.Join(t.TempDir(), "data"), "")
	creds := n.enrollKMIP("hvac", "default", "manage")
	out, err := coffer(t, nil, "endpoint", "approle", "hvac", "--uses", "1", "--ttl", "1h", "--format", "json", "--data-dir", n.dataDir)
	if err != nil {
		t.Fatalf("endpoint approle: %v\n%s", err, out)
	}
	var ar struct {
		RoleID   string `json:"role_id"`
		SecretID string `json:"secret_id"`
	}
	if err := json.Unmarshal([]byte(out), &ar); err != nil || ar.RoleID != "hvac" || ar.SecretID == "" {
		t.Fatalf("endpoint approle output: %v", err)
	}
	script, _ := filepath.Abs("testdata/hvac_ops.py")
	cmd := exec.Command(py, script, n.url, n.caFile, n.token, filepath.Join(creds, "client.crt"), filepath.Join(creds, "client.key"), ar.RoleID, ar.SecretID)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("hvac_ops.py: %v\nstderr:\n%s\nserver log:\n%s", err, stderr.String(), n.logs)
	}
	var got map[string]any
	if err := json.Unmarshal(stdout, &got); err != nil {
		t.Fatalf("hvac_ops.py output %q: %v", stdout, err)
	}
	want := map[string]any{
		"mounts":                         []any{"app/", "transit/"},
		"cert_login":                     map[string]any{"has_token": true, "accessor": true, "policies": []any{"default:manage"}, "lease_duration_ok": true, "renewable": false},
		"authenticated":                  true,
		"lookup_self_policies":           []any{"default:manage"},
		"kv_create_version":              1.0,
		"kv_cas_conflict":                true,
		"kv_read_v1":                     map[string]any{"user": "alice", "pass": "p1"},
		"kv_list":                        []any{"creds"},
		"kv_merge_patch_version":         4.0,
		"kv_after_patch":                 map[string]any{"user": "alice", "pass": "p3"},
		"kv_metadata":                    map[string]any{"current_version": 4.0, "custom_metadata": map[string]any{"team": "db"}, "versions": []any{"1", "2", "3", "4"}},
		"kv_read_deleted":                "not found",
		"kv_after_undelete":              "p3",
		"kv_v1_destroyed":                true,
		"transit_encrypt_prefix":         "vault:v1:",
		"transit_decrypt":                "order 1",
		"transit_rewrap_prefix":          "vault:v2:",
		"transit_decrypt_rewrapped":      "order 1",
		"transit_datakey_len":            32.0,
		"transit_datakey_roundtrip":      true,
		"transit_hmac_prefix":            "vault:v2:",
		"transit_verify_hmac":            true,
		"transit_verify_hmac_other":      false,
		"transit_sign_aes":               "refused",
		"transit_sign_prefix":            "vault:v1:",
		"transit_verify_signature":       true,
		"transit_verify_signature_other": false,
		"transit_random_len":             24.0,
		"transit_hash":                   "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
		"approle_login":                  map[string]any{"has_token": true, "policies": []any{"default:manage"}},
		"approle_read":                   "p3",
		"approle_second_use":             "refused",
	}
	for k, w := range want {
		if !reflect.DeepEqual(got[k], w) {
			t.Errorf("%s = %#v, want %#v", k, got[k], w)
		}
	}
	if strings.Contains(n.logs.String(), "p3") && strings.Contains(n.logs.String(), `"pass"`) {
		t.Error("a KV value reached the server log")
	}
	if strings.Contains(n.logs.String(), ar.SecretID) {
		t.Error("the AppRole secret_id reached the server log")
	}
}
