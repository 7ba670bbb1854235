package cli

import (
	"bytes"
	"errors"
	"os"
	"testing"

	"github.com/spf13/cobra"
)

// TestPromptHasOneColon: every prompt ends in exactly one ": ", whether
// the caller's text ends in a colon or not ("Keystore passphrase: : " was
// printed by coffer check).
func TestPromptHasOneColon(t *testing.T) {
	for _, p := range []string{"Keystore passphrase", "Keystore passphrase:", "Keystore passphrase: "} {
		if got := promptText(p); got != "Keystore passphrase: " {
			t.Errorf("prompt %q is shown as %q", p, got)
		}
	}
}

// TestUseSecretsClearsThem: the passphrases the CLI read are zero once the
// request that needed them is done, whether it succeeded or not.
func TestUseSecretsClearsThem(t *testing.T) {
	for _, fail := range []bool{false, true} {
		a, b := []byte("first passphrase"), []byte("second passphrase")
		var seen string
		err := useSecrets(func() error {
			seen = string(a) + "|" + string(b)
			if fail {
				return errors.New("refused")
			}
			return nil
		}, a, b)
		if (err != nil) != fail {
			t.Fatalf("error %v", err)
		}
		if seen != "first passphrase|second passphrase" {
			t.Fatal("the request did not see the passphrases")
		}
		if !bytes.Equal(a, make([]byte, len(a))) || !bytes.Equal(b, make([]byte, len(b))) {
			t.Fatalf("passphrases not cleared after the request (failed: %v)", fail)
		}
	}
	// A nil secret (none read) is fine.
	if err := useSecrets(func() error { return nil }, nil); err != nil {
		t.Fatal(err)
	}
}

// TestRefusedRecoveryPassphraseIsNotHandedBack: a recovery passphrase read
// but refused for its length is cleared and not returned, so no caller is
// left holding a secret it has no request for.
func TestRefusedRecoveryPassphraseIsNotHandedBack(t *testing.T) {
	f := t.TempDir() + "/short"
	if err := os.WriteFile(f, []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := readRecoveryPassphrase(&cobra.Command{}, f, "--passphrase-file")
	if err == nil {
		t.Fatal("a 5-byte recovery passphrase was taken")
	}
	if p != nil {
		t.Fatalf("the refused passphrase was handed back (%d bytes)", len(p))
	}
}
