package cli

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func isolateEnv(t *testing.T) {
	for _, k := range []string{"COFFER_ADDR", "COFFER_DATA_DIR", "COFFER_CLIENT_DIR", "COFFER_RETRY_TIMEOUT"} {
		t.Setenv(k, "")
	}
	t.Setenv("COFFER_TOKEN", "cof_test")
	t.Setenv("COFFER_TOKEN_FILE", "/nonexistent")
}

// TestOutcomeUnknownExitStatus: a write whose outcome is unknown is not
// sent to the next address; the command says what it means and exits 3.
func TestOutcomeUnknownExitStatus(t *testing.T) {
	isolateEnv(t)
	first := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(503)
		json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": "outcome_unknown",
			"message": "outcome unknown: the write may or may not have been applied: the leadership was lost while this write was being committed"}})
	}))
	defer first.Close()
	var second atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { second.Add(1) }))
	defer other.Close()
	t.Setenv("COFFER_ADDR", first.URL+","+other.URL)
	code, _, stderr := run("wallet", "create", "w1")
	if code != ExitOutcomeUnknown || !strings.Contains(stderr, "outcome unknown") || !strings.Contains(stderr, "before running the command again") {
		t.Fatalf("exit %d, stderr %q; want %d and what it means", code, stderr, ExitOutcomeUnknown)
	}
	if second.Load() != 0 {
		t.Fatalf("the write was sent again to the next address")
	}
	// Any other failure still exits 1.
	refusing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(409)
		w.Write([]byte(`{"error":{"code":"conflict","message":"wallet w1 exists"}}`))
	}))
	defer refusing.Close()
	t.Setenv("COFFER_ADDR", refusing.URL)
	if code, _, stderr := run("wallet", "create", "w1"); code != 1 || !strings.Contains(stderr, "exists") {
		t.Fatalf("a plain failure exits %d (%q), want 1", code, stderr)
	}
}

func TestRetryTimeoutSetting(t *testing.T) {
	isolateEnv(t)
	g := &globals{address: "https://kms:8200"}
	if cn, err := g.resolve(); err != nil || cn.cfg.RetryTimeout != 0 {
		t.Fatalf("default: %v %v (want 0: the client's default)", cn.cfg.RetryTimeout, err)
	}
	t.Setenv("COFFER_RETRY_TIMEOUT", "45s")
	if cn, err := g.resolve(); err != nil || cn.cfg.RetryTimeout != 45*time.Second {
		t.Fatalf("from the environment: %v %v", cn.cfg.RetryTimeout, err)
	}
	g.retryTimeout = 2 * time.Minute
	if cn, err := g.resolve(); err != nil || cn.cfg.RetryTimeout != 2*time.Minute {
		t.Fatalf("the flag must win: %v %v", cn.cfg.RetryTimeout, err)
	}
	g.retryTimeout = 0
	t.Setenv("COFFER_RETRY_TIMEOUT", "soon")
	if code, _, stderr := run("wallet", "list", "--address", "https://kms:8200"); code != 1 || !strings.Contains(stderr, `COFFER_RETRY_TIMEOUT="soon"`) {
		t.Fatalf("bad COFFER_RETRY_TIMEOUT: exit %d, %q", code, stderr)
	}
	t.Setenv("COFFER_RETRY_TIMEOUT", "")
	if code, _, stderr := run("wallet", "list", "--address", "https://kms:8200", "--retry-timeout", "-1s"); code != 1 || !strings.Contains(stderr, "--retry-timeout") {
		t.Fatalf("negative --retry-timeout: exit %d, %q", code, stderr)
	}
}
