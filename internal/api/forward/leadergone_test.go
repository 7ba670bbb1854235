package forward

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// forwardOnce sends a write to a follower whose leader is at leader and
// returns the status and the body.
func forwardOnce(t *testing.T, leader, path string) (int, string) {
	t.Helper()
	h := Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("a write on a follower was served locally")
	}), &fakeCluster{leaderURL: leader, caughtUp: true}, Options{})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", path, strings.NewReader(`{"value":"x"}`)))
	return rec.Code, rec.Body.String()
}

func errCode(t *testing.T, body string) string {
	t.Helper()
	var b struct{ Error struct{ Code string } }
	if err := json.Unmarshal([]byte(body), &b); err != nil {
		t.Fatalf("body %q: %v", body, err)
	}
	return b.Error.Code
}

// TestForwardLeaderGone: a leader that refuses the connection never got
// the write (not applied: not_leader); one that took the request and
// dropped the connection may have applied it (outcome_unknown), in both
// API shapes.
func TestForwardLeaderGone(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	status, body := forwardOnce(t, dead, "/api/v1/wallets/default/secrets/k")
	if status != http.StatusServiceUnavailable || errCode(t, body) != "not_leader" {
		t.Errorf("leader refused the connection: got %d %s, want 503 not_leader", status, body)
	}

	dropping := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // the request arrived whole
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
	}))
	defer dropping.Close()
	status, body = forwardOnce(t, dropping.URL, "/api/v1/wallets/default/secrets/k")
	if status != http.StatusServiceUnavailable || errCode(t, body) != "outcome_unknown" {
		t.Errorf("leader dropped the connection: got %d %s, want 503 outcome_unknown", status, body)
	}
	status, body = forwardOnce(t, dropping.URL, "/v1/secret/data/k")
	if status != http.StatusServiceUnavailable || !strings.Contains(body, "outcome unknown") {
		t.Errorf("leader dropped the connection (Vault API): got %d %s, want 503 saying outcome unknown", status, body)
	}
}
