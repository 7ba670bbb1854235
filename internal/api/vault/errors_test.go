package vault

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/coffer-kms/coffer/internal/service"
)

// TestNotAppliedAndOutcomeUnknownCodes: not applied and outcome unknown
// are both 503 (what Vault answers when it cannot serve) with distinct
// codes in the audit log.
func TestNotAppliedAndOutcomeUnknownCodes(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code string
	}{
		{fmt.Errorf("%w: send it again", service.ErrNotLeaderNow), "not_leader"},
		{fmt.Errorf("%w: the leadership was lost", service.ErrOutcomeUnknown), "outcome_unknown"},
	} {
		if status, code := classify(tc.err); status != http.StatusServiceUnavailable || code != tc.code {
			t.Errorf("%v: got %d %s, want 503 %s", tc.err, status, code, tc.code)
		}
	}
}
