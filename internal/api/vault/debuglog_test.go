package vault

import (
	"bytes"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// syncBuffer is a bytes.Buffer safe for the handler's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRequestDebugLineOnlyAtDebugLevel: each request is logged at debug
// level with its route and status, and not at all above it.
func TestRequestDebugLineOnlyAtDebugLevel(t *testing.T) {
	svc, root := newService(t)
	for _, level := range []slog.Level{slog.LevelDebug, slog.LevelInfo} {
		var out syncBuffer
		h := Handler(svc, Options{Logger: slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: level}))})
		rec := newRecorder()
		req := mustRequest(t, "GET", "/v1/auth/token/lookup-self")
		req.Header.Set("X-Vault-Token", root)
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			t.Fatalf("lookup-self: %d %s", rec.Code, rec.Body)
		}
		logged := strings.Contains(out.String(), "msg=request") && strings.Contains(out.String(), "status=200")
		if logged != (level == slog.LevelDebug) {
			t.Fatalf("level %s: request line logged %v:\n%s", level, logged, out.String())
		}
		if strings.Contains(out.String(), root) {
			t.Fatal("the token appears in the log")
		}
	}
}
