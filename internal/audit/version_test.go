package audit

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// An audit.anchor of a newer format version is refused naming both versions.
func TestOpenRefusesNewerAnchorVersion(t *testing.T) {
	dir, _ := prunedLog(t)
	p := filepath.Join(dir, AnchorFile)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b = bytes.Replace(b, []byte("coffer-audit-anchor v1 "), []byte("coffer-audit-anchor v2 "), 1)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Verify(dir)
	if err == nil || !strings.Contains(err.Error(), "format version 2, this build reads version 1") {
		t.Fatalf("newer anchor version: %v", err)
	}
}
