package barrier

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/keystore"
)

func newRing(t *testing.T) (*keystore.Store, *keystore.Keyring) {
	t.Helper()
	st := keystore.New(t.TempDir(), keystore.Options{KDF: keystore.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}})
	ring, err := st.Init([]byte("barrier-test-pass"))
	if err != nil {
		t.Fatal(err)
	}
	return st, ring
}

func unsealed(t *testing.T) (*Barrier, *keystore.Store, *keystore.Keyring, WrappedKey) {
	st, ring := newRing(t)
	wk, err := NewKey(ring, 1, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	b := New()
	if err := b.Unseal(ring, []WrappedKey{wk}, 1); err != nil {
		t.Fatal(err)
	}
	return b, st, ring, wk
}

func TestValueRoundTripAndBinding(t *testing.T) {
	b, _, _, _ := unsealed(t)
	ct, err := b.EncryptValue("obj-1", 3, []byte("tde master key"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(ct, []byte("tde master key")) {
		t.Fatal("plaintext visible in ciphertext")
	}
	pt, err := b.DecryptValue("obj-1", 3, ct)
	if err != nil || string(pt) != "tde master key" {
		t.Fatalf("round trip: %q %v", pt, err)
	}
	// A record copied onto another id or version fails authentication.
	for _, tc := range []struct {
		id string
		v  uint64
	}{{"obj-2", 3}, {"obj-1", 4}, {"obj-1", 2}, {"obj-", 3}} {
		if _, err := b.DecryptValue(tc.id, tc.v, ct); !errors.Is(err, ErrAuth) {
			t.Fatalf("copied to %s/%d: %v", tc.id, tc.v, err)
		}
	}
	// Every flipped byte is detected.
	for i := range ct {
		bad := append([]byte(nil), ct...)
		bad[i] ^= 0x01
		if _, err := b.DecryptValue("obj-1", 3, bad); err == nil {
			t.Fatalf("flip at %d not detected", i)
		}
	}
}

func TestDataKeyRotationKeepsOldReadable(t *testing.T) {
	b, _, ring, _ := unsealed(t)
	old, _ := b.EncryptValue("o", 1, []byte("old"))
	wk2, err := NewKey(ring, 2, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Install(wk2, true); err != nil {
		t.Fatal(err)
	}
	if b.Current() != 2 {
		t.Fatalf("current %d", b.Current())
	}
	nw, _ := b.EncryptValue("o", 2, []byte("new"))
	if ValueKeyID(nw) != 2 || ValueKeyID(old) != 1 {
		t.Fatalf("key ids %d %d", ValueKeyID(old), ValueKeyID(nw))
	}
	if pt, err := b.DecryptValue("o", 1, old); err != nil || string(pt) != "old" {
		t.Fatalf("old after rotation: %v", err)
	}
	// Relabelling a value with another key id fails.
	re := append([]byte(nil), old...)
	re[4] = 2
	if _, err := b.DecryptValue("o", 1, re); err == nil {
		t.Fatal("relabelled key id accepted")
	}
}

func TestMasterKeyRotationRewraps(t *testing.T) {
	b, st, ring, wk := unsealed(t)
	ct, _ := b.EncryptValue("o", 1, []byte("v"))
	ring2, err := st.Rotate(ring)
	if err != nil {
		t.Fatal(err)
	}
	nk, err := Rewrap(ring2, wk)
	if err != nil {
		t.Fatal(err)
	}
	if nk.MEKGen != 2 || bytes.Equal(nk.Wrapped, wk.Wrapped) {
		t.Fatalf("rewrap: gen %d", nk.MEKGen)
	}
	b2 := New()
	if err := b2.Unseal(ring2, []WrappedKey{nk}, 1); err != nil {
		t.Fatal(err)
	}
	if pt, err := b2.DecryptValue("o", 1, ct); err != nil || string(pt) != "v" {
		t.Fatalf("value after MEK rotation: %v", err)
	}
	// A wrapped key moved to another id does not unwrap.
	moved := nk
	moved.ID = 7
	if err := New().Unseal(ring2, []WrappedKey{moved}, 7); err == nil {
		t.Fatal("wrapped key moved to another id unwrapped")
	}
}

func TestJournalCipherIsSeparateDomain(t *testing.T) {
	b, _, _, _ := unsealed(t)
	aad := []byte("header")
	ct, err := b.Seal(1, []byte("payload"), aad)
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := b.Open(1, ct, aad); err != nil || string(pt) != "payload" {
		t.Fatalf("open: %v", err)
	}
	if _, err := b.Open(1, ct, []byte("other")); err == nil {
		t.Fatal("aad not bound")
	}
	// A journal ciphertext is never accepted as a value, nor the reverse.
	val, _ := b.EncryptValue("o", 1, []byte("x"))
	if _, err := b.Open(1, val[5:], aad); err == nil {
		t.Fatal("value accepted as journal payload")
	}
}

func TestSealedAndFormatting(t *testing.T) {
	b, _, _, _ := unsealed(t)
	// Printing a barrier shows counts only, whatever the verb.
	want := "barrier{keys: 1, current: 1}"
	for _, verb := range []string{"%v", "%+v", "%s"} {
		if got := fmt.Sprintf(verb, b); got != want {
			t.Fatalf("%s of a barrier = %q, want %q", verb, got, want)
		}
	}
	b.Drop()
	if !b.Sealed() {
		t.Fatal("not sealed")
	}
	if _, err := b.EncryptValue("o", 1, []byte("x")); !errors.Is(err, ErrSealed) {
		t.Fatalf("encrypt sealed: %v", err)
	}
}
