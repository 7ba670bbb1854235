package service

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"regexp"
	"strings"
	"time"

	"github.com/coffer-kms/coffer/internal/state"
)

// MaxSecretBytes is the largest secret value accepted.
const MaxSecretBytes = 64 * 1024

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,254}$`)

// ValidName reports whether name is an acceptable object name.
func ValidName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("%w: name %q: use 1-255 characters from A-Z a-z 0-9 _ . - /, starting with a letter or digit", ErrInvalid, name)
	}
	for _, seg := range strings.Split(name, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("%w: name %q: empty, \".\" and \"..\" path segments are not allowed", ErrInvalid, name)
		}
	}
	return nil
}

// Secret is one version of a secret as returned to callers.
type Secret struct {
	ID      string    `json:"id"`
	Name    string    `json:"name"`
	Version uint64    `json:"version"`
	Latest  uint64    `json:"latest_version"`
	Created time.Time `json:"created"`
	Value   []byte    `json:"value"`
}

// PutSecret stores value as the next version of name and returns the version.
func (s *Service) PutSecret(ctx context.Context, name string, value []byte) (uint64, error) {
	if err := ValidName(name); err != nil {
		return 0, err
	}
	if len(value) == 0 || len(value) > MaxSecretBytes {
		return 0, fmt.Errorf("%w: value must be 1 to %d bytes, got %d", ErrInvalid, MaxSecretBytes, len(value))
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.requireOpenLocked(); err != nil {
		return 0, err
	}
	l := &s.nameLocks[lockSlot(name)]
	l.Lock()
	defer l.Unlock()
	for attempt := 0; ; attempt++ {
		id, version := "", uint64(1)
		m, err := s.st.Secret(name)
		switch {
		case err == nil:
			id, version = m.ID, m.Latest+1
		case errors.Is(err, state.ErrNotFound):
			id = newUUID()
		default:
			return 0, err
		}
		sealed, err := s.bar.EncryptValue(id, version, value)
		if err != nil {
			return 0, err
		}
		res, err := s.applyResult(ctx, state.TypeSecretPut, state.SecretPut{ID: id, Name: name, Version: version, Value: sealed})
		if errors.Is(err, ErrConflict) && attempt < 3 {
			continue
		}
		if err != nil {
			return 0, err
		}
		v, ok := res.(uint64)
		if !ok || v != version {
			// Never report success for a write the state machine did not apply.
			return 0, fmt.Errorf("secret %q: the state machine did not confirm version %d (result %v)", name, version, res)
		}
		return v, nil
	}
}

// GetSecret returns version (0 = latest) of name, decrypted.
func (s *Service) GetSecret(ctx context.Context, name string, version uint64) (Secret, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.requireOpenLocked(); err != nil {
		return Secret{}, err
	}
	m, err := s.st.Secret(name)
	if err != nil {
		return Secret{}, mapStateErr(err)
	}
	if version == 0 {
		version = m.Latest
	}
	var created time.Time
	found := false
	for _, v := range m.Versions {
		if v.Version == version {
			created, found = v.Created, true
		}
	}
	if !found {
		return Secret{}, fmt.Errorf("%w: secret %q has no version %d (latest %d)", ErrNotFound, name, version, m.Latest)
	}
	sealed, err := s.st.SecretValue(m.ID, version)
	if err != nil {
		return Secret{}, mapStateErr(err)
	}
	pt, err := s.bar.DecryptValue(m.ID, version, sealed)
	if err != nil {
		return Secret{}, fmt.Errorf("secret %q version %d: %w", name, version, err)
	}
	return Secret{ID: m.ID, Name: name, Version: version, Latest: m.Latest, Created: created, Value: pt}, nil
}

func lockSlot(name string) int {
	h := fnv.New32a()
	h.Write([]byte(name))
	return int(h.Sum32() % 64)
}

func newUUID() string {
	b := make([]byte, 16)
	randRead(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// Identity is who is calling.
type Identity struct {
	Name   string
	Policy string // "root" for now; roles come with the key-service issue
	Local  bool   // came through the local control socket
}

// TokenPrefix marks Coffer tokens so they are easy to spot in leaked text.
const TokenPrefix = "cof_"

func hashToken(tok string) string {
	h := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(h[:])
}

func (s *Service) createTokenLocked(ctx context.Context, name, policy string) (string, error) {
	b := make([]byte, 32)
	randRead(b)
	tok := TokenPrefix + base64.RawURLEncoding.EncodeToString(b)
	err := s.applyLocked(ctx, state.TypeTokenCreate, state.Token{Hash: hashToken(tok), Policy: policy, Name: name, Created: time.Now().UTC()})
	if err != nil {
		return "", fmt.Errorf("store %s token: %w", name, err)
	}
	return tok, nil
}

// Authenticate resolves a token. It works while sealed (token hashes are not
// secret), so an operator can check status, seal and stop with a token.
func (s *Service) Authenticate(tok string) (Identity, error) {
	if tok == "" {
		return Identity{}, ErrUnauthenticated
	}
	h := hashToken(tok)
	t, err := s.st.TokenByHash(h)
	if err != nil || subtle.ConstantTimeCompare([]byte(t.Hash), []byte(h)) != 1 {
		return Identity{}, ErrUnauthenticated
	}
	return Identity{Name: t.Name, Policy: t.Policy}, nil
}
