package service

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/coffer-kms/coffer/internal/lifecycle"
	"github.com/coffer-kms/coffer/internal/state"
)

// Transit: encryption as a service with keys that never leave Coffer. A
// Transit mount serves one wallet; a Transit key is an AES symmetric-key
// object in it (AES-128 is "aes128-gcm96", AES-256 "aes256-gcm96"); its
// versions are the object's versions. The service does the AES-GCM: the
// transport only ever sees plaintexts and ciphertexts, never key material.
// A ciphertext is "vault:v<version>:" + base64(12-byte nonce | sealed data | 16-byte tag).

// Transit key types.
const (
	TransitAES128 = "aes128-gcm96"
	TransitAES256 = "aes256-gcm96"
)

// MaxTransitBatch is the largest batch_input accepted.
const MaxTransitBatch = 1000

// TransitKey describes a Transit key (never its material).
type TransitKey struct {
	Name     string               `json:"name"`
	Type     string               `json:"type"`
	State    string               `json:"state"`
	Latest   uint64               `json:"latest_version"`
	Created  time.Time            `json:"created"`
	Versions map[uint64]time.Time `json:"versions"`
	// PublicKeys: a signing key's public key per version (PKIX DER).
	PublicKeys map[uint64][]byte `json:"public_keys,omitempty"`
}

func transitKeyOf(o state.Object) (TransitKey, error) {
	typ, err := transitType(o)
	if err != nil {
		return TransitKey{}, err
	}
	k := TransitKey{Name: o.Name, Type: typ, State: string(o.State), Latest: o.Latest, Created: o.Created, Versions: map[uint64]time.Time{}}
	for _, v := range o.Versions {
		if !v.Destroyed {
			k.Versions[v.Version] = v.Created
			if len(v.Public) > 0 {
				if k.PublicKeys == nil {
					k.PublicKeys = map[uint64][]byte{}
				}
				k.PublicKeys[v.Version] = v.Public
			}
		}
	}
	return k, nil
}

func transitType(o state.Object) (string, error) {
	if o.Type == TypeSymmetricKey && strings.EqualFold(o.Algorithm, "AES") {
		switch o.Length {
		case 128:
			return TransitAES128, nil
		case 256:
			return TransitAES256, nil
		}
	}
	if t := transitSigningType(o); t != "" {
		return t, nil
	}
	return "", fmt.Errorf("%w: %s/%s is a %d-bit %s %s, not a Transit key (AES-128 or AES-256)", ErrConflict, o.Wallet, o.Name, o.Length, o.Algorithm, o.Type)
}

// CreateTransitKey creates a Transit key (read_modify). Creating a key that
// exists with the same type returns it unchanged, as Vault does.
func (s *Objects) CreateTransitKey(ctx context.Context, wallet, name, typ string) (TransitKey, error) {
	length, objType, alg := 256, TypeSymmetricKey, "AES"
	switch typ {
	case "", TransitAES256:
	case TransitAES128:
		length = 128
	case TransitECDSAP256:
		objType, alg = TypeKeyPair, "EC"
	case TransitECDSAP384:
		objType, alg, length = TypeKeyPair, "EC", 384
	default:
		return TransitKey{}, fmt.Errorf("%w: Transit key type %q: use %s, %s, %s or %s", ErrInvalid, typ, TransitAES256, TransitAES128, TransitECDSAP256, TransitECDSAP384)
	}
	if err := ValidName(name); err != nil {
		return TransitKey{}, err
	}
	if _, err := s.authorizeWallet(ctx, wallet, PermReadModify, "creating a Transit key"); err != nil {
		return TransitKey{}, err
	}
	if o, err := s.st.ObjectByName(wallet, name); err == nil {
		note(ctx, o.ID)
		k, err := transitKeyOf(o)
		if err != nil {
			return TransitKey{}, err
		}
		if typ != "" && k.Type != typ {
			return TransitKey{}, fmt.Errorf("%w: Transit key %s/%s exists with type %s", ErrConflict, wallet, name, k.Type)
		}
		return k, nil
	}
	obj, err := s.CreateObject(ctx, CreateObject{Wallet: wallet, Name: name, Type: objType, Algorithm: alg, Length: length})
	if errors.Is(err, ErrConflict) {
		if o, lerr := s.st.ObjectByName(wallet, name); lerr == nil {
			return transitKeyOf(o) // created concurrently
		}
	}
	if err != nil {
		return TransitKey{}, err
	}
	o, err := s.st.Object(obj.ID)
	if err != nil {
		return TransitKey{}, mapStateErr(err)
	}
	return transitKeyOf(o)
}

// TransitKeyInfo describes a Transit key (read).
func (s *Objects) TransitKeyInfo(ctx context.Context, wallet, name string) (TransitKey, error) {
	o, err := s.readable(ctx, Ref{Wallet: wallet, Name: name}, "reading a Transit key")
	if err != nil {
		return TransitKey{}, err
	}
	return transitKeyOf(o)
}

// TransitKeys lists the Transit keys of a wallet by name (read).
func (s *Objects) TransitKeys(ctx context.Context, wallet string) ([]string, error) {
	if _, err := s.authorizeWallet(ctx, wallet, PermRead, "listing Transit keys"); err != nil {
		return nil, err
	}
	var ids []string
	if err := s.st.ObjectNames(wallet, "", func(_, id string) bool { ids = append(ids, id); return true }); err != nil {
		return nil, err
	}
	var out []string
	for _, id := range ids {
		o, err := s.st.Object(id)
		if err != nil {
			return nil, mapStateErr(err)
		}
		if _, err := transitType(o); err == nil {
			out = append(out, o.Name)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no Transit keys in wallet %q", ErrNotFound, wallet)
	}
	return out, nil
}

// RotateTransitKey adds a key version (read_modify).
func (s *Objects) RotateTransitKey(ctx context.Context, wallet, name string) (TransitKey, error) {
	o, err := s.readable(ctx, Ref{Wallet: wallet, Name: name}, "rotating a Transit key")
	if err != nil {
		return TransitKey{}, err
	}
	if _, err := transitType(o); err != nil {
		return TransitKey{}, err
	}
	if _, err := s.RotateObject(ctx, Ref{ID: o.ID}, nil); err != nil {
		return TransitKey{}, err
	}
	o, err = s.st.Object(o.ID)
	if err != nil {
		return TransitKey{}, mapStateErr(err)
	}
	return transitKeyOf(o)
}

// TransitItem is one element of an encrypt, decrypt or rewrap request.
type TransitItem struct {
	Plaintext      []byte // encrypt
	Ciphertext     string // decrypt, rewrap
	AssociatedData []byte
	KeyVersion     uint64 // encrypt, rewrap: 0 = latest
	Reference      string
}

// TransitResult is one element's result; Err is set when that element failed.
type TransitResult struct {
	Ciphertext string
	Plaintext  []byte
	KeyVersion uint64
	Reference  string
	Err        error
}

// transitKeyring holds the unsealed versions of one Transit key for one request.
type transitKeyring struct {
	s     *Objects
	o     state.Object
	aeads map[uint64]cipher.AEAD
}

// material unseals one version of the key; the caller clears it. A version
// the key does not have, a destroyed one, or any version of a key that is
// not usable (deactivated, revoked, destroyed) is refused.
func (kr *transitKeyring) material(version uint64) ([]byte, error) {
	var v *state.Version
	for i := range kr.o.Versions {
		if kr.o.Versions[i].Version == version {
			v = &kr.o.Versions[i]
		}
	}
	if v == nil {
		return nil, fmt.Errorf("%w: key %s has no version %d (latest %d)", ErrInvalid, kr.o.Name, version, kr.o.Latest)
	}
	if v.Destroyed || !lifecycle.Usable(kr.o.State) {
		return nil, fmt.Errorf("%w: key %s version %d is destroyed", ErrInvalid, kr.o.Name, version)
	}
	sealed, err := kr.s.st.Material(kr.o.ID, version)
	if err != nil {
		return nil, mapStateErr(err)
	}
	key, err := kr.s.bar.DecryptValue(kr.o.ID, version, sealed)
	if err != nil {
		return nil, fmt.Errorf("key %s version %d: %w", kr.o.ID, version, err)
	}
	return key, nil
}

func (kr *transitKeyring) aead(version uint64) (cipher.AEAD, error) {
	if a, ok := kr.aeads[version]; ok {
		return a, nil
	}
	if kr.o.Type != TypeSymmetricKey {
		if !slices.ContainsFunc(kr.o.Versions, func(v state.Version) bool { return v.Version == version }) {
			return nil, fmt.Errorf("%w: key %s has no version %d (latest %d)", ErrInvalid, kr.o.Name, version, kr.o.Latest)
		}
		return nil, fmt.Errorf("%w: key %s is a signing key (%s): it signs and verifies, and does not encrypt", ErrInvalid, kr.o.Name, transitSigningType(kr.o))
	}
	key, err := kr.material(version)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("key %s version %d: %w", kr.o.ID, version, err)
	}
	a, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	kr.aeads[version] = a
	return a, nil
}

func (kr *transitKeyring) seal(version uint64, plaintext, aad []byte) (string, uint64, error) {
	if !lifecycle.CanProtect(kr.o.State) {
		return "", 0, fmt.Errorf("%w: key %s is %s; only an active key encrypts", ErrState, kr.o.Name, kr.o.State)
	}
	if version == 0 {
		version = kr.o.Latest
	}
	a, err := kr.aead(version)
	if err != nil {
		return "", 0, err
	}
	nonce := make([]byte, a.NonceSize())
	randRead(nonce)
	out := a.Seal(nonce, nonce, plaintext, aad) // #nosec G407 -- the nonce is fresh random bytes (randRead above), not a constant
	return "vault:v" + strconv.FormatUint(version, 10) + ":" + base64.StdEncoding.EncodeToString(out), version, nil
}

func (kr *transitKeyring) open(ciphertext string, aad []byte) ([]byte, uint64, error) {
	if kr.o.State == lifecycle.PreActive {
		return nil, 0, fmt.Errorf("%w: key %s is pre-active", ErrState, kr.o.Name)
	}
	rest, ok := strings.CutPrefix(ciphertext, "vault:v")
	vs, body, ok2 := strings.Cut(rest, ":")
	version, err := strconv.ParseUint(vs, 10, 64)
	if !ok || !ok2 || err != nil || version == 0 {
		return nil, 0, fmt.Errorf("%w: ciphertext is not in the form vault:v<version>:<base64>", ErrInvalid)
	}
	raw, err := base64.StdEncoding.DecodeString(body)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: ciphertext: invalid base64", ErrInvalid)
	}
	a, err := kr.aead(version)
	if err != nil {
		return nil, 0, err
	}
	if len(raw) < a.NonceSize()+a.Overhead() {
		return nil, 0, fmt.Errorf("%w: ciphertext too short", ErrInvalid)
	}
	pt, err := a.Open(nil, raw[:a.NonceSize()], raw[a.NonceSize():], aad)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: cipher: message authentication failed (wrong key, associated data or a damaged ciphertext)", ErrInvalid)
	}
	return pt, version, nil
}

// transitKeyring loads a Transit key for use with permission need.
func (s *Objects) transitKeyring(ctx context.Context, wallet, name string, need Permission, what string) (*transitKeyring, error) {
	if err := ValidName(name); err != nil {
		return nil, err
	}
	if _, err := caller(ctx); err != nil {
		return nil, err
	}
	if _, err := s.authorizeWallet(ctx, wallet, need, what); err != nil {
		return nil, err
	}
	o, err := s.st.ObjectByName(wallet, name)
	if err != nil {
		note(ctx, wallet+"/"+name)
		return nil, mapStateErr(err)
	}
	note(ctx, o.ID)
	if _, err := transitType(o); err != nil {
		return nil, err
	}
	return &transitKeyring{s: s, o: o, aeads: map[uint64]cipher.AEAD{}}, nil
}

func checkBatch(n int) error {
	if n == 0 || n > MaxTransitBatch {
		return fmt.Errorf("%w: send 1 to %d items, got %d", ErrInvalid, MaxTransitBatch, n)
	}
	return nil
}

// TransitEncrypt encrypts each item with the key (read). With upsert, a
// missing key is created first (aes256-gcm96; needs read_modify), as Vault's
// encrypt does.
func (s *Objects) TransitEncrypt(ctx context.Context, wallet, name string, items []TransitItem, upsert bool) ([]TransitResult, error) {
	if err := checkBatch(len(items)); err != nil {
		return nil, err
	}
	unlock, err := s.openForRead()
	if err != nil {
		return nil, err
	}
	kr, err := s.transitKeyring(ctx, wallet, name, PermRead, "encrypting with a Transit key")
	if errors.Is(err, ErrNotFound) && upsert {
		unlock()
		if _, err := s.CreateTransitKey(ctx, wallet, name, TransitAES256); err != nil {
			return nil, err
		}
		if unlock, err = s.openForRead(); err != nil {
			return nil, err
		}
		kr, err = s.transitKeyring(ctx, wallet, name, PermRead, "encrypting with a Transit key")
	}
	defer unlock()
	if err != nil {
		return nil, err
	}
	out := make([]TransitResult, len(items))
	for i, it := range items {
		out[i].Reference = it.Reference
		out[i].Ciphertext, out[i].KeyVersion, out[i].Err = kr.seal(it.KeyVersion, it.Plaintext, it.AssociatedData)
	}
	return out, nil
}

// TransitDecrypt decrypts each item's ciphertext (read).
func (s *Objects) TransitDecrypt(ctx context.Context, wallet, name string, items []TransitItem) ([]TransitResult, error) {
	return s.transitEach(ctx, wallet, name, items, "decrypting with a Transit key", func(kr *transitKeyring, it TransitItem) (r TransitResult) {
		r.Plaintext, r.KeyVersion, r.Err = kr.open(it.Ciphertext, it.AssociatedData)
		return r
	})
}

// TransitRewrap decrypts each ciphertext and encrypts it again with the
// latest (or the given) key version, without returning the plaintext (read).
func (s *Objects) TransitRewrap(ctx context.Context, wallet, name string, items []TransitItem) ([]TransitResult, error) {
	return s.transitEach(ctx, wallet, name, items, "rewrapping with a Transit key", func(kr *transitKeyring, it TransitItem) (r TransitResult) {
		pt, _, err := kr.open(it.Ciphertext, it.AssociatedData)
		if err != nil {
			r.Err = err
			return r
		}
		defer clear(pt)
		r.Ciphertext, r.KeyVersion, r.Err = kr.seal(it.KeyVersion, pt, it.AssociatedData)
		return r
	})
}

// transitEach runs fn on every item of a batch with the key's versions
// (read permission), keeping each item's reference.
func (s *Objects) transitEach(ctx context.Context, wallet, name string, items []TransitItem, what string, fn func(*transitKeyring, TransitItem) TransitResult) ([]TransitResult, error) {
	if err := checkBatch(len(items)); err != nil {
		return nil, err
	}
	unlock, err := s.openForRead()
	if err != nil {
		return nil, err
	}
	defer unlock()
	kr, err := s.transitKeyring(ctx, wallet, name, PermRead, what)
	if err != nil {
		return nil, err
	}
	out := make([]TransitResult, len(items))
	for i, it := range items {
		out[i] = fn(kr, it)
		out[i].Reference = it.Reference
	}
	return out, nil
}

// DataKey is a fresh data key: its plaintext (empty for "wrapped") and its
// ciphertext under the Transit key.
type DataKey struct {
	Plaintext  []byte
	Ciphertext string
	KeyVersion uint64
}

// TransitDataKey generates a random data key of bits (128, 256 or 512) and
// returns it encrypted under the Transit key, and in plaintext when asked (read).
func (s *Objects) TransitDataKey(ctx context.Context, wallet, name string, bits int, withPlaintext bool, aad []byte) (DataKey, error) {
	if bits == 0 {
		bits = 256
	}
	if bits != 128 && bits != 256 && bits != 512 {
		return DataKey{}, fmt.Errorf("%w: bits %d: use 128, 256 or 512", ErrInvalid, bits)
	}
	unlock, err := s.openForRead()
	if err != nil {
		return DataKey{}, err
	}
	defer unlock()
	kr, err := s.transitKeyring(ctx, wallet, name, PermRead, "generating a data key")
	if err != nil {
		return DataKey{}, err
	}
	dk := make([]byte, bits/8)
	randRead(dk)
	ct, v, err := kr.seal(0, dk, aad)
	if err != nil {
		clear(dk)
		return DataKey{}, err
	}
	out := DataKey{Ciphertext: ct, KeyVersion: v}
	if withPlaintext {
		out.Plaintext = dk
	} else {
		clear(dk)
	}
	return out, nil
}
