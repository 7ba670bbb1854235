package e2e

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/testutil"
)

// TestDevQuickStart runs the README's first command (coffer dev), reads the
// printed URL, CA file and token, and uses them from the CLI.
func TestDevQuickStart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dev")
	envList, cmd, logs := startDev(t, dir)
	out, err := coffer(t, envList, "status")
	if err != nil || !strings.Contains(out, "open") {
		t.Fatalf("status with the printed environment: %v\n%s", err, out)
	}
	if out, err := coffer(t, envList, "secret", "put", "demo", "--value", "hello"); err != nil {
		t.Fatalf("put: %v\n%s", err, out)
	}
	if out, err := coffer(t, envList, "secret", "get", "demo"); err != nil || strings.TrimSpace(out) != "hello" {
		t.Fatalf("get: %v %q", err, out)
	}
	// Files holding secrets are 0600 and their directories 0700.
	for _, p := range []string{dir, filepath.Join(dir, "keystore"), filepath.Join(dir, "journal"), filepath.Join(dir, "tls")} {
		if st, err := os.Stat(p); err != nil || st.Mode().Perm() != 0o700 {
			t.Fatalf("%s: mode %v %v", p, st.Mode().Perm(), err)
		}
	}
	for _, p := range []string{"keystore/keystore.ks", "keystore/keystore.aks", "state.db", "raft/raft.db", "tls/server.key", "dev-passphrase", "dev-root-token"} {
		if st, err := os.Stat(filepath.Join(dir, p)); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: mode %v %v", p, st.Mode().Perm(), err)
		}
	}
	// The CA key is sealed in the state once the keystore is open.
	noCAKeyFile(t, dir)
	// Ctrl-C stops it; a second run reuses the data and auto-opens.
	cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("dev exit: %v\n%s", err, logs)
	}
	envList2, _, _ := startDev(t, dir)
	if envList2[2] != envList[2] {
		t.Fatal("dev restart printed a different root token")
	}
	envList[0] = envList2[0]
	if out, err := coffer(t, envList, "secret", "get", "demo"); err != nil || strings.TrimSpace(out) != "hello" {
		t.Fatalf("get after dev restart: %v %q", err, out)
	}
}

// TestSIGHUPReloadsCertificate: a new server certificate is served after SIGHUP
// without a restart; a broken one is refused and the old one stays.
func TestSIGHUPReloadsCertificate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	n := newNode(t, dir, "")
	n.start()
	defer n.stop()
	serial := func() *big.Int {
		pem, _ := os.ReadFile(n.caFile)
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		conn, err := tls.Dial("tcp", strings.TrimPrefix(n.url, "https://"), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber
	}
	before := serial()
	tlsDir := filepath.Join(dir, "tls")
	newSerial := issueServerCert(t, tlsDir)
	n.signal(syscall.SIGHUP)
	waitFor(t, 10*time.Second, func() bool { return serial().Cmp(newSerial) == 0 })
	if before.Cmp(newSerial) == 0 {
		t.Fatal("serials equal")
	}
	// A broken certificate file: the old one keeps being served.
	os.WriteFile(filepath.Join(tlsDir, "server.crt"), []byte("garbage"), 0o600)
	n.signal(syscall.SIGHUP)
	waitFor(t, 10*time.Second, func() bool { return strings.Contains(n.logs.String(), "TLS certificate not reloaded") })
	if serial().Cmp(newSerial) != 0 {
		t.Fatal("a broken certificate replaced the working one")
	}
}

func issueServerCert(t *testing.T, dir string) *big.Int {
	t.Helper()
	caPEM, _ := os.ReadFile(filepath.Join(dir, "ca.crt"))
	keyPEM, _ := os.ReadFile(filepath.Join(dir, "ca.key"))
	cb, _ := pem.Decode(caPEM)
	kb, _ := pem.Decode(keyPEM)
	ca, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	caKey, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial := big.NewInt(time.Now().UnixNano())
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: "reloaded"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: ca.IPAddresses, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	tmpl.IPAddresses = append(tmpl.IPAddresses, []byte{127, 0, 0, 1})
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalECPrivateKey(key)
	os.WriteFile(filepath.Join(dir, "server.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}), 0o600)
	os.WriteFile(filepath.Join(dir, "server.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	return serial
}

func waitFor(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	testutil.WaitFor(t, d, "the condition", func() error {
		if !cond() {
			return testutil.ErrNotYet
		}
		return nil
	})
}

// TestSmartStopUnderLoad: SIGTERM while clients write: the server exits 0,
// and every write it acknowledged is there after a restart.
func TestSmartStopUnderLoad(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	n := initialisedNode(t, dir, "")
	tok := n.token
	c := n.https()
	var mu sync.Mutex
	acked := map[string]string{}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				name := fmt.Sprintf("s-%d-%d", w, i)
				if _, err := c.PutSecret(ctx, "default", name, []byte(name)); err == nil {
					mu.Lock()
					acked[name] = name
					mu.Unlock()
				} else {
					return
				}
			}
		}(w)
	}
	testutil.WaitFor(t, 30*time.Second, "writes under way", func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(acked) < 20 {
			return fmt.Errorf("%d writes acknowledged", len(acked))
		}
		return nil
	})
	n.signal(syscall.SIGTERM)
	code := n.waitExit(30 * time.Second)
	cancel()
	wg.Wait()
	if code != 0 {
		t.Fatalf("smart stop exit code %d\n%s", code, n.logs)
	}
	if _, err := os.Stat(filepath.Join(dir, "coffer.pid")); !os.IsNotExist(err) {
		t.Fatal("pid file left after a clean stop")
	}
	n.start()
	n.token = tok
	n.waitState("open")
	verifyAll(t, n, acked)
	if len(acked) == 0 {
		t.Fatal("no write acknowledged")
	}
}

// startDev runs coffer dev on dir and returns the three exports it printed.
func startDev(t *testing.T, dir string, args ...string) ([]string, *exec.Cmd, *syncBuf) {
	t.Helper()
	cmd := exec.Command(cofferBin, append([]string{"dev", "--data-dir", dir, "--listen", "127.0.0.1:0"}, args...)...)
	stdout, _ := cmd.StdoutPipe()
	logs := &syncBuf{}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	re := regexp.MustCompile(`export (COFFER_\w+)=(\S+)`)
	sc := bufio.NewScanner(stdout)
	deadline := time.AfterFunc(60*time.Second, func() { cmd.Process.Kill() })
	defer deadline.Stop()
	for sc.Scan() && len(got) < 3 {
		fmt.Fprintln(logs, sc.Text()) // what dev printed, with its log
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			got[m[1]] = m[2]
		}
	}
	go io.Copy(io.Discard, stdout)
	if len(got) < 3 {
		cmd.Wait()
		t.Fatalf("dev did not print the three exports: %v\n%s", got, logs)
	}
	t.Cleanup(func() { cmd.Process.Signal(syscall.SIGINT); cmd.Wait() })
	return []string{"COFFER_ADDR=" + got["COFFER_ADDR"], "COFFER_CACERT=" + got["COFFER_CACERT"], "COFFER_TOKEN=" + got["COFFER_TOKEN"]}, cmd, logs
}

// TestDevAfterRestore follows the README's restore section on a dev server:
// back up to a destination, stop, restore over the dev data dir with
// --force (and into a new dir), check it, and run coffer dev again on it.
func TestDevAfterRestore(t *testing.T) {
	base := t.TempDir()
	dir, nas := filepath.Join(base, "dev"), filepath.Join(base, "nas")
	env, cmd, logs := startDev(t, dir)
	for _, args := range [][]string{
		{"backup", "destination", "add", "nas", "--type", "dir", "--path", nas, "--archiving"},
		{"secret", "put", "demo", "--value", "hello"},
		{"backup", "run", "--destination", "nas", "--full", "--wait"},
		{"restore-point", "create", "before-migration"},
		{"secret", "put", "demo", "--value", "changed"},
		{"journal", "archive", "now"},
	} {
		if out, err := coffer(t, env, args...); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	rp, _ := os.ReadFile(filepath.Join(dir, "dev-recovery-passphrase"))
	adminPass, err := os.ReadFile(filepath.Join(dir, "dev-admin-password"))
	if err != nil {
		t.Fatalf("dev admin password: %v", err)
	}
	rpFile, ksFile := filepath.Join(base, "rp"), filepath.Join(base, "ks")
	os.WriteFile(rpFile, rp, 0o600)
	os.WriteFile(ksFile, []byte("restored dev passphrase\n"), 0o600)
	cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("dev exit: %v\n%s", err, logs)
	}

	// The README: restore over the data dir to the restore point, check it.
	out, err := coffer(t, nil, "restore", "--from", nas, "--data-dir", dir, "--force", "--to-restore-point", "before-migration",
		"--recovery-passphrase-file", rpFile, "--passphrase-file", ksFile)
	if err != nil {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	if out, err := coffer(t, nil, "check", "--data-dir", dir, "--passphrase-file", ksFile); err != nil {
		t.Fatalf("check after the restore: %v\n%s", err, out)
	}
	// The console administrator is in the restored state: its password file
	// comes along, so coffer dev prints it again.
	if b, err := os.ReadFile(filepath.Join(dir, "dev-admin-password")); err != nil || string(b) != string(adminPass) {
		t.Fatalf("dev admin password after the restore: %v (kept the same: %v)", err, string(b) == string(adminPass))
	}
	// coffer dev works again, on the restored state.
	env, _, _ = startDev(t, dir)
	if out, err := coffer(t, env, "secret", "get", "demo"); err != nil || strings.TrimSpace(out) != "hello" {
		t.Fatalf("get after the restore: %v %q", err, out)
	}
	if out, err := coffer(t, env, "backup", "run", "--destination", "LOCAL", "--wait"); err != nil {
		t.Fatalf("LOCAL backup of the restored dev server: %v\n%s", err, out)
	}

	// Restored into a new dir: coffer dev opens it with the passphrase given
	// to the restore, and keeps it from then on.
	fresh := filepath.Join(base, "dev2")
	if out, err := coffer(t, nil, "restore", "--from", nas, "--data-dir", fresh, "--timeline", "1",
		"--recovery-passphrase-file", rpFile, "--passphrase-file", ksFile); err != nil {
		t.Fatalf("restore into a new dir: %v\n%s", err, out)
	}
	c := exec.Command(cofferBin, "dev", "--data-dir", fresh, "--listen", "127.0.0.1:0")
	if out, err := c.CombinedOutput(); err == nil || !strings.Contains(string(out), "--passphrase-file") {
		t.Fatalf("dev on a restored dir without its passphrase: %v\n%s", err, out)
	}
	env, _, logs = startDev(t, fresh, "--passphrase-file", ksFile)
	// A restore brings the console administrator (its password is the one
	// it had then) but not auto-open: dev says both as they are.
	printed := logs.String()
	if strings.Contains(printed, "no administrator") || !strings.Contains(printed, "user admin") {
		t.Fatalf("dev on a restored dir, console line:\n%s", printed)
	}
	if strings.Contains(printed, "auto-opens on this machine") || !strings.Contains(printed, "auto-open off") {
		t.Fatalf("dev on a restored dir, keystore line:\n%s", printed)
	}
	if out, err := coffer(t, env, "secret", "get", "demo"); err != nil || strings.TrimSpace(out) != "changed" {
		t.Fatalf("get on the second restore: %v %q", err, out)
	}
}
