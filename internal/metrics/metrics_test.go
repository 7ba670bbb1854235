package metrics

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/api/rest"
	"github.com/coffer-kms/coffer/internal/keystore"
	"github.com/coffer-kms/coffer/internal/service"
)

func scrape(t *testing.T) string {
	t.Helper()
	svc, err := service.New(service.Config{DataDir: t.TempDir(), KDF: keystore.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1},
		MachineIdentity: func() ([]byte, error) { return []byte("m"), nil }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	tok, err := svc.Init(context.Background(), service.LocalRoot(), []byte("metrics-test-passphrase"))
	if err != nil {
		t.Fatal(err)
	}
	m := New(svc)
	h := rest.Handler(svc, rest.Options{Metrics: m})
	for i, p := range []string{"/api/v1/sys/health", "/api/v1/objects", "/api/v1/objects/nope", "/api/v1/x", "/api/v1/y"} {
		method := "GET"
		if i >= 3 {
			method = strings.Repeat("X", 1000+i) // made-up methods must not mint series
		}
		req := httptest.NewRequest(method, p, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		h.ServeHTTP(httptest.NewRecorder(), req)
	}
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("metrics: %d", rec.Code)
	}
	return rec.Body.String()
}

func TestMetricsContent(t *testing.T) {
	out := scrape(t)
	for _, want := range []string{
		`coffer_requests_total{code="200",method="GET",route="/api/v1/sys/health",transport="rest"} 1`,
		`coffer_requests_total{code="404",method="GET",route="/api/v1/objects/{id}",transport="rest"} 1`,
		`coffer_request_duration_seconds_bucket{method="GET",route="/api/v1/objects",transport="rest",le="+Inf"} 1`,
		`coffer_keystore_state{state="open"} 1`,
		`coffer_keystore_state{state="sealed"} 0`,
		`coffer_raft_state{state="leader"} 1`,
		`coffer_writable 1`,
		`coffer_journal_last_index `,
		`coffer_audit_records 4`, // health is not audited
	} {
		if !strings.Contains(out, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if strings.Contains(out, "XXXX") || !strings.Contains(out, `method="other",route="/api/v1/"`) {
		t.Error("a made-up method became a label value")
	}
	if strings.Contains(out, "/api/v1/objects/nope") {
		t.Error("a request path (not its route pattern) leaked into a label")
	}
}

// TestPromtoolCheckMetrics runs Prometheus's own linter over the output.
func TestPromtoolCheckMetrics(t *testing.T) {
	path, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool not found: apt-get install prometheus (scripts/test.sh does)")
		}
		t.Skip("promtool not installed (apt-get install prometheus)")
	}
	cmd := exec.Command(path, "check", "metrics")
	cmd.Stdin = strings.NewReader(scrape(t))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	done := make(chan error, 1)
	go func() { done <- cmd.Run() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("promtool check metrics: %v\n%s", err, out.String())
		}
	case <-time.After(time.Minute):
		cmd.Process.Kill()
		t.Fatal("promtool did not finish")
	}
	if strings.TrimSpace(out.String()) != "" {
		t.Fatalf("promtool warnings:\n%s", out.String())
	}
}
