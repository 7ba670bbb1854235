package metrics

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/api/rest"
	"github.com/coffer-kms/coffer/internal/service"
	"github.com/coffer-kms/coffer/internal/service/servicetest"
	"github.com/coffer-kms/coffer/internal/testutil"
)

func scrape(t *testing.T) string {
	t.Helper()
	svc := servicetest.New(t)
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
		testutil.Unavailable(t, "promtool not found: apt-get install prometheus (scripts/test.sh does)")
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

// flakyWriter fails every other write and blocks writes while gate is
// closed (a stuck syslog daemon).
type flakyWriter struct {
	mu   sync.Mutex
	n    int
	gate chan struct{}
}

func (w *flakyWriter) Write(p []byte) (int, error) {
	<-w.gate
	w.mu.Lock()
	defer w.mu.Unlock()
	w.n++
	if w.n%2 == 0 {
		return 0, errors.New("syslog daemon gone")
	}
	return len(p), nil
}

// TestAuditMirrorCounters: the syslog mirror's sent, failed and dropped
// lines are exported; without a mirror the series are absent.
func TestAuditMirrorCounters(t *testing.T) {
	if out := scrape(t); strings.Contains(out, "coffer_audit_syslog_lines_total") {
		t.Fatal("mirror counters exported without a mirror")
	}
	w := &flakyWriter{gate: make(chan struct{})}
	svc := servicetest.New(t, func(c *service.Config) { c.AuditSyslog = w })
	m := New(svc)
	get := func(outcome string) float64 {
		t.Helper()
		fams, err := m.Registry().Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fams {
			if f.GetName() != "coffer_audit_syslog_lines_total" {
				continue
			}
			for _, mt := range f.GetMetric() {
				if mt.GetLabel()[0].GetValue() == outcome {
					return mt.GetCounter().GetValue()
				}
			}
		}
		t.Fatalf("no coffer_audit_syslog_lines_total{outcome=%q}", outcome)
		return 0
	}
	// The writer is stuck: past the mirror's queue, lines are dropped.
	call := &service.Call{Identity: service.LocalRoot(), Transport: "internal", Start: time.Now()}
	const records = 5000
	for range records {
		svc.Audit(call, "test", 200, "ok", "")
	}
	dropped := get("dropped")
	if dropped == 0 {
		t.Fatalf("no line dropped after %d records to a stuck mirror", records)
	}
	close(w.gate)
	testutil.WaitFor(t, time.Minute, "every record to be counted", func() error {
		if n := get("sent") + get("failed") + dropped; n < records {
			return fmt.Errorf("mirror counters sent %v failed %v dropped %v, want %d in all", get("sent"), get("failed"), dropped, records)
		}
		return nil
	})
	if get("sent") == 0 || get("failed") == 0 || get("dropped") != dropped {
		t.Fatalf("sent %v failed %v dropped %v", get("sent"), get("failed"), get("dropped"))
	}
}

// TestObserveRequestCounts: repeated requests of one series add to it (the
// series found once and kept), other codes make their own.
func TestObserveRequestCounts(t *testing.T) {
	m := New(servicetest.New(t))
	for range 3 {
		m.ObserveRequest("vault", "kv.read", "GET", 200, time.Millisecond)
	}
	m.ObserveRequest("vault", "kv.read", "GET", 404, 2*time.Second)
	m.ObserveRequest("vault", "kv.write", "PUT", 200, time.Millisecond)
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	out := rec.Body.String()
	for _, want := range []string{
		`coffer_requests_total{code="200",method="GET",route="kv.read",transport="vault"} 3`,
		`coffer_requests_total{code="404",method="GET",route="kv.read",transport="vault"} 1`,
		`coffer_requests_total{code="200",method="PUT",route="kv.write",transport="vault"} 1`,
		`coffer_request_duration_seconds_count{method="GET",route="kv.read",transport="vault"} 4`,
		`coffer_request_duration_seconds_bucket{method="GET",route="kv.read",transport="vault",le="0.001"} 3`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}
