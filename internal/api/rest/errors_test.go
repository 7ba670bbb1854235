package rest

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
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
