// Package barrier holds Coffer's data encryption keys (DEKs) in memory and
// encrypts everything stored at rest with them.
//
// DEKs are random AES-256 keys. At rest they exist only wrapped by a master
// encryption key (MEK) generation of the keystore; the wrapped forms live in
// the replicated state. Values are sealed with AES-256-GCM under the current
// DEK with the object id and version bound as associated data, so a
// ciphertext copied onto another record fails to authenticate. Rotating the
// DEK makes new writes use the new key; old keys stay loaded so old records
// stay readable. Rotating the MEK only re-wraps DEKs; no value is re-encrypted.
//
// The format of a sealed value and of a wrapped DEK is in FORMAT.md.
package barrier

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/coffer-kms/coffer/internal/keystore"
)

// Errors.
var (
	ErrSealed     = errors.New("barrier is sealed: no data keys loaded")
	ErrUnknownKey = errors.New("unknown data key")
	ErrAuth       = errors.New("ciphertext failed authentication (wrong record, tampered, or wrong key)")
	ErrFormat     = errors.New("malformed ciphertext")
)

// ValueVersion is the format version of a sealed value (FORMAT.md).
const ValueVersion = valueVersion

const (
	valueVersion = 1
	nonceSize    = 12
	keySize      = 32
	valueHeader  = 1 + 4 + nonceSize // version, key id, nonce
)

// WrappedKey is a DEK as it is stored: wrapped by one MEK generation.
type WrappedKey struct {
	ID      uint32    `json:"id"`
	MEKGen  uint32    `json:"mek_generation"`
	Wrapped []byte    `json:"wrapped"`
	Created time.Time `json:"created"`
	// Index is the raft index of the command that created the key (set by
	// the state machine); the journal uses it to know which key was current.
	Index uint64 `json:"index,omitempty"`
}

func dekAAD(id uint32) []byte {
	b := []byte("coffer dek v1\x00\x00\x00\x00")
	binary.BigEndian.PutUint32(b[len(b)-4:], id)
	return b
}

// NewKey generates a fresh DEK with the given id, wrapped by the current MEK.
func NewKey(ring *keystore.Keyring, id uint32, now time.Time) (WrappedKey, error) {
	if id == 0 {
		return WrappedKey{}, errors.New("data key id 0 is reserved")
	}
	k := make([]byte, keySize)
	if _, err := rand.Read(k); err != nil {
		return WrappedKey{}, fmt.Errorf("generate data key: %w", err)
	}
	defer clear(k)
	gen, w, err := ring.Wrap(k, dekAAD(id))
	if err != nil {
		return WrappedKey{}, fmt.Errorf("wrap data key %d: %w", id, err)
	}
	return WrappedKey{ID: id, MEKGen: gen, Wrapped: w, Created: now.UTC()}, nil
}

// Rewrap re-wraps wk under the ring's current MEK generation.
func Rewrap(ring *keystore.Keyring, wk WrappedKey) (WrappedKey, error) {
	k, err := ring.Unwrap(wk.MEKGen, wk.Wrapped, dekAAD(wk.ID))
	if err != nil {
		return WrappedKey{}, fmt.Errorf("unwrap data key %d (MEK generation %d): %w", wk.ID, wk.MEKGen, err)
	}
	defer clear(k)
	gen, w, err := ring.Wrap(k, dekAAD(wk.ID))
	if err != nil {
		return WrappedKey{}, fmt.Errorf("wrap data key %d: %w", wk.ID, err)
	}
	wk.MEKGen, wk.Wrapped = gen, w
	return wk, nil
}

// Barrier is the set of unwrapped DEKs. The zero value is sealed.
type Barrier struct {
	mu      sync.RWMutex
	ring    *keystore.Keyring
	keys    map[uint32]cipher.AEAD
	current uint32
}

// New returns a sealed barrier.
func New() *Barrier { return &Barrier{} }

// String never shows key material.
func (b *Barrier) String() string {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return fmt.Sprintf("barrier{keys: %d, current: %d}", len(b.keys), b.current)
}

// Unseal loads the wrapped DEKs with the keyring and makes current the one
// used for new writes. Any key that fails to unwrap is an error and leaves the
// barrier sealed.
func (b *Barrier) Unseal(ring *keystore.Keyring, wrapped []WrappedKey, current uint32) error {
	keys := make(map[uint32]cipher.AEAD, len(wrapped))
	for _, wk := range wrapped {
		a, err := unwrapAEAD(ring, wk)
		if err != nil {
			return err
		}
		keys[wk.ID] = a
	}
	if current != 0 {
		if _, ok := keys[current]; !ok {
			return fmt.Errorf("current data key %d: %w", current, ErrUnknownKey)
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.ring, b.keys, b.current = ring, keys, current
	return nil
}

func unwrapAEAD(ring *keystore.Keyring, wk WrappedKey) (cipher.AEAD, error) {
	k, err := ring.Unwrap(wk.MEKGen, wk.Wrapped, dekAAD(wk.ID))
	if err != nil {
		return nil, fmt.Errorf("unwrap data key %d (MEK generation %d): %w", wk.ID, wk.MEKGen, err)
	}
	defer clear(k)
	return newAEAD(k)
}

func newAEAD(k []byte) (cipher.AEAD, error) {
	blk, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(blk)
}

// Drop removes every key from memory (the keystore is being sealed).
func (b *Barrier) Drop() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.ring, b.keys, b.current = nil, nil, 0
}

// Sealed reports whether no keys are loaded.
func (b *Barrier) Sealed() bool {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.keys == nil
}

// Keyring returns the keyring the barrier was unsealed with (nil if sealed).
func (b *Barrier) Keyring() *keystore.Keyring {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.ring
}

// SetKeyring replaces the keyring after a MEK rotation or passphrase change;
// the DEKs in memory are unchanged.
func (b *Barrier) SetKeyring(ring *keystore.Keyring) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.ring = ring
}

// Install unwraps wk, adds it, and makes it current if asked. Installing a
// key id that is already loaded is a no-op apart from makeCurrent, so a
// replayed command is harmless.
func (b *Barrier) Install(wk WrappedKey, makeCurrent bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.keys == nil {
		return ErrSealed
	}
	if _, ok := b.keys[wk.ID]; !ok {
		a, err := unwrapAEAD(b.ring, wk)
		if err != nil {
			return err
		}
		b.keys[wk.ID] = a
	}
	if makeCurrent {
		b.current = wk.ID
	}
	return nil
}

// Current is the id of the DEK used for new writes (0: none yet).
func (b *Barrier) Current() uint32 {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.current
}

func (b *Barrier) aead(id uint32) (cipher.AEAD, error) {
	if b.keys == nil {
		return nil, ErrSealed
	}
	a, ok := b.keys[id]
	if !ok {
		return nil, fmt.Errorf("data key %d: %w", id, ErrUnknownKey)
	}
	return a, nil
}

func valueAAD(keyID uint32, objectID string, version uint64) []byte {
	aad := make([]byte, 0, 32+len(objectID))
	aad = append(aad, "coffer value v1"...)
	aad = binary.BigEndian.AppendUint32(aad, keyID)
	aad = binary.BigEndian.AppendUint32(aad, uint32(len(objectID))) // #nosec G115 -- object ids are generated UUIDs and names bounded far below 4 GiB by the request size limits
	aad = append(aad, objectID...)
	aad = binary.BigEndian.AppendUint64(aad, version)
	return aad
}

// EncryptValue seals a stored value for (objectID, version) under the current DEK.
func (b *Barrier) EncryptValue(objectID string, version uint64, plaintext []byte) ([]byte, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	a, err := b.aead(b.current)
	if err != nil {
		return nil, err
	}
	out := make([]byte, valueHeader, valueHeader+len(plaintext)+a.Overhead())
	out[0] = valueVersion
	binary.BigEndian.PutUint32(out[1:5], b.current)
	if _, err := rand.Read(out[5:valueHeader]); err != nil {
		return nil, fmt.Errorf("nonce: %w", err)
	}
	return a.Seal(out, out[5:valueHeader], plaintext, valueAAD(b.current, objectID, version)), nil
}

// DecryptValue opens a value sealed by EncryptValue for the same (objectID, version).
func (b *Barrier) DecryptValue(objectID string, version uint64, sealed []byte) ([]byte, error) {
	if len(sealed) >= valueHeader+16 && sealed[0] > valueVersion {
		return nil, fmt.Errorf("%w: sealed value format version %d, this build reads version %d", ErrFormat, sealed[0], valueVersion)
	}
	if len(sealed) < valueHeader+16 || sealed[0] != valueVersion {
		return nil, ErrFormat
	}
	id := binary.BigEndian.Uint32(sealed[1:5])
	b.mu.RLock()
	defer b.mu.RUnlock()
	a, err := b.aead(id)
	if err != nil {
		return nil, err
	}
	pt, err := a.Open(nil, sealed[5:valueHeader], sealed[valueHeader:], valueAAD(id, objectID, version))
	if err != nil {
		return nil, fmt.Errorf("object %s version %d: %w", objectID, version, ErrAuth)
	}
	return pt, nil
}

// ValueKeyID reports which DEK sealed a value (for rewrap/audit), or 0.
func ValueKeyID(sealed []byte) uint32 {
	if len(sealed) < valueHeader {
		return 0
	}
	return binary.BigEndian.Uint32(sealed[1:5])
}

var journalDomain = []byte("coffer journal v1")

// Seal implements journal.Cipher: nonce||ciphertext under DEK keyID.
func (b *Barrier) Seal(keyID uint32, plaintext, aad []byte) ([]byte, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	a, err := b.aead(keyID)
	if err != nil {
		return nil, err
	}
	out := make([]byte, nonceSize, nonceSize+len(plaintext)+a.Overhead())
	if _, err := rand.Read(out); err != nil {
		return nil, fmt.Errorf("nonce: %w", err)
	}
	return a.Seal(out, out, plaintext, append(append([]byte{}, journalDomain...), aad...)), nil
}

// Open implements journal.Cipher.
func (b *Barrier) Open(keyID uint32, ciphertext, aad []byte) ([]byte, error) {
	if len(ciphertext) < nonceSize+16 {
		return nil, ErrFormat
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	a, err := b.aead(keyID)
	if err != nil {
		return nil, err
	}
	pt, err := a.Open(nil, ciphertext[:nonceSize], ciphertext[nonceSize:], append(append([]byte{}, journalDomain...), aad...))
	if err != nil {
		return nil, ErrAuth
	}
	return pt, nil
}
