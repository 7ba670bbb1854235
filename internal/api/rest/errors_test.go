package rest

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/coffer-kms/coffer/internal/service"
)

// TestNotAppliedAndOutcomeUnknownCodes: a write refused before it was
// logged and one whose outcome is unknown answer 503 with distinct codes,
// so a client retries the first and reports the second.
func TestNotAppliedAndOutcomeUnknownCodes(t *testing.T) {
	a := &api{log: slog.New(slog.DiscardHandler)}
	for _, tc := range []struct {
		err  error
		code string
	}{
		{fmt.Errorf("%w: not applied; send it again", service.ErrNotLeaderNow), "not_leader"},
		{fmt.Errorf("%w: no quorum", service.ErrReadOnly), "read_only_restricted"},
		{fmt.Errorf("%w: the leadership was lost", service.ErrOutcomeUnknown), "outcome_unknown"},
	} {
		rec := httptest.NewRecorder()
		a.fail(rec, httptest.NewRequest("POST", "/api/v1/wallets/default/secrets/k", nil), tc.err)
		var b ErrorBody
		if err := json.Unmarshal(rec.Body.Bytes(), &b); err != nil {
			t.Fatalf("%v: body %q: %v", tc.err, rec.Body.String(), err)
		}
		if rec.Code != http.StatusServiceUnavailable || b.Error.Code != tc.code || b.Error.Message != tc.err.Error() {
			t.Errorf("%v: got %d %q %q, want 503 %q with the message", tc.err, rec.Code, b.Error.Code, b.Error.Message, tc.code)
		}
	}
}

// TestCancelledRequestIsNotInternal: a request whose context ended (a fast
// stop cancels every request in progress) and whose service call gave up for
// that reason answers 503 "canceled", not an internal error with an id to
// quote; an error that merely wraps context.Canceled while the request is
// still live stays internal.
func TestCancelledRequestIsNotInternal(t *testing.T) {
	a := &api{log: slog.New(slog.DiscardHandler)}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rec := httptest.NewRecorder()
	a.fail(rec, httptest.NewRequest("POST", "/api/v1/sys/open", nil).WithContext(ctx), fmt.Errorf("wait for leadership: %w", context.Canceled))
	var b ErrorBody
	if err := json.Unmarshal(rec.Body.Bytes(), &b); err != nil {
		t.Fatal(err)
	}
	if rec.Code != http.StatusServiceUnavailable || b.Error.Code != "canceled" {
		t.Fatalf("cancelled request: %d %+v, want 503 canceled", rec.Code, b)
	}
	rec = httptest.NewRecorder()
	a.fail(rec, httptest.NewRequest("POST", "/api/v1/sys/open", nil), fmt.Errorf("inner: %w", context.Canceled))
	if rec.Code != http.StatusInternalServerError {
		t.Fatalf("a live request's cancelled inner call: %d, want 500", rec.Code)
	}
}

// TestBadBase64SaysWhichFieldAndWhatItWants: a "value" that is not base64
// is refused with a message naming the field and the encoding, not only
// encoding/json's "illegal base64 data at input byte 0".
func TestBadBase64SaysWhichFieldAndWhatItWants(t *testing.T) {
	srv, _, tok := setup(t)
	do(t, srv, tok, "POST", "/api/v1/wallets", `{"name":"w"}`)
	for _, body := range []string{`{"value":"not base64!"}`, `{"value":"eA"}`} {
		st, eb, raw := do(t, srv, tok, "PUT", "/api/v1/wallets/w/secrets/s", body)
		if st != http.StatusBadRequest || eb.Error.Code != "invalid_request" || !strings.Contains(eb.Error.Message, `"value"`) ||
			!strings.Contains(eb.Error.Message, "base64") {
			t.Errorf("%s: %d %s, want 400 naming \"value\" and base64", body, st, raw)
		}
	}
}

// TestWrongJSONTypeNamesTheFieldAndWhatItWants: a field of the wrong JSON
// type is refused naming the field and the type it takes, in JSON's words,
// not Go's ("Go struct field PutSecretRequest.value of type []uint8").
func TestWrongJSONTypeNamesTheFieldAndWhatItWants(t *testing.T) {
	srv, _, tok := setup(t)
	do(t, srv, tok, "POST", "/api/v1/wallets", `{"name":"w"}`)
	for _, c := range []struct{ method, path, body, want string }{
		{"PUT", "/api/v1/wallets/w/secrets/s", `{"value":123}`, `"value": got a number, want a base64 string`},
		{"POST", "/api/v1/objects", `{"wallet":"w","name":"k","type":"symmetric_key","length":"256"}`, `"length": got a string, want an integer`},
		{"POST", "/api/v1/wallets", `{"name":["x"]}`, `"name": got an array, want a string`},
	} {
		st, eb, raw := do(t, srv, tok, c.method, c.path, c.body)
		if st != http.StatusBadRequest || !strings.Contains(eb.Error.Message, c.want) || strings.Contains(eb.Error.Message, "Go struct") {
			t.Errorf("%s %s %s: %d %s, want 400 saying %s", c.method, c.path, c.body, st, raw, c.want)
		}
	}
}
