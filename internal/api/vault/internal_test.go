package vault

import (
	"bytes"
	"errors"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestInternalErrorHidesDetail: as REST, a Vault 500 carries the request id
// and a generic message; the detail is in the log under that id.
func TestInternalErrorHidesDetail(t *testing.T) {
	var logs bytes.Buffer
	rec := httptest.NewRecorder()
	q := &request{a: &api{log: slog.New(slog.NewJSONHandler(&logs, nil))}, w: &recorder{ResponseWriter: rec},
		r: httptest.NewRequest("GET", "/v1/kv/data/x", nil), reqID: newRequestID()}
	q.fail(errors.New("read /var/lib/coffer/state.db: input/output error"))
	if rec.Code != 500 || strings.Contains(rec.Body.String(), "state.db") || !strings.Contains(rec.Body.String(), q.reqID) {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
	if !strings.Contains(logs.String(), `"request_id":"`+q.reqID+`"`) || !strings.Contains(logs.String(), "input/output error") {
		t.Fatalf("log:\n%s", logs.String())
	}
}
