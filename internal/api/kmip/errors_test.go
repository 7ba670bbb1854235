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

// TestOperationAction: an item's audit action is "kmip" and its
// operation's name without spaces, the same on every call.
func TestOperationAction(t *testing.T) {
	for _, c := range []struct {
		op   kmip.Operation
		want string
	}{
		{kmip.OperationGet, "kmipGet"},
		{kmip.OperationGetAttributes, "kmipGetAttributes"},
		{kmip.OperationGetAttributes, "kmipGetAttributes"},
		{kmip.OperationDiscoverVersions, "kmipDiscoverVersions"},
	} {
		if got := operationAction(c.op); got != c.want {
			t.Errorf("operation %v: %q, want %q", c.op, got, c.want)
		}
	}
}
