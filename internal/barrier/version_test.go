package barrier

import (
	"errors"
	"strings"
	"testing"
)

// A sealed value of a newer format version is refused naming both versions.
func TestDecryptRefusesNewerValueVersion(t *testing.T) {
	b, _, _, _ := unsealed(t)
	ct, err := b.EncryptValue("obj-1", 1, []byte("v"))
	if err != nil {
		t.Fatal(err)
	}
	ct[0] = ValueVersion + 1
	_, err = b.DecryptValue("obj-1", 1, ct)
	if !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), "version 2, this build reads version 1") {
		t.Fatalf("newer value version: %v", err)
	}
}
