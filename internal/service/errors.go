package service

import (
	"errors"

	"github.com/coffer-kms/coffer/internal/keystore"
)

// Sentinel errors. Transports map these to status codes through one table each.
var (
	ErrUninitialized = errors.New("keystore is not initialised")
	ErrAlreadyInit   = errors.New("keystore is already initialised")
	ErrSealed        = errors.New("keystore is sealed")
	ErrAlreadyOpen   = errors.New("keystore is already open")
	ErrInvalid       = errors.New("invalid request")
	ErrNotFound      = errors.New("not found")
	ErrConflict      = errors.New("conflict")
	// ErrState: the object's lifecycle state does not allow the operation.
	ErrState = errors.New("operation not allowed in the object's state")
	// ErrGone: the material was destroyed.
	ErrGone = errors.New("material destroyed")
	// ErrTampered: the audit chain is broken (an edited, removed or reordered record).
	ErrTampered = errors.New("audit log tampered")
	// ErrThrottled: too many failed logins; wait before trying again.
	ErrThrottled       = errors.New("too many failed attempts")
	ErrUnauthenticated = errors.New("missing or invalid token")
	ErrForbidden       = errors.New("permission denied")
	// ErrWriteUnavailable: writes are refused (disk full, failing storage); reads continue.
	ErrWriteUnavailable = errors.New("writes are unavailable")
	ErrUnavailable      = errors.New("service unavailable")
	// ErrNotLeaderNow: a write refused before it was logged because the
	// leadership is moving (switchover, election): not applied, retry.
	ErrNotLeaderNow = errors.New("the leader is changing")
	ErrStopping     = errors.New("server is shutting down")

	// ErrOutcomeUnknown: a write was proposed but its result never came
	// back (the leadership was lost while it was being committed, the
	// caller went away, the confirmation timed out, the server stopped):
	// it may or may not be applied. Never retried blindly: the caller
	// checks first. ErrNotLeaderNow and ErrReadOnly are its opposite: not
	// applied, safe to send again.
	ErrOutcomeUnknown = errors.New("outcome unknown: the write may or may not have been applied")

	// ErrReadOnly: the node has no quorum (read-only restricted mode):
	// reads are served, every write is refused until quorum returns.
	ErrReadOnly = errors.New("read-only restricted mode")
)

// Keystore errors a transport may want to name precisely (they arrive wrapped
// together with ErrInvalid or ErrUninitialized).
var (
	ErrWrongPassphrase  = keystore.ErrWrongPassphrase
	ErrPassphraseLength = keystore.ErrPassphraseLength
	ErrMachineMismatch  = keystore.ErrMachineMismatch
	ErrAutoOpenDisabled = keystore.ErrAutoOpenDisabled
	ErrAutoOpenStale    = keystore.ErrAutoOpenStale
	ErrAutoOpenDamaged  = keystore.ErrAutoOpenDamaged
	ErrAutoOpenNewer    = keystore.ErrAutoOpenNewer
)

// ErrKeystoreDamaged: keystore.ks or keystore.aks is corrupt or truncated
// on disk (the keystore's own error, naming the file, is wrapped with it).
var ErrKeystoreDamaged = errors.New("keystore file damaged")
