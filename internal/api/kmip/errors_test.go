package kmip

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/ovh/kmip-go"
	"github.com/ovh/kmip-go/kmipserver"

	"github.com/coffer-kms/coffer/internal/service"
)

// TestOutcomeUnknownReachesTheClient: KMIP has no result reason for an
// unknown outcome; the client gets a general failure whose message says
// so (not an "internal error").
func TestOutcomeUnknownReachesTheClient(t *testing.T) {
	s := &Server{log: slog.New(slog.DiscardHandler)}
	in := fmt.Errorf("%w: the leadership was lost while this write was being committed", service.ErrOutcomeUnknown)
	var ke kmipserver.Error
	if err := s.mapErr(in); !errors.As(err, &ke) || ke.Reason != kmip.ResultReasonGeneralFailure || !strings.Contains(ke.Message, "outcome unknown") {
		t.Fatalf("got %#v, want a general failure saying outcome unknown", err)
	}
}
