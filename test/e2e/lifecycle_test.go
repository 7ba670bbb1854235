package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/client"
	"github.com/coffer-kms/coffer/internal/testutil"
)

// healthCode fetches /api/v1/sys/health over TLS and returns the status code.
func healthCode(t *testing.T, n *node) int {
	t.Helper()
	pem, err := os.ReadFile(n.caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := hc.Get(n.url + "/api/v1/sys/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestLifecycle: uninitialised (501) → open (200) → sealed (503) → open;
// restarts come up sealed without auto-open and open with it.
func TestLifecycle(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	n := newNode(t, dir, "")
	n.start()
	defer n.stop()
	if !strings.HasPrefix(n.url, "https://") {
		t.Fatalf("TLS must be on by default, url %s", n.url)
	}
	if got := healthCode(t, n); got != 501 {
		t.Fatalf("uninitialised health = %d, want 501", got)
	}
	ctx := context.Background()
	if _, err := n.local().Init(ctx, "short"); !client.IsCode(err, "invalid_passphrase") {
		t.Fatalf("7-byte passphrase: %v", err)
	}
	tok, err := n.local().Init(ctx, testPassphrase)
	if err != nil {
		t.Fatal(err)
	}
	n.token = tok
	if got := healthCode(t, n); got != 200 {
		t.Fatalf("open health = %d", got)
	}
	c := n.https()
	if _, err := c.PutSecret(ctx, "default", "tde/master", []byte("k1")); err != nil {
		t.Fatal(err)
	}
	// Unauthenticated and wrong tokens are refused.
	bad, _ := client.New(client.Config{Addresses: []string{n.url}, CACert: n.caFile, Token: "cof_wrong"})
	if _, err := bad.GetSecret(ctx, "default", "tde/master", 0); !client.IsCode(err, "unauthenticated") {
		t.Fatalf("wrong token: %v", err)
	}
	if err := c.Open(ctx, testPassphrase); !client.IsCode(err, "already_open") {
		t.Fatalf("open twice: %v", err)
	}
	if err := c.Seal(ctx); err != nil {
		t.Fatal(err)
	}
	if got := healthCode(t, n); got != 503 {
		t.Fatalf("sealed health = %d", got)
	}
	if _, err := c.GetSecret(ctx, "default", "tde/master", 0); !client.IsCode(err, "sealed") {
		t.Fatalf("read while sealed: %v", err)
	}
	if err := c.Open(ctx, "wrong-passphrase!"); !client.IsCode(err, "wrong_passphrase") {
		t.Fatalf("wrong passphrase: %v", err)
	}
	if err := c.Open(ctx, testPassphrase); err != nil {
		t.Fatal(err)
	}
	// Rotation and passphrase change keep data readable.
	gen, err := c.RotateMasterKey(ctx)
	if err != nil || gen != 2 {
		t.Fatalf("rotate: gen %d, %v", gen, err)
	}
	if _, err := c.RotateDataKey(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PutSecret(ctx, "default", "tde/master", []byte("k2")); err != nil {
		t.Fatal(err)
	}
	if err := c.ChangePassphrase(ctx, testPassphrase, testPassphrase+"-new"); err != nil {
		t.Fatal(err)
	}
	// Restart without auto-open: sealed; the old passphrase no longer opens.
	n.signal(syscall.SIGTERM)
	if code := n.waitExit(20 * time.Second); code != 0 {
		t.Fatalf("smart stop exit code %d\n%s", code, n.logs)
	}
	n.start()
	n.waitState("sealed")
	if err := n.local().Open(ctx, testPassphrase); !client.IsCode(err, "wrong_passphrase") {
		t.Fatalf("old passphrase after change: %v", err)
	}
	if err := n.local().Open(ctx, testPassphrase+"-new"); err != nil {
		t.Fatal(err)
	}
	for v, want := range map[uint64]string{1: "k1", 2: "k2"} {
		s, err := n.https().GetSecret(ctx, "default", "tde/master", v)
		if err != nil || string(s.Value) != want {
			t.Fatalf("version %d after rotation+restart: %q %v", v, s.Value, err)
		}
	}
	st, _ := n.local().Status(ctx)
	if st.KeystoreGeneration != 2 || st.PID != n.cmd.Process.Pid || st.DataDir != dir {
		t.Fatalf("status: %+v", st)
	}
	// Auto-open: restart opens by itself; rotation keeps it working.
	if err := n.local().SetAutoOpen(ctx, true); err != nil {
		t.Fatal(err)
	}
	if _, err := n.local().RotateMasterKey(ctx); err != nil {
		t.Fatal(err)
	}
	n.signal(syscall.SIGINT)
	if code := n.waitExit(20 * time.Second); code != 0 {
		t.Fatalf("fast stop exit code %d", code)
	}
	n.start()
	n.waitState("open")
	if st, _ := n.local().Status(ctx); st.KeystoreGeneration != 3 || !st.AutoOpen {
		t.Fatalf("after auto-open restart: %+v", st)
	}
	// Immediate stop exits at once; the next start recovers.
	if _, err := n.https().PutSecret(ctx, "default", "after-immediate", []byte("x")); err != nil {
		t.Fatal(err)
	}
	n.signal(syscall.SIGQUIT)
	if code := n.waitExit(10 * time.Second); code != 3 {
		t.Fatalf("immediate stop exit code %d", code)
	}
	n.start()
	n.waitState("open")
	if s, err := n.https().GetSecret(ctx, "default", "after-immediate", 0); err != nil || string(s.Value) != "x" {
		t.Fatalf("after immediate stop: %v", err)
	}
	// coffer stop -m fast --data-dir signals by pid and waits.
	out, err := coffer(t, nil, "stop", "-m", "fast", "--data-dir", dir)
	if err != nil || !strings.Contains(out, "stopped") {
		t.Fatalf("coffer stop: %v\n%s", err, out)
	}
	n.waitExit(5 * time.Second)
	assertNoSecret(t, n.logs.String(), n.token)
}

// TestSIGUSR2RotatesJournal: SIGUSR2 closes the open segment and starts a new one.
func TestSIGUSR2RotatesJournal(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	n := initialisedNode(t, dir, "")
	ctx := context.Background()
	if _, err := n.https().PutSecret(ctx, "default", "a", []byte("1")); err != nil {
		t.Fatal(err)
	}
	before, err := n.local().JournalSegments(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n.signal(syscall.SIGUSR2)
	testutil.WaitFor(t, 10*time.Second, "a new segment after SIGUSR2", func() error {
		after, _ := n.local().JournalSegments(ctx)
		if len(after) == len(before)+1 {
			if !after[len(after)-2].Closed || after[len(after)-1].Closed {
				t.Fatalf("after SIGUSR2: %+v", after)
			}
			return nil
		}
		return fmt.Errorf("%d segments before, %d now", len(before), len(after))
	})
	// A write goes into the new segment; the journal verifies across both.
	if _, err := n.https().PutSecret(ctx, "default", "b", []byte("2")); err != nil {
		t.Fatal(err)
	}
	n.stop()
	if out, err := coffer(t, nil, "journal", "verify", "--data-dir", dir); err != nil {
		t.Fatalf("verify: %v\n%s", err, out)
	}
	names, _ := filepath.Glob(filepath.Join(dir, "journal", "coffer-*.recovery"))
	if len(names) < 2 {
		t.Fatalf("segment files: %v", names)
	}
}
