package keystore

import (
	"bytes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"sync"
	"time"
)

// Keyring is the opened keystore in memory: every MEK generation, the current
// one, and what sealed keystore.ks (KEK, salt, KDF parameters) so that Rotate
// works without the passphrase. It is safe for concurrent use.
//
// A Keyring never prints secrets: String, every fmt verb (it implements
// fmt.Formatter and fmt.GoStringer), slog (LogValuer) and json.Marshal show
// only the current generation and the number of generations.
type Keyring struct {
	r *ring
}

// ring holds the state behind a Keyring. Keeping it behind a pointer means a
// copied Keyring value still formats through the methods below. The second
// pointer (ringData) covers fmt's fallbacks that print an unexported pointer
// field dereferenced one level (e.g. %s on a struct holding a Keyring in an
// unexported field): they show only an address, never the key bytes.
type ring struct {
	*ringData
}

type ringData struct {
	mu      sync.RWMutex
	wiped   bool
	gens    []ringGen // ascending by number
	current uint32
	seal    sealing
	ksHash  [sha256.Size]byte // SHA-256 of the keystore.ks bytes this ring belongs to
}

type ringGen struct {
	mek
	aead cipher.AEAD
}

// Generation describes one MEK generation (no key bytes).
type Generation struct {
	Number  uint32
	Created time.Time
}

// newKeyring copies gens and sl.kek.
func newKeyring(gens []mek, current uint32, sl sealing, ksHash [sha256.Size]byte) (*Keyring, error) {
	r := &ring{&ringData{current: current, ksHash: ksHash, seal: sl}}
	r.seal.kek = bytes.Clone(sl.kek)
	for _, g := range gens {
		if len(g.key) != keySize {
			return nil, fmt.Errorf("master key generation %d has %d-byte key, expected %d", g.number, len(g.key), keySize)
		}
		key := bytes.Clone(g.key)
		aead, err := newGCM(key)
		if err != nil {
			return nil, fmt.Errorf("master key generation %d: %w", g.number, err)
		}
		r.gens = append(r.gens, ringGen{mek: mek{number: g.number, created: g.created, key: key}, aead: aead})
	}
	sort.Slice(r.gens, func(i, j int) bool { return r.gens[i].number < r.gens[j].number })
	if r.find(current) == nil {
		return nil, fmt.Errorf("current master key generation %d missing", current)
	}
	return &Keyring{r: r}, nil
}

// meks returns copies of the generations (wipe them with wipeMEKs). Caller
// holds r.mu.
func (r *ring) meks() []mek {
	out := make([]mek, len(r.gens), len(r.gens)+1)
	for i, g := range r.gens {
		out[i] = mek{number: g.number, created: g.created, key: bytes.Clone(g.key)}
	}
	return out
}

// find returns the generation or nil. Caller holds r.mu.
func (r *ring) find(n uint32) *ringGen {
	i := sort.Search(len(r.gens), func(i int) bool { return r.gens[i].number >= n })
	if i < len(r.gens) && r.gens[i].number == n {
		return &r.gens[i]
	}
	return nil
}

// Current returns the current MEK generation (0 for a zero or wiped Keyring).
func (k *Keyring) Current() uint32 {
	if k == nil || k.r == nil {
		return 0
	}
	k.r.mu.RLock()
	defer k.r.mu.RUnlock()
	if k.r.wiped {
		return 0
	}
	return k.r.current
}

// Generations lists the MEK generations in ascending order, without key bytes.
func (k *Keyring) Generations() []Generation {
	if k == nil || k.r == nil {
		return nil
	}
	k.r.mu.RLock()
	defer k.r.mu.RUnlock()
	if k.r.wiped {
		return nil
	}
	out := make([]Generation, len(k.r.gens))
	for i, g := range k.r.gens {
		out[i] = Generation{Number: g.number, Created: g.created}
	}
	return out
}

// Wrap encrypts plaintext under the current MEK with AES-256-GCM, a random
// 96-bit nonce and aad as associated data. It returns the generation used and
// nonce || ciphertext.
func (k *Keyring) Wrap(plaintext, aad []byte) (gen uint32, wrapped []byte, err error) {
	if k == nil || k.r == nil {
		return 0, nil, errors.New("keystore: wrap with an empty keyring")
	}
	k.r.mu.RLock()
	defer k.r.mu.RUnlock()
	if k.r.wiped {
		return 0, nil, ErrKeyringWiped
	}
	g := k.r.find(k.r.current)
	out := make([]byte, nonceSize, nonceSize+len(plaintext)+tagSize)
	if _, err := rand.Read(out); err != nil {
		return 0, nil, fmt.Errorf("keystore: generate nonce: %w", err)
	}
	return g.number, g.aead.Seal(out, out[:nonceSize], plaintext, aad), nil
}

// Unwrap reverses Wrap with MEK generation gen.
func (k *Keyring) Unwrap(gen uint32, wrapped, aad []byte) ([]byte, error) {
	if k == nil || k.r == nil {
		return nil, errors.New("keystore: unwrap with an empty keyring")
	}
	k.r.mu.RLock()
	defer k.r.mu.RUnlock()
	if k.r.wiped {
		return nil, ErrKeyringWiped
	}
	g := k.r.find(gen)
	if g == nil {
		return nil, fmt.Errorf("%w: %d (keyring holds %d generations, current %d)", ErrUnknownGeneration, gen, len(k.r.gens), k.r.current)
	}
	if len(wrapped) < nonceSize+tagSize {
		return nil, fmt.Errorf("%w: wrapped value is %d bytes, shorter than nonce and tag (%d)", ErrUnwrap, len(wrapped), nonceSize+tagSize)
	}
	p, err := g.aead.Open(nil, wrapped[:nonceSize], wrapped[nonceSize:], aad)
	if err != nil {
		return nil, fmt.Errorf("%w (master key generation %d)", ErrUnwrap, gen)
	}
	return p, nil
}

// Wipe zeroes the key bytes and KEK held by k and makes it unusable (Wrap,
// Unwrap, Rotate and EnableAutoOpen then fail). Best effort: the AES key
// schedules inside crypto/cipher cannot be zeroed and are left to the GC.
// Keyrings returned by Rotate or ChangePassphrase hold their own copies and
// are not affected.
func (k *Keyring) Wipe() {
	if k == nil || k.r == nil {
		return
	}
	k.r.mu.Lock()
	defer k.r.mu.Unlock()
	for i := range k.r.gens {
		clear(k.r.gens[i].key)
		k.r.gens[i].aead = nil
	}
	clear(k.r.seal.kek)
	k.r.gens, k.r.wiped = nil, true
}

func (k Keyring) summary() (current uint32, n int) {
	if k.r == nil {
		return 0, 0
	}
	k.r.mu.RLock()
	defer k.r.mu.RUnlock()
	return k.r.current, len(k.r.gens)
}

// String returns "keystore.Keyring{current: N, generations: M}".
func (k Keyring) String() string {
	c, n := k.summary()
	return fmt.Sprintf("keystore.Keyring{current: %d, generations: %d}", c, n)
}

// GoString is String: %#v shows no key bytes either.
func (k Keyring) GoString() string { return k.String() }

// Format prints String for every verb and flag.
func (k Keyring) Format(f fmt.State, _ rune) { io.WriteString(f, k.String()) } // #nosec G104 -- fmt.State writes go to fmt's own buffer and never fail

// MarshalText returns String, for encoders other than encoding/json.
func (k Keyring) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// LogValue keeps slog from reflecting over the keyring.
func (k Keyring) LogValue() slog.Value { return slog.StringValue(k.String()) }

// MarshalJSON returns a redacted summary: {"current":N,"generations":M,"redacted":true}.
func (k Keyring) MarshalJSON() ([]byte, error) {
	c, n := k.summary()
	return json.Marshal(struct {
		Current     uint32 `json:"current"`
		Generations int    `json:"generations"`
		Redacted    bool   `json:"redacted"`
	}{c, n, true})
}

// ExportMEKs encodes every master key generation (the MEK list encoding of
// keystore.ks, FORMAT.md) for a backup. The bytes are key material: the
// caller encrypts them (the backup payload is age-encrypted) and clears them.
func (k *Keyring) ExportMEKs() ([]byte, error) {
	if k == nil || k.r == nil {
		return nil, errors.New("keystore: export of an empty keyring")
	}
	k.r.mu.RLock()
	defer k.r.mu.RUnlock()
	if k.r.wiped {
		return nil, errors.New("keystore: export of a wiped keyring")
	}
	gens := k.r.meks()
	defer wipeMEKs(gens)
	return encodeMEKs(gens, k.r.current), nil
}

// ImportMEKs decodes what ExportMEKs wrote into a keyring that can unwrap
// (it cannot re-seal a keystore.ks: that needs Store.InitFrom with a new
// passphrase). It is how a restore reads a backup's master keys.
func ImportMEKs(b []byte) (*Keyring, error) {
	gens, current, err := decodeMEKs(b)
	if err != nil {
		return nil, fmt.Errorf("%w: master keys in backup: %v", ErrCorrupt, err)
	}
	defer wipeMEKs(gens)
	return newKeyring(gens, current, sealing{}, [sha256.Size]byte{})
}
