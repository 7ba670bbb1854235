package service

import (
	"testing"

	"github.com/coffer-kms/coffer/internal/keystore"
)

// wiped reports whether a keyring's master keys were cleared (Wipe).
func wiped(k *keystore.Keyring) bool {
	_, err := k.ExportMEKs()
	return err != nil && k.Current() == 0
}

// TestSealWipesTheMasterKeys: sealing clears every master key generation
// the open keystore held (docs/security.md, "Memory"), and a keyring that
// a rotation or a passphrase change replaced is cleared at once, not left
// to the garbage collector with the keys in it.
func TestSealWipesTheMasterKeys(t *testing.T) {
	dir := t.TempDir()
	ctx := rootCtx()
	s := initSvc(t, dir)
	defer s.Close()
	first := s.ring
	if _, err := s.RotateMasterKey(ctx); err != nil {
		t.Fatal(err)
	}
	if !wiped(first) {
		t.Fatal("the keyring replaced by a master key rotation still holds its keys")
	}
	rotated := s.ring
	if err := s.ChangePassphrase(ctx, []byte(pass), []byte(pass+"-2")); err != nil {
		t.Fatal(err)
	}
	if !wiped(rotated) {
		t.Fatal("the keyring replaced by a passphrase change still holds its keys")
	}
	changed := s.ring
	if err := s.ResetPassphrase(ctx, local, []byte(pass+"-3")); err != nil {
		t.Fatal(err)
	}
	if !wiped(changed) {
		t.Fatal("the keyring replaced by a passphrase reset still holds its keys")
	}
	open := s.ring
	if err := s.Seal(ctx); err != nil {
		t.Fatal(err)
	}
	if !wiped(open) {
		t.Fatal("sealing left the master keys in the keyring")
	}
	if err := s.Open(ctx, []byte(pass+"-3")); err != nil {
		t.Fatal(err)
	}
	if st := s.Status(); st.KeystoreGeneration != 2 {
		t.Fatalf("after reopening: generation %d, want 2", st.KeystoreGeneration)
	}
}

// TestFailedOpenWipesTheMasterKeys: an open that fails after the keystore
// was read (here: the data keys are not wrapped by this keyring) leaves no
// master key in memory.
func TestFailedOpenWipesTheMasterKeys(t *testing.T) {
	dir := t.TempDir()
	ctx := rootCtx()
	s := initSvc(t, dir)
	defer s.Close()
	if err := s.Seal(ctx); err != nil {
		t.Fatal(err)
	}
	other, err := keystore.New(t.TempDir(), keystore.Options{KDF: cheapKDF}).Init([]byte(pass))
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	err = s.openLocked(ctx, other)
	s.mu.Unlock()
	if err == nil {
		t.Fatal("opened with another keystore's keys")
	}
	if !wiped(other) {
		t.Fatal("the failed open left the master keys in the keyring")
	}
	if s.State() != StateSealed {
		t.Fatalf("state %s after a failed open", s.State())
	}
}
