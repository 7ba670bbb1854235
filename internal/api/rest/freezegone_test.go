package rest

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/coffer-kms/coffer/internal/service"
)

// goneWriter is the answer to a client that went away: every write fails.
type goneWriter struct{ h http.Header }

func (w goneWriter) Header() http.Header     { return w.h }
func (goneWriter) WriteHeader(int)           {}
func (goneWriter) Write([]byte) (int, error) { return 0, errors.New("connection reset by peer") }

// A freeze whose answer cannot be sent (the client went away) is ended at
// once: nobody would take the snapshot and thaw it.
func TestFreezeWhoseAnswerIsNotSentThaws(t *testing.T) {
	_, svc, _ := newServiceWith(t)
	a := &api{svc: svc, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ctx := service.WithIdentity(t.Context(), service.LocalRoot())
	r := httptest.NewRequest("POST", "/api/v1/sys/freeze", strings.NewReader(`{"timeout":"1h"}`)).WithContext(ctx)
	a.freeze(goneWriter{h: http.Header{}}, r)
	if _, err := svc.Objects.PutSecret(ctx, service.DefaultWallet, "k", []byte("v")); err != nil {
		t.Fatalf("writes after a freeze nobody got: %v", err)
	}
	// One whose answer is sent stays.
	w := httptest.NewRecorder()
	a.freeze(w, httptest.NewRequest("POST", "/api/v1/sys/freeze", strings.NewReader(`{"timeout":"1h"}`)).WithContext(ctx))
	if w.Code != http.StatusOK {
		t.Fatalf("freeze: %d %s", w.Code, w.Body)
	}
	if _, err := svc.Objects.PutSecret(ctx, service.DefaultWallet, "k", []byte("v2")); err == nil {
		t.Fatal("writes not frozen")
	}
}

// readAndLeaveWriter is the answer to a client that reads it and closes
// its connection at once (coffer freeze && lvcreate ...): the request's
// context ends as soon as the answer is flushed.
type readAndLeaveWriter struct {
	*httptest.ResponseRecorder
	leave context.CancelFunc
}

func (w readAndLeaveWriter) Flush() { w.ResponseRecorder.Flush(); w.leave() }

// A freeze whose answer was sent stays, even when the client closes its
// connection before the handler returns: it got the answer and takes the
// snapshot now.
func TestFreezeWhoseAnswerWasSentStaysWhenTheClientLeaves(t *testing.T) {
	_, svc, _ := newServiceWith(t)
	a := &api{svc: svc, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	ctx, cancel := context.WithCancel(service.WithIdentity(t.Context(), service.LocalRoot()))
	defer cancel()
	w := readAndLeaveWriter{httptest.NewRecorder(), cancel}
	a.freeze(w, httptest.NewRequest("POST", "/api/v1/sys/freeze", strings.NewReader(`{"timeout":"1h"}`)).WithContext(ctx))
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `"frozen":true`) {
		t.Fatalf("freeze: %d %s", w.Code, w.Body)
	}
	wctx := service.WithIdentity(t.Context(), service.LocalRoot())
	if _, err := svc.Objects.PutSecret(wctx, service.DefaultWallet, "k", []byte("v")); err == nil {
		t.Fatal("writes not frozen after the client got the answer of its freeze")
	}
}
