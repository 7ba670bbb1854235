package forward

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestRelayPost: a relayed message reaches the leader with the node's id,
// the client's certificate and address, and the leader's answer and
// commit index come back.
func TestRelayPost(t *testing.T) {
	var got *http.Request
	var body string
	leader := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got, body = r, string(b)
		w.Header().Set(HeaderCommitIndex, "42")
		io.WriteString(w, "answer")
	}))
	defer leader.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r := NewRelay(&fakeCluster{leaderURL: leader.URL})
	b, commit, err := r.Post(ctx, leader.URL+"/", "/api/v1/sys/cluster/kmip", []byte("ttlv"), []byte("client-der"), "192.0.2.7:5696", 1<<10)
	if err != nil || string(b) != "answer" || commit != 42 {
		t.Fatalf("Post: %q %d %v, want the leader's answer and commit index 42", b, commit, err)
	}
	if got.Method != "POST" || got.URL.Path != "/api/v1/sys/cluster/kmip" || body != "ttlv" {
		t.Errorf("the leader got %s %s %q", got.Method, got.URL.Path, body)
	}
	for h, want := range map[string]string{
		HeaderBy:          "n2",
		HeaderClientCert:  base64.StdEncoding.EncodeToString([]byte("client-der")),
		"X-Forwarded-For": "192.0.2.7",
		"Content-Type":    "application/octet-stream",
	} {
		if v := got.Header.Get(h); v != want {
			t.Errorf("%s = %q, want %q", h, v, want)
		}
	}

	// No certificate, an address that is no IP: neither is sent.
	if _, commit, err := r.Post(ctx, leader.URL, "/p", nil, nil, "not-an-ip", 1<<10); err != nil || commit != 42 {
		t.Fatalf("Post without a client certificate: %d %v", commit, err)
	}
	if got.Header.Get(HeaderClientCert) != "" || got.Header.Get("X-Forwarded-For") != "" {
		t.Errorf("client certificate %q, address %q; want neither", got.Header.Get(HeaderClientCert), got.Header.Get("X-Forwarded-For"))
	}
}

// TestRelayErrors: a leader that cannot be reached is ErrNotReached (not
// applied); a refusal, an oversized answer or a broken connection is not.
func TestRelayErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r := NewRelay(&fakeCluster{})

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String()
	ln.Close()
	if _, _, err := r.Post(ctx, dead, "/p", nil, nil, "", 10); !errors.Is(err, ErrNotReached) {
		t.Errorf("dead leader: %v, want ErrNotReached", err)
	}
	if _, _, err := r.Post(ctx, "http://[::1", "/p", nil, nil, "", 10); !errors.Is(err, ErrNotReached) {
		t.Errorf("leader address that is no URL: %v, want ErrNotReached", err)
	}

	refusing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "not a node", http.StatusForbidden)
	}))
	defer refusing.Close()
	if _, _, err := r.Post(ctx, refusing.URL, "/p", nil, nil, "", 100); err == nil || errors.Is(err, ErrNotReached) ||
		!strings.Contains(err.Error(), "403") || !strings.Contains(err.Error(), "not a node") {
		t.Errorf("refused: %v, want the status and the leader's message", err)
	}

	large := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, strings.Repeat("x", 11))
	}))
	defer large.Close()
	if _, _, err := r.Post(ctx, large.URL, "/p", nil, nil, "", 10); err == nil || !strings.Contains(err.Error(), "larger than 10 bytes") {
		t.Errorf("oversized answer: %v", err)
	}

	dropping := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
			conn.Close()
		}
	}))
	defer dropping.Close()
	if _, _, err := r.Post(ctx, dropping.URL, "/p", []byte("m"), nil, "", 10); err == nil || errors.Is(err, ErrNotReached) ||
		!strings.Contains(err.Error(), "outcome unknown") {
		t.Errorf("dropped connection: %v, want outcome unknown", err)
	}
}
