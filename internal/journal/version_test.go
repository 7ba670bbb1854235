package journal

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A segment of a newer format version is refused naming both versions.
func TestVerifyRefusesNewerSegmentVersion(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "journal")
	j := openT(t, dir, newClock(), nil)
	appendT(t, j, mkRecs(1, 3))
	infos := j.Segments()
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if len(infos) == 0 {
		t.Fatal("no segment written")
	}
	seg := infos[0].Path
	b, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	binary.BigEndian.PutUint16(b[8:], FormatVersion+1)
	if err := os.WriteFile(seg, b, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Verify(dir, testCipher{})
	if err == nil || !strings.Contains(err.Error(), "format version 2, this build reads version 1") {
		t.Fatalf("newer segment version: %v", err)
	}
}
