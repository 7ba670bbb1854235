package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/client"
	"github.com/coffer-kms/coffer/internal/testutil"
)

// MariaDB with its hashicorp_key_management plugin pointed at Coffer's
// Vault-compatible API: transparent encryption of InnoDB tables with keys
// kept in Coffer (docs/runbooks/mariadb-tde.md).

const mariadbPlugin = "/usr/lib/mysql/plugin/hashicorp_key_management.so"

// requireMariaDB finds mariadbd and the plugin: under CI a missing one fails
// the test with what to install; elsewhere the test is skipped.
func requireMariaDB(t *testing.T) {
	t.Helper()
	var missing []string
	for _, bin := range []string{"mariadbd", "mariadb-install-db", "mariadb"} {
		if _, err := exec.LookPath(bin); err != nil {
			if _, err := os.Stat("/usr/sbin/" + bin); err != nil {
				missing = append(missing, bin)
			}
		}
	}
	if _, err := os.Stat(mariadbPlugin); err != nil {
		missing = append(missing, mariadbPlugin)
	}
	if len(missing) == 0 {
		return
	}
	testutil.Unavailable(t, "MariaDB end-to-end test needs %v: apt-get install -y mariadb-server mariadb-plugin-hashicorp-key-management", missing)
}

func mariadbBin(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	return "/usr/sbin/" + name
}

// mariadb is one mariadbd process on 127.0.0.1 with a temporary datadir.
type mariadb struct {
	t       *testing.T
	dir     string
	datadir string
	sock    string
	cnf     string
	errLog  string
	port    int
	cmd     *exec.Cmd
	exited  chan error
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// newMariaDB writes a server config whose key plugin uses Coffer at
// vaultURL (".../v1/<mount>") with token and caFile, and creates the datadir.
func newMariaDB(t *testing.T, dir, vaultURL, token, caFile string) *mariadb {
	t.Helper()
	m := &mariadb{t: t, dir: dir, datadir: filepath.Join(dir, "data"), sock: filepath.Join(dir, "mysqld.sock"),
		cnf: filepath.Join(dir, "my.cnf"), errLog: filepath.Join(dir, "error.log"), port: freePort(t)}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	m.writeConfig(vaultURL, token, caFile)
	out, err := exec.Command(mariadbBin("mariadb-install-db"), "--defaults-file="+m.cnf, "--user=root",
		"--auth-root-authentication-method=socket", "--skip-test-db").CombinedOutput()
	if err != nil {
		t.Fatalf("mariadb-install-db: %v\n%s", err, out)
	}
	t.Cleanup(m.stop)
	return m
}

// writeConfig writes my.cnf; every plugin option is set (cache timeouts
// short, so that a key rotated in Coffer is seen within a second).
func (m *mariadb) writeConfig(vaultURL, token, caFile string) {
	cnf := fmt.Sprintf(`[mariadbd]
datadir=%s
socket=%s
port=%d
bind-address=127.0.0.1
pid-file=%s
log-error=%s
user=root
skip-name-resolve
innodb_buffer_pool_size=32M
innodb_log_file_size=16M
plugin-load-add=hashicorp_key_management
hashicorp-key-management-vault-url=%s
hashicorp-key-management-token=%s
hashicorp-key-management-vault-ca=%s
hashicorp-key-management-timeout=15
hashicorp-key-management-max-retries=3
hashicorp-key-management-caching-enabled=on
hashicorp-key-management-cache-timeout=500
hashicorp-key-management-cache-version-timeout=500
hashicorp-key-management-use-cache-on-timeout=off
hashicorp-key-management-check-kv-version=on
innodb_encryption_threads=1
innodb_encryption_rotate_key_age=1
innodb_encryption_rotation_iops=10000

[mariadb-client]
socket=%s
user=root
`, m.datadir, m.sock, m.port, filepath.Join(m.dir, "mariadbd.pid"), m.errLog, vaultURL, token, caFile, m.sock)
	if err := os.WriteFile(m.cnf, []byte(cnf), 0o600); err != nil {
		m.t.Fatal(err)
	}
}

// start runs mariadbd and waits until it answers; a start-up failure fails
// the test with the error log.
func (m *mariadb) start() {
	m.t.Helper()
	if err := m.tryStart(); err != nil {
		m.t.Fatal(err)
	}
}

func (m *mariadb) tryStart() error {
	m.cmd = exec.Command(mariadbBin("mariadbd"), "--defaults-file="+m.cnf)
	var out bytes.Buffer
	m.cmd.Stdout, m.cmd.Stderr = &out, &out
	if err := m.cmd.Start(); err != nil {
		return err
	}
	m.exited = make(chan error, 1)
	go func(c *exec.Cmd, ch chan error) { ch <- c.Wait() }(m.cmd, m.exited)
	var exited error
	err := testutil.Poll(60*time.Second, func() error {
		_, err := m.query("SELECT 1")
		if err == nil {
			return nil
		}
		select {
		case exited = <-m.exited:
			m.cmd = nil
			return nil
		default:
		}
		return err
	})
	switch {
	case m.cmd == nil:
		return fmt.Errorf("mariadbd exited during start: %v\n%s\n%s", exited, out.String(), m.log())
	case err != nil:
		return fmt.Errorf("mariadbd did not start: %w\n%s", err, m.log())
	}
	return nil
}

func (m *mariadb) log() string {
	b, _ := os.ReadFile(m.errLog)
	return string(b)
}

// stop ends mariadbd by its pid (SIGTERM: a clean shutdown) and waits.
func (m *mariadb) stop() {
	if m.cmd == nil || m.cmd.Process == nil {
		return
	}
	select {
	case <-m.exited:
	default:
		m.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-m.exited:
		case <-time.After(60 * time.Second):
			m.cmd.Process.Kill()
			<-m.exited
		}
	}
	m.cmd = nil
}

// query runs SQL through the mariadb client on the socket (as root, socket
// authentication) and returns the tab-separated rows.
func (m *mariadb) query(sql string) (string, error) {
	cmd := exec.Command(mariadbBin("mariadb"), "--defaults-file="+m.cnf, "-N", "-B", "-e", sql)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%v: %s", err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

func (m *mariadb) mustQuery(sql string) string {
	m.t.Helper()
	out, err := m.query(sql)
	if err != nil {
		m.t.Fatalf("%s: %v\n%s", sql, err, m.log())
	}
	return out
}

// keyVersion is CURRENT_KEY_VERSION of table test.<name>.
func (m *mariadb) keyVersion(table string) string {
	m.t.Helper()
	return m.mustQuery(fmt.Sprintf("SELECT CURRENT_KEY_VERSION FROM information_schema.INNODB_TABLESPACES_ENCRYPTION WHERE NAME='tde/%s'", table))
}

// vaultCall sends a request to Coffer's /v1 API over TLS with the CA.
func vaultCall(t *testing.T, n *node, token, method, path string, body any) (int, map[string]any) {
	t.Helper()
	pem, err := os.ReadFile(n.caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	hc := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, n.url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Vault-Token", token)
	res, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var out map[string]any
	b, _ := io.ReadAll(res.Body)
	if len(b) > 0 {
		json.Unmarshal(b, &out)
	}
	return res.StatusCode, out
}

// mariadbSetup is a Coffer node with wallet "mariadb" mounted as KV v2 at
// /v1/mariadb, an endpoint "db1" with read on it, key 1 generated by
// Coffer (a symmetric key) and key 2 written through the KV API as hex.
type mariadbSetup struct {
	n       *node
	epToken string
	key1ID  string
}

func setupCofferForMariaDB(t *testing.T, n *node) mariadbSetup {
	t.Helper()
	ctx := context.Background()
	c := n.https()
	if _, err := c.CreateWallet(ctx, "mariadb", "MariaDB TDE keys"); err != nil {
		t.Fatal(err)
	}
	if st, body := vaultCall(t, n, n.token, "POST", "/v1/sys/mounts/mariadb", map[string]any{"type": "kv", "options": map[string]string{"version": "2"}}); st != 204 {
		t.Fatalf("mount: %d %v", st, body)
	}
	e, err := c.EnrollEndpoint(ctx, client.EnrollRequest{Name: "db1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Grant(ctx, "mariadb", "db1", "read"); err != nil {
		t.Fatal(err)
	}
	k1, err := c.CreateObject(ctx, client.CreateObjectRequest{Wallet: "mariadb", Name: "1", Type: "symmetric_key", Algorithm: "AES", Length: 256})
	if err != nil {
		t.Fatal(err)
	}
	writeHexKey(t, n, "2")
	return mariadbSetup{n: n, epToken: e.Token, key1ID: k1.ID}
}

// writeHexKey writes a fresh random AES-256 key as the next version of KV
// key id through the Vault API (as an operator would with curl or vault kv put).
func writeHexKey(t *testing.T, n *node, id string) float64 {
	t.Helper()
	k := make([]byte, 32)
	rand.Read(k)
	st, body := vaultCall(t, n, n.token, "POST", "/v1/mariadb/data/"+id, map[string]any{"data": map[string]string{"data": hex.EncodeToString(k)}})
	if st != 200 {
		t.Fatalf("write key %s: %d %v", id, st, body)
	}
	return body["data"].(map[string]any)["version"].(float64)
}

// createTables makes two encrypted tables (keys 1 and 2) with rows.
func createTables(t *testing.T, m *mariadb, rows int) {
	t.Helper()
	m.mustQuery("CREATE DATABASE tde")
	for _, tk := range [][2]string{{"t1", "1"}, {"t2", "2"}} {
		m.mustQuery(fmt.Sprintf("CREATE TABLE tde.%s (id INT PRIMARY KEY, v VARCHAR(64)) ENGINE=InnoDB ENCRYPTED=YES ENCRYPTION_KEY_ID=%s", tk[0], tk[1]))
		var sb strings.Builder
		for i := 1; i <= rows; i++ {
			if i > 1 {
				sb.WriteString(",")
			}
			fmt.Fprintf(&sb, "(%d,'%s-row-%d')", i, tk[0], i)
		}
		m.mustQuery(fmt.Sprintf("INSERT INTO tde.%s VALUES %s", tk[0], sb.String()))
	}
}

// checkRows reads every row of both tables back.
func checkRows(t *testing.T, m *mariadb, rows int) {
	t.Helper()
	for _, tbl := range []string{"t1", "t2"} {
		out := m.mustQuery(fmt.Sprintf("SELECT id, v FROM tde.%s ORDER BY id", tbl))
		lines := strings.Split(out, "\n")
		if len(lines) != rows {
			t.Fatalf("%s: %d rows, want %d", tbl, len(lines), rows)
		}
		for i, l := range lines {
			if want := fmt.Sprintf("%d\t%s-row-%d", i+1, tbl, i+1); l != want {
				t.Fatalf("%s row %d: %q, want %q", tbl, i+1, l, want)
			}
		}
	}
}

// waitKeyVersion waits for MariaDB's key rotation threads to re-encrypt
// test.<table> with key version want (rotate_key_age 1).
func waitKeyVersion(t *testing.T, m *mariadb, table, want string) {
	t.Helper()
	if err := testutil.Poll(90*time.Second, func() error {
		if got := m.keyVersion(table); got != want {
			return fmt.Errorf("table %s at key version %q, want %s", table, got, want)
		}
		return nil
	}); err != nil {
		t.Fatalf("%v\n%s", err, m.log())
	}
}

const mariadbRows = 200

// TestMariaDBTDE: MariaDB encrypts InnoDB tables with keys from Coffer,
// follows key rotations, and reads everything back after a restart.
func TestMariaDBTDE(t *testing.T) {
	requireMariaDB(t)
	base := t.TempDir()
	n := initialisedNode(t, filepath.Join(base, "coffer"), "")
	s := setupCofferForMariaDB(t, n)
	m := newMariaDB(t, filepath.Join(base, "mariadb"), n.url+"/v1/mariadb", s.epToken, n.caFile)
	m.start()
	// The plugin's start-up check (sys/mounts/mariadb/tune, KV version 2) passed.
	if got := m.mustQuery("SELECT PLUGIN_STATUS FROM information_schema.PLUGINS WHERE PLUGIN_NAME='hashicorp_key_management'"); got != "ACTIVE" {
		t.Fatalf("plugin status %q\n%s", got, m.log())
	}
	createTables(t, m, mariadbRows)
	if v1, v2 := m.keyVersion("t1"), m.keyVersion("t2"); v1 != "1" || v2 != "1" {
		t.Fatalf("key versions after create: t1 %q t2 %q", v1, v2)
	}

	// A key Coffer does not have: MariaDB's own clear error, no table.
	_, err := m.query("CREATE TABLE tde.t9 (id INT) ENGINE=InnoDB ENCRYPTED=YES ENCRYPTION_KEY_ID=9")
	if err == nil {
		t.Fatal("a table with a missing key id was created")
	}
	if !strings.Contains(err.Error(), "Can't create table `tde`.`t9`") || !strings.Contains(err.Error(), "Wrong create options") {
		t.Fatalf("missing key error: %v", err)
	}
	if !strings.Contains(m.log(), "Key not found (key id: 9)") {
		t.Fatalf("MariaDB's log does not name the missing key:\n%s", m.log())
	}
	if got := m.mustQuery("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA='tde' AND TABLE_NAME='t9'"); got != "0" {
		t.Fatalf("t9 exists: %s", got)
	}

	// Rotate both keys in Coffer: key 1 (generated) with the native API,
	// key 2 with a KV write. MariaDB's rotation threads re-encrypt with v2.
	if _, err := n.https().RotateObject(context.Background(), s.key1ID, nil); err != nil {
		t.Fatal(err)
	}
	if v := writeHexKey(t, n, "2"); v != 2 {
		t.Fatalf("key 2 version %v", v)
	}
	waitKeyVersion(t, m, "t1", "2")
	waitKeyVersion(t, m, "t2", "2")
	m.mustQuery("INSERT INTO tde.t1 VALUES (1000, 'after-rotation')")
	m.mustQuery("DELETE FROM tde.t1 WHERE id = 1000")
	// ALTER TABLE ... FORCE rebuilds with the latest version too.
	if v := writeHexKey(t, n, "2"); v != 3 {
		t.Fatalf("key 2 version %v", v)
	}
	time.Sleep(time.Second) // the plugin's version cache (500 ms)
	m.mustQuery("ALTER TABLE tde.t2 FORCE")
	if got := m.keyVersion("t2"); got != "3" {
		t.Fatalf("t2 after ALTER TABLE FORCE: key version %q, want 3", got)
	}

	// Restart MariaDB: every row reads back (keys fetched again from Coffer).
	m.stop()
	m.start()
	checkRows(t, m, mariadbRows)

	// Coffer restarts too (auto-open): MariaDB keeps reading after its cache expires.
	n.stop()
	n.start()
	n.waitState("open")
	m.stop()
	m.writeConfig(n.url+"/v1/mariadb", s.epToken, n.caFile) // a new port
	m.start()
	checkRows(t, m, mariadbRows)

	// The endpoint's token never appears in Coffer's logs.
	if strings.Contains(n.logs.String(), s.epToken) {
		t.Fatal("the endpoint token is in Coffer's log")
	}
}

// TestMariaDBBadToken: a token Coffer does not know makes the plugin's
// start-up check fail, and MariaDB says so.
func TestMariaDBBadToken(t *testing.T) {
	requireMariaDB(t)
	base := t.TempDir()
	n := initialisedNode(t, filepath.Join(base, "coffer"), "")
	setupCofferForMariaDB(t, n)
	m := newMariaDB(t, filepath.Join(base, "mariadb"), n.url+"/v1/mariadb", "cof_not-a-valid-token", n.caFile)
	err := m.tryStart()
	if err == nil {
		// The server may start with the plugin disabled: it must not be ACTIVE.
		if got, _ := m.query("SELECT PLUGIN_STATUS FROM information_schema.PLUGINS WHERE PLUGIN_NAME='hashicorp_key_management'"); got == "ACTIVE" {
			t.Fatal("the plugin is active with an invalid token")
		}
	}
	if log := m.log(); !strings.Contains(log, "Hashicorp server error: 403") || !strings.Contains(log, "sys/mounts/mariadb/tune") ||
		!strings.Contains(log, "Plugin 'hashicorp_key_management' init function returned error") {
		t.Fatalf("MariaDB's log does not name the key plugin's failure:\n%s", m.log())
	}
	if strings.Contains(n.logs.String(), "cof_not-a-valid-token") {
		t.Fatal("a presented token is in Coffer's log")
	}
}

// TestMariaDBAfterCofferRestore: take a Coffer backup, stop Coffer, delete
// its data dir, restore it with coffer restore, start it, restart MariaDB
// and read every row again.
func TestMariaDBAfterCofferRestore(t *testing.T) {
	requireMariaDB(t)
	base := t.TempDir()
	dataDir := filepath.Join(base, "coffer")
	target := filepath.Join(base, "nas")
	n := initialisedNode(t, dataDir, "backup:\n  check_interval: 1h\n")
	s := setupCofferForMariaDB(t, n)
	m := newMariaDB(t, filepath.Join(base, "mariadb"), n.url+"/v1/mariadb", s.epToken, n.caFile)
	m.start()
	createTables(t, m, mariadbRows)
	if _, err := n.https().RotateObject(context.Background(), s.key1ID, nil); err != nil {
		t.Fatal(err)
	}
	waitKeyVersion(t, m, "t1", "2")

	ctx := context.Background()
	c := n.https()
	const recovery = "e2e-recovery-passphrase"
	if _, err := c.SetRecoveryPassphrase(ctx, "", recovery); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddDestination(ctx, client.DestinationConfig{Name: "nas", Kind: "dir", Path: target}); err != nil {
		t.Fatal(err)
	}
	if rec, err := c.RunBackup(ctx, "nas", "full", true); err != nil || rec.Status != "DONE" {
		t.Fatalf("backup: %+v %v", rec, err)
	}
	// MariaDB stops first (it holds keys in its cache); then Coffer, whose data dir is lost.
	m.stop()
	n.stop()
	caPEM, err := os.ReadFile(n.caFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(dataDir); err != nil {
		t.Fatal(err)
	}

	rpFile := filepath.Join(base, "recovery.txt")
	ksFile := filepath.Join(base, "keystore.txt")
	os.WriteFile(rpFile, []byte(recovery), 0o600)
	os.WriteFile(ksFile, []byte(testPassphrase), 0o600)
	out, err := coffer(t, nil, "restore", "--from", target, "--data-dir", dataDir, "--recovery-passphrase-file", rpFile, "--passphrase-file", ksFile)
	if err != nil {
		t.Fatalf("coffer restore: %v\n%s", err, out)
	}
	n.start()
	if _, err := n.local().Health(ctx); err != nil {
		t.Fatal(err)
	}
	if h, _ := n.local().Health(ctx); h.State != "open" {
		if err := n.local().Open(ctx, testPassphrase); err != nil {
			t.Fatalf("open the restored keystore: %v\n%s", err, n.logs)
		}
	}
	n.waitState("open")
	// The restored node serves the same CA (MariaDB's vault_ca) on a new port.
	if got, _ := os.ReadFile(n.caFile); !bytes.Equal(got, caPEM) {
		t.Fatal("the restored node's CA differs from the one MariaDB trusts")
	}
	m.writeConfig(n.url+"/v1/mariadb", s.epToken, n.caFile)
	m.start()
	checkRows(t, m, mariadbRows)
	if got := m.keyVersion("t1"); got != "2" {
		t.Fatalf("t1 key version after restore: %q", got)
	}
}
