package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// rawAPI calls the REST API with plain net/http (what any client would send).
type rawAPI struct {
	t   *testing.T
	url string
	hc  *http.Client
}

func newRawAPI(t *testing.T, n *node) *rawAPI {
	pem, err := os.ReadFile(n.caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &rawAPI{t: t, url: n.url, hc: &http.Client{Timeout: 30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}}
}

// call sends body (JSON) with token and decodes the answer into out; it fails
// the test unless the status is want.
func (a *rawAPI) call(token, method, path, body string, want int, out any) string {
	a.t.Helper()
	req, _ := http.NewRequest(method, a.url+path, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := a.hc.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		a.t.Fatalf("%s %s: %d, want %d: %s", method, path, resp.StatusCode, want, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			a.t.Fatalf("%s %s: decode %s: %v", method, path, raw, err)
		}
	}
	return string(raw)
}

// TestNoSecretsInLogsAuditOrMetrics runs a scenario touching every kind of
// secret — keystore passphrases, root, session and endpoint tokens, user
// passwords (right and wrong), secret values, symmetric and private key
// material — then searches the server's whole log output (at debug level),
// its audit log, the audit API, the metrics and every file in the data dir
// for any of them, in the clear, base64 or hex.
func TestNoSecretsInLogsAuditOrMetrics(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	n := initialisedNode(t, dir, "")
	// Restart at debug level: the most talkative the server gets.
	n.stop()
	cfg, _ := os.ReadFile(n.config)
	os.WriteFile(n.config, []byte(strings.Replace(string(cfg), "level: info", "level: debug", 1)), 0o600)
	n.start()
	n.waitState("open")
	api := newRawAPI(t, n)
	root := n.token
	secrets := map[string]string{"passphrase": testPassphrase, "root token": root}

	const adminPW, keyPW, wrongPW = "sys-admin-password-77", "key-admin-password-88", "wrong-password-99"
	secrets["sysadmin password"], secrets["keyadmin password"], secrets["wrong password"] = adminPW, keyPW, wrongPW
	api.call(root, "POST", "/api/v1/users", `{"name":"ops","password":"`+adminPW+`","roles":["system_admin","audit_manager"]}`, 201, nil)
	api.call(root, "POST", "/api/v1/users", `{"name":"keys","password":"`+keyPW+`","roles":["key_admin"]}`, 201, nil)
	api.call("", "POST", "/api/v1/auth/login", `{"username":"keys","password":"`+wrongPW+`"}`, 401, nil)
	var sess struct{ Token string }
	api.call("", "POST", "/api/v1/auth/login", `{"username":"keys","password":"`+keyPW+`"}`, 200, &sess)
	keys := sess.Token
	secrets["keyadmin session"] = keys
	api.call("", "POST", "/api/v1/auth/login", `{"username":"ops","password":"`+adminPW+`"}`, 200, &sess)
	ops := sess.Token
	secrets["sysadmin session"] = ops

	api.call(keys, "POST", "/api/v1/wallets", `{"name":"db"}`, 201, nil)
	secretValue := "tde-master-key-value-0123456789abcdef"
	secrets["secret value"] = secretValue
	api.call(keys, "PUT", "/api/v1/wallets/db/secrets/tde/master", `{"value":"`+base64.StdEncoding.EncodeToString([]byte(secretValue))+`"}`, 200, nil)
	var created struct{ ID string }
	api.call(keys, "POST", "/api/v1/objects", `{"wallet":"db","name":"aes","type":"symmetric_key"}`, 201, &created)
	api.call(keys, "POST", "/api/v1/objects/"+created.ID+"/rotate", ``, 200, nil)
	var pair struct{ ID string }
	api.call(keys, "POST", "/api/v1/objects", `{"wallet":"db","name":"rsa","type":"key_pair","algorithm":"RSA","length":2048}`, 201, &pair)
	var enr struct{ Token string }
	api.call(keys, "POST", "/api/v1/endpoints", `{"name":"db1"}`, 201, &enr)
	secrets["endpoint token"] = enr.Token
	api.call(keys, "PUT", "/api/v1/wallets/db/grants/db1", `{"permission":"read"}`, 200, nil)

	type material struct {
		Material struct{ Value []byte }
	}
	addMaterial := func(label string, v []byte) {
		secrets[label+" (base64)"] = base64.StdEncoding.EncodeToString(v)
		secrets[label+" (hex)"] = hex.EncodeToString(v)
	}
	for v := 1; v <= 2; v++ {
		var m material
		api.call(enr.Token, "GET", fmt.Sprintf("/api/v1/objects/%s/material?version=%d", created.ID, v), ``, 200, &m)
		addMaterial(fmt.Sprintf("AES key v%d", v), m.Material.Value)
	}
	var m material
	api.call(enr.Token, "GET", "/api/v1/wallets/db/objects/rsa", ``, 200, &m)
	addMaterial("RSA private key", m.Material.Value[len(m.Material.Value)-64:]) // the key's tail, past the common ASN.1 header
	api.call(enr.Token, "GET", "/api/v1/wallets/db/objects/tde/master", ``, 200, nil)
	api.call(enr.Token, "POST", "/api/v1/objects", `{"wallet":"db","name":"x","type":"symmetric_key"}`, 403, nil)

	const newPass = "e2e-new-passphrase-4567"
	secrets["new passphrase"] = newPass
	api.call(ops, "POST", "/api/v1/sys/keystore/change-passphrase", `{"old_passphrase":"`+testPassphrase+`","new_passphrase":"`+newPass+`"}`, 200, nil)
	api.call(ops, "POST", "/api/v1/sys/keystore/change-passphrase", `{"old_passphrase":"`+wrongPW+`","new_passphrase":"`+newPass+`"}`, 400, nil)
	api.call(keys, "POST", "/api/v1/objects/"+created.ID+"/deactivate", `{"reason":"rotation done"}`, 200, nil)
	api.call(keys, "POST", "/api/v1/objects/"+created.ID+"/destroy", ``, 200, nil)
	api.call(enr.Token, "GET", "/api/v1/objects/"+created.ID+"/material", ``, 410, nil)
	api.call(keys, "POST", "/api/v1/endpoints/db1/revoke", ``, 200, nil)
	api.call(enr.Token, "GET", "/api/v1/wallets/db/objects/tde/master", ``, 401, nil)
	api.call(keys, "POST", "/api/v1/auth/logout", ``, 200, nil)

	auditAPI := api.call(ops, "GET", "/api/v1/audit?limit=1000", ``, 200, nil)
	if !strings.Contains(auditAPI, `"operation":"getMaterial"`) || !strings.Contains(auditAPI, created.ID) || !strings.Contains(auditAPI, `"actor":"endpoint:db1"`) {
		t.Fatalf("audit lacks the endpoint's reads: %.2000s", auditAPI)
	}
	api.call(ops, "POST", "/api/v1/audit/verify", ``, 200, nil)
	metrics := api.call("", "GET", "/metrics", ``, 200, nil)
	if !strings.Contains(metrics, "coffer_requests_total") {
		t.Fatal("no request metrics")
	}
	n.stop()

	haystacks := map[string]string{"server output": n.logs.String(), "audit API": auditAPI, "metrics": metrics}
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			haystacks[p] = string(b)
		}
		return nil
	})
	if len(haystacks) < 10 {
		t.Fatalf("only %d places searched", len(haystacks))
	}
	for where, text := range haystacks {
		for what, s := range secrets {
			if len(s) < 16 {
				t.Fatalf("secret %s too short to search reliably", what)
			}
			if strings.Contains(text, s) {
				t.Errorf("%s found in %s", what, where)
			}
		}
	}
	if !strings.Contains(n.logs.String(), `"level":"DEBUG"`) {
		t.Error("the server did not log at debug level; the search covered less than intended")
	}
}
