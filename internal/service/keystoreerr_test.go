package service

import (
	"errors"
	"fmt"
	"testing"

	"github.com/coffer-kms/coffer/internal/keystore"
)

// TestKeystoreWriteErrorsAreNamed: a rotation whose keystore.ks is in place
// but not synced, and a keyring older than keystore.ks, are answered with a
// kind the API maps to a status (503, 409), not as an internal error (500).
func TestKeystoreWriteErrorsAreNamed(t *testing.T) {
	for _, c := range []struct {
		err  error
		kind error
	}{
		{fmt.Errorf("%w: write keystore.ks: fsync directory: input/output error", keystore.ErrNotDurable), ErrUnavailable},
		{fmt.Errorf("%w (/d/keystore/keystore.ks)", keystore.ErrStaleKeyring), ErrConflict},
	} {
		if got := mapKeystoreErr(c.err); !errors.Is(got, c.kind) {
			t.Errorf("%v: mapped to %v, want %v", c.err, got, c.kind)
		}
	}
}
