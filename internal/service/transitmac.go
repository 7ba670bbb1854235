package service

import (
	"context"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha3"
	"crypto/sha512"
	"encoding/base64"
	"fmt"
	"hash"
	"strconv"
	"strings"

	"github.com/coffer-kms/coffer/internal/lifecycle"
)

// Transit HMAC, hashing and random bytes. An HMAC key is derived from a
// Transit key version with HKDF-SHA256 (its own info string), so a MAC never
// uses the AES key itself and still rotates with the Transit key. An HMAC is
// "vault:v<version>:" + base64(mac).

// MaxRandomBytes is the most random bytes one request gets.
const MaxRandomBytes = 1 << 16

// hashFuncs are the algorithms Transit's hash and hmac take.
var hashFuncs = map[string]func() hash.Hash{
	"sha2-224": sha256.New224, "sha2-256": sha256.New, "sha2-384": sha512.New384, "sha2-512": sha512.New,
	"sha3-224": func() hash.Hash { return sha3.New224() }, "sha3-256": func() hash.Hash { return sha3.New256() },
	"sha3-384": func() hash.Hash { return sha3.New384() }, "sha3-512": func() hash.Hash { return sha3.New512() },
}

func hashFunc(alg string) (func() hash.Hash, error) {
	if alg == "" {
		alg = "sha2-256"
	}
	f, ok := hashFuncs[alg]
	if !ok {
		return nil, fmt.Errorf("%w: unsupported hash algorithm %q (sha2-224, sha2-256, sha2-384, sha2-512, sha3-224, sha3-256, sha3-384, sha3-512)", ErrInvalid, alg)
	}
	return f, nil
}

// TransitHash hashes input with alg (sha2-256 when empty). It needs an
// authenticated caller and no key.
func (s *Objects) TransitHash(ctx context.Context, alg string, input []byte) ([]byte, error) {
	if _, err := caller(ctx); err != nil {
		return nil, err
	}
	f, err := hashFunc(alg)
	if err != nil {
		return nil, err
	}
	h := f()
	h.Write(input)
	return h.Sum(nil), nil
}

// TransitRandom returns n random bytes (32 when 0) from the service's source.
func (s *Objects) TransitRandom(ctx context.Context, n int) ([]byte, error) {
	if _, err := caller(ctx); err != nil {
		return nil, err
	}
	if n == 0 {
		n = 32
	}
	if n < 1 || n > MaxRandomBytes {
		return nil, fmt.Errorf("%w: bytes %d: ask for 1 to %d", ErrInvalid, n, MaxRandomBytes)
	}
	b := make([]byte, n)
	randRead(b)
	return b, nil
}

// macKey derives the HMAC key of a Transit key version.
func (kr *transitKeyring) macKey(version uint64) ([]byte, error) {
	key, err := kr.material(version)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	mk, err := hkdf.Key(sha256.New, key, nil, "coffer transit hmac", 32)
	if err != nil {
		return nil, fmt.Errorf("deriving the HMAC key of %s version %d: %w", kr.o.ID, version, err)
	}
	return mk, nil
}

func (kr *transitKeyring) mac(alg string, version uint64, input []byte) ([]byte, uint64, error) {
	f, err := hashFunc(alg)
	if err != nil {
		return nil, 0, err
	}
	if version == 0 {
		version = kr.o.Latest
	}
	k, err := kr.macKey(version)
	if err != nil {
		return nil, 0, err
	}
	defer clear(k)
	m := hmac.New(f, k)
	m.Write(input)
	return m.Sum(nil), version, nil
}

// TransitHMAC computes the HMAC of input with a Transit key version (0:
// the latest) and hash algorithm alg (read; an active key).
func (s *Objects) TransitHMAC(ctx context.Context, wallet, name, alg string, version uint64, input []byte) (string, uint64, error) {
	unlock, err := s.openForRead()
	if err != nil {
		return "", 0, err
	}
	defer unlock()
	kr, err := s.transitKeyring(ctx, wallet, name, PermRead, "computing an HMAC with a Transit key")
	if err != nil {
		return "", 0, err
	}
	// A MAC protects data, as a signature does: only an active key makes
	// one (a deactivated or compromised key still verifies).
	if !lifecycle.CanProtect(kr.o.State) {
		return "", 0, fmt.Errorf("%w: key %s is %s; only an active key makes an HMAC", ErrState, kr.o.Name, kr.o.State)
	}
	sum, v, err := kr.mac(alg, version, input)
	if err != nil {
		return "", 0, err
	}
	return "vault:v" + strconv.FormatUint(v, 10) + ":" + base64.StdEncoding.EncodeToString(sum), v, nil
}

// TransitVerifyHMAC checks an HMAC made by TransitHMAC (read).
func (s *Objects) TransitVerifyHMAC(ctx context.Context, wallet, name, alg, mac string, input []byte) (bool, error) {
	rest, ok := strings.CutPrefix(mac, "vault:v")
	vs, body, ok2 := strings.Cut(rest, ":")
	version, err := strconv.ParseUint(vs, 10, 64)
	if !ok || !ok2 || err != nil || version == 0 {
		return false, fmt.Errorf("%w: hmac is not in the form vault:v<version>:<base64>", ErrInvalid)
	}
	want, err := base64.StdEncoding.DecodeString(body)
	if err != nil {
		return false, fmt.Errorf("%w: hmac: invalid base64", ErrInvalid)
	}
	unlock, err := s.openForRead()
	if err != nil {
		return false, err
	}
	defer unlock()
	kr, err := s.transitKeyring(ctx, wallet, name, PermRead, "verifying an HMAC with a Transit key")
	if err != nil {
		return false, err
	}
	sum, _, err := kr.mac(alg, version, input)
	if err != nil {
		return false, err
	}
	return hmac.Equal(sum, want), nil
}
