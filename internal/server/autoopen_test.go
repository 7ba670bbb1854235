package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coffer-kms/coffer/internal/datadir"
	"github.com/coffer-kms/coffer/internal/keystore"
	"github.com/coffer-kms/coffer/internal/service"
	"github.com/coffer-kms/coffer/internal/service/servicetest"
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
		{fmt.Errorf("%w: %w: %w", service.ErrUnavailable, service.ErrAutoOpenNewer, keystore.ErrUnsupportedVersion), true},
		{fmt.Errorf("%w: the journal in /d/journal: records 13-19 are missing", service.ErrUnavailable), false},
		{errors.New("open journal: permission denied"), false},
	} {
		msg := autoOpenFailed(c.err)
		if strings.Contains(msg, "open the keystore with its passphrase") != c.passphrase {
			t.Errorf("%v: %q", c.err, msg)
		}
	}
}

// TestAutoOpenFailedMessageOfDamagedFiles: a damaged keystore.aks is an
// auto-open failure (the passphrase opens the keystore: the log says so),
// a damaged keystore.ks is not (the passphrase fails the same way).
func TestAutoOpenFailedMessageOfDamagedFiles(t *testing.T) {
	for _, c := range []struct {
		file       string
		passphrase bool
	}{
		{keystore.AutoOpenFileName, true},
		{keystore.FileName, false},
	} {
		dir := t.TempDir()
		svc := servicetest.New(t, servicetest.DataDir(dir))
		ctx := servicetest.Root()
		if _, err := svc.Init(ctx, service.Identity{Local: true}, []byte("server-test-passphrase")); err != nil {
			t.Fatal(err)
		}
		if err := svc.EnableAutoOpen(ctx); err != nil {
			t.Fatal(err)
		}
		if err := svc.Seal(ctx); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(datadir.KeystoreDir(dir), c.file)
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 0x01
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		err = svc.OpenAuto(context.Background())
		if err == nil {
			t.Fatalf("%s damaged: auto-open succeeded", c.file)
		}
		if msg := autoOpenFailed(err); strings.Contains(msg, "open the keystore with its passphrase") != c.passphrase {
			t.Errorf("%s damaged: %q (%v)", c.file, msg, err)
		}
		if c.passphrase {
			if err := svc.Open(ctx, []byte("server-test-passphrase")); err != nil {
				t.Fatalf("%s damaged: open with the passphrase: %v", c.file, err)
			}
		}
	}
}
