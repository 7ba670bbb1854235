package service

import (
	"errors"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/keystore"
	"github.com/coffer-kms/coffer/internal/testutil"
)

// TestFollowersWipeTheKeyringsTheyReplace: a follower that takes a master
// key rotation or a passphrase change from the leader clears the keyring
// it replaces, as the leader does (docs/security.md, "Memory"): after a
// passphrase change the old keyring holds the old passphrase's KEK.
func TestFollowersWipeTheKeyringsTheyReplace(t *testing.T) {
	nodes, _, leader := trioForTest(t)
	l := leader()
	var f *Service
	for _, n := range nodes {
		if n != l {
			f = n
		}
	}
	ring := func() *keystore.Keyring {
		f.mu.RLock()
		defer f.mu.RUnlock()
		return f.ring
	}
	before := ring()
	if _, err := l.RotateMasterKey(rootCtx()); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 20*time.Second, "the follower to take the new generation", func() error {
		if ring() == before {
			return errors.New("not yet")
		}
		return nil
	})
	if !wiped(before) {
		t.Fatal("the keyring a follower replaced on a master key rotation still holds its keys")
	}
	rotated := ring()
	if err := l.ChangePassphrase(rootCtx(), []byte(pass), []byte(pass+"-2")); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 20*time.Second, "the follower re-sealed under the new passphrase", func() error {
		if ring() == rotated {
			return errors.New("not yet")
		}
		return nil
	})
	if !wiped(rotated) {
		t.Fatal("the keyring a follower replaced on a passphrase change still holds its keys (and the old passphrase's KEK)")
	}
}
