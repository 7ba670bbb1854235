package rest

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

// TestInternalErrorHidesDetail: an unexpected error's text (a path, a peer)
// goes to the log under an id; the client gets the id and a generic message.
func TestInternalErrorHidesDetail(t *testing.T) {
	var logs bytes.Buffer
	a := &api{log: slog.New(slog.NewJSONHandler(&logs, nil))}
	rec := httptest.NewRecorder()
	a.fail(rec, httptest.NewRequest("GET", "/api/v1/wallets", nil), errors.New("read /var/lib/coffer/state.db: input/output error"))
	if rec.Code != 500 {
		t.Fatalf("status %d", rec.Code)
	}
	var b ErrorBody
	if err := json.Unmarshal(rec.Body.Bytes(), &b); err != nil {
		t.Fatal(err)
	}
	if b.Error.Code != "internal" || strings.Contains(b.Error.Message, "state.db") || strings.Contains(b.Error.Message, "/var/lib") {
		t.Fatalf("the client sees the detail: %+v", b)
	}
	m := regexp.MustCompile(`error_id ([0-9a-f]{16})$`).FindStringSubmatch(b.Error.Message)
	if m == nil {
		t.Fatalf("no error id in %q", b.Error.Message)
	}
	if !strings.Contains(logs.String(), `"error_id":"`+m[1]+`"`) || !strings.Contains(logs.String(), "state.db: input/output error") {
		t.Fatalf("the log lacks the id or the detail:\n%s", logs.String())
	}
}
