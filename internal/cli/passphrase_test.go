package cli

import (
	"testing"
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
