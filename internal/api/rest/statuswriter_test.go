package rest

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
)

// brokenFlushWriter fails its flushes, as a connection the client closed.
type brokenFlushWriter struct{ *httptest.ResponseRecorder }

func (brokenFlushWriter) FlushError() error { return errors.New("broken pipe") }

// A flush through statusWriter reports the error of the writer beneath, so
// that a handler learns that its answer was not sent.
func TestStatusWriterFlushReportsTheError(t *testing.T) {
	sw := &statusWriter{ResponseWriter: brokenFlushWriter{httptest.NewRecorder()}}
	if err := http.NewResponseController(sw).Flush(); err == nil {
		t.Fatal("a failed flush reported no error")
	}
	ok := &statusWriter{ResponseWriter: httptest.NewRecorder()}
	if err := http.NewResponseController(ok).Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
}
