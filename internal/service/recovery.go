package service

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"

	"github.com/coffer-kms/coffer/internal/state"
)

// The recovery passphrase encrypts backups (age scrypt). It is separate from
// the keystore passphrase, set at init, changeable, and kept in the
// replicated state sealed by the barrier so that any node can take a
// scheduled backup. A backup needs the passphrase that was valid when it was
// taken: its manifest names the generation ("passphrase:recovery-<n>").

const recoveryObjectID = "recovery-passphrase"

// RecoveryStatus says whether a recovery passphrase is set (never the passphrase).
type RecoveryStatus struct {
	Set        bool   `json:"set"`
	Generation uint64 `json:"generation,omitempty"`
	Label      string `json:"label,omitempty"`
}

// RecoveryLabel names generation n in backup manifests.
func RecoveryLabel(n uint64) string { return fmt.Sprintf("recovery-%d", n) }

// SetRecoveryPassphrase sets the recovery passphrase or, when one is set,
// changes it (old must match). System administrators only.
func (s *Service) SetRecoveryPassphrase(ctx context.Context, old, new []byte) (RecoveryStatus, error) {
	if _, err := requireRole(ctx, RoleSystemAdmin, "setting the recovery passphrase"); err != nil {
		return RecoveryStatus{}, err
	}
	if len(new) < 8 || len(new) > 200 {
		return RecoveryStatus{}, fmt.Errorf("%w: %w: the recovery passphrase must be 8 to 200 bytes", ErrInvalid, ErrPassphraseLength)
	}
	// Throttled before the lifecycle lock: a delay never holds it.
	done, err := s.passphraseAttempt(ctx, "recovery")
	if err != nil {
		return RecoveryStatus{}, err
	}
	checked := errNotChecked
	defer func() { done(checked) }()
	unlock, err := s.openForRead()
	if err != nil {
		return RecoveryStatus{}, err
	}
	defer unlock()
	gen := uint64(1)
	cur, err := s.recoveryLocked()
	switch {
	case err == nil:
		defer clear(cur)
		if subtle.ConstantTimeCompare(cur, old) != 1 {
			checked = fmt.Errorf("%w: %w: the current recovery passphrase does not match", ErrInvalid, ErrWrongPassphrase)
			return RecoveryStatus{}, checked
		}
		checked = nil
		r, _ := s.st.Recovery()
		gen = r.Generation + 1
	case errors.Is(err, ErrNotFound):
	default:
		return RecoveryStatus{}, err
	}
	sealed, err := s.bar.EncryptValue(recoveryObjectID, gen, new)
	if err != nil {
		return RecoveryStatus{}, err
	}
	if _, err := s.applyResult(ctx, state.TypeRecoverySet, state.Recovery{Generation: gen, Sealed: sealed}); err != nil {
		return RecoveryStatus{}, fmt.Errorf("store the recovery passphrase: %w", err)
	}
	s.log.Info("recovery passphrase set", "generation", gen)
	st := RecoveryStatus{Set: true, Generation: gen, Label: RecoveryLabel(gen)}
	s.afterKeyChange(ctx, "recovery passphrase changed")
	return st, nil
}

// Recovery reports whether a recovery passphrase is set.
func (s *Service) Recovery(ctx context.Context) (RecoveryStatus, error) {
	if _, err := requireAdmin(ctx, "reading the recovery passphrase status"); err != nil {
		return RecoveryStatus{}, err
	}
	r, err := s.st.Recovery()
	if errors.Is(err, state.ErrNotFound) {
		return RecoveryStatus{}, nil
	}
	if err != nil {
		return RecoveryStatus{}, err
	}
	return RecoveryStatus{Set: true, Generation: r.Generation, Label: RecoveryLabel(r.Generation)}, nil
}

// recoveryLocked returns the current recovery passphrase (caller clears it)
// or ErrNotFound. The lifecycle lock is held by the caller.
func (s *core) recoveryLocked() ([]byte, error) {
	r, err := s.st.Recovery()
	if errors.Is(err, state.ErrNotFound) {
		return nil, fmt.Errorf("%w: no recovery passphrase is set: coffer backup recovery-passphrase set", ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	pt, err := s.bar.DecryptValue(recoveryObjectID, r.Generation, r.Sealed)
	if err != nil {
		return nil, fmt.Errorf("unseal the recovery passphrase: %w", err)
	}
	return pt, nil
}

// afterKeyChange is called after a master-key rotation and after keystore or
// recovery passphrase changes: backups must follow them (set by the backup
// manager; nil until backups are configured).
func (s *core) afterKeyChange(ctx context.Context, why string) {
	if h := s.keyChangeHook.Load(); h != nil {
		(*h)(why)
	}
}
