package server

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/coffer-kms/coffer/internal/service"
)

// TestAutoOpenFailedMessage: the passphrase is suggested only when auto-open
// itself failed, never when the node could not start (a journal refused at
// open fails the same way with the passphrase).
func TestAutoOpenFailedMessage(t *testing.T) {
	for _, c := range []struct {
		err        error
		passphrase bool
	}{
		{fmt.Errorf("%w: %w", service.ErrInvalid, service.ErrMachineMismatch), true},
		{fmt.Errorf("%w: %w", service.ErrInvalid, service.ErrAutoOpenStale), true},
		{fmt.Errorf("%w: %w", service.ErrInvalid, service.ErrAutoOpenDisabled), true},
		{fmt.Errorf("%w: the journal in /d/journal: records 13-19 are missing", service.ErrUnavailable), false},
		{errors.New("open journal: permission denied"), false},
	} {
		msg := autoOpenFailed(c.err)
		if strings.Contains(msg, "open the keystore with its passphrase") != c.passphrase {
			t.Errorf("%v: %q", c.err, msg)
		}
	}
}
