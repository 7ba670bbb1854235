package state

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/coffer-kms/coffer/internal/barrier"
)

// ClusterInit is the first command after the keystore is created: it names
// the cluster and installs the first data key.
type ClusterInit struct {
	ClusterID string             `json:"cluster_id"`
	Key       barrier.WrappedKey `json:"key"`
}

// Token is an access token as stored: only its SHA-256.
type Token struct {
	Hash    string    `json:"hash"` // hex SHA-256 of the token
	Policy  string    `json:"policy"`
	Name    string    `json:"name"`
	Created time.Time `json:"created"`
}

// SecretPut writes version Version of the secret Name (id ID). The value is
// already sealed by the barrier for (ID, Version).
type SecretPut struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Version uint64 `json:"version"`
	Value   []byte `json:"value"`
}

// SecretMeta is what is stored about a secret besides its values.
type SecretMeta struct {
	ID       string        `json:"id"`
	Name     string        `json:"name"`
	Latest   uint64        `json:"latest"`
	Created  time.Time     `json:"created"`
	Updated  time.Time     `json:"updated"`
	Versions []VersionMeta `json:"versions"`
}

// VersionMeta describes one version.
type VersionMeta struct {
	Version uint64    `json:"version"`
	Created time.Time `json:"created"`
}

// apply mutates tx for one command. The returned error is an I/O failure that
// aborts the batch; domain errors are the result. Handlers validate before
// they write, so a domain error never leaves a partial change.
func (s *Store) apply(tx *bolt.Tx, index uint64, cmd Command) (any, error) {
	switch cmd.Type {
	case TypeClusterInit:
		var b ClusterInit
		if err := cmd.decode(&b); err != nil {
			return err, nil
		}
		meta := tx.Bucket(bucketMeta)
		if meta.Get(keyClusterID) != nil {
			return fmt.Errorf("cluster: %w", ErrExists), nil
		}
		if b.ClusterID == "" || len(b.ClusterID) > 128 {
			return fmt.Errorf("%w: cluster id must be 1 to 128 bytes", ErrBadCommand), nil
		}
		if err := checkDEK(tx, b.Key, false); err != nil {
			return err, nil
		}
		if err := meta.Put(keyClusterID, []byte(b.ClusterID)); err != nil {
			return nil, err
		}
		b.Key.Index = index
		return s.installDEK(tx, b.Key)
	case TypeDEKCreate:
		var wk barrier.WrappedKey
		if err := cmd.decode(&wk); err != nil {
			return err, nil
		}
		if err := checkDEK(tx, wk, false); err != nil {
			return err, nil
		}
		wk.Index = index
		return s.installDEK(tx, wk)
	case TypeDEKRewrap:
		var keys []barrier.WrappedKey
		if err := cmd.decode(&keys); err != nil {
			return err, nil
		}
		b := tx.Bucket(bucketDEKs)
		for _, wk := range keys {
			if err := checkDEK(tx, wk, true); err != nil {
				return err, nil
			}
		}
		for _, wk := range keys {
			var old barrier.WrappedKey
			if err := decodeJSON(b.Get(u32(wk.ID)), &old); err != nil {
				return nil, err
			}
			wk.Index = old.Index // the creation index never changes
			if err := putJSON(b, u32(wk.ID), wk); err != nil {
				return nil, err
			}
		}
		return nil, nil
	case TypeTokenCreate:
		var t Token
		if err := cmd.decode(&t); err != nil {
			return err, nil
		}
		if len(t.Hash) != 64 || strings.Trim(t.Hash, "0123456789abcdef") != "" {
			return fmt.Errorf("%w: token hash must be 64 lowercase hex characters", ErrBadCommand), nil
		}
		return nil, putJSON(tx.Bucket(bucketTokens), []byte(t.Hash), t)
	case TypeSecretPut:
		var p SecretPut
		if err := cmd.decode(&p); err != nil {
			return err, nil
		}
		return s.applySecretPut(tx, cmd.Time, p)
	}
	return fmt.Errorf("%w: unknown command type %d", ErrBadCommand, cmd.Type), nil
}

// checkDEK validates a wrapped data key before anything is written: id 1 or
// more, wrapped bytes present, and (not) already stored.
func checkDEK(tx *bolt.Tx, wk barrier.WrappedKey, mustExist bool) error {
	if wk.ID == 0 || wk.MEKGen == 0 || len(wk.Wrapped) == 0 || len(wk.Wrapped) > 1024 {
		return fmt.Errorf("%w: data key %d: id, MEK generation and wrapped key are required", ErrBadCommand, wk.ID)
	}
	exists := tx.Bucket(bucketDEKs).Get(u32(wk.ID)) != nil
	switch {
	case mustExist && !exists:
		return fmt.Errorf("data key %d: %w", wk.ID, ErrNotFound)
	case !mustExist && exists:
		return fmt.Errorf("data key %d: %w", wk.ID, ErrExists)
	}
	return nil
}

// installDEK stores a checked data key and makes it current.
func (s *Store) installDEK(tx *bolt.Tx, wk barrier.WrappedKey) (any, error) {
	b := tx.Bucket(bucketDEKs)
	if err := putJSON(b, u32(wk.ID), wk); err != nil {
		return nil, err
	}
	if err := tx.Bucket(bucketMeta).Put(keyCurrentDEK, u64(uint64(wk.ID))); err != nil {
		return nil, err
	}
	if s.bar != nil {
		if err := s.bar.Install(wk, true); err != nil {
			// The key cannot be unwrapped here: this node's keystore lacks the
			// MEK generation. Fail the I/O so the batch retries, loudly.
			return nil, fmt.Errorf("install data key %d: %w", wk.ID, err)
		}
	}
	return nil, nil
}

func (s *Store) applySecretPut(tx *bolt.Tx, now time.Time, p SecretPut) (any, error) {
	// The service validated the request; a committed command is checked again
	// because a malformed one must fail as a result, never as an endless retry.
	if p.Name == "" || len(p.Name) > 255 || p.ID == "" || len(p.ID) > 64 || len(p.Value) == 0 || len(p.Value) > 1<<20 {
		return fmt.Errorf("%w: secret put needs a name (1-255 bytes), an id (1-64 bytes) and a value", ErrBadCommand), nil
	}
	names := tx.Bucket(bucketSecrets)
	var m SecretMeta
	if v := names.Get([]byte(p.Name)); v != nil {
		if err := decodeJSON(v, &m); err != nil {
			return nil, err
		}
		if m.ID != p.ID || p.Version != m.Latest+1 {
			return fmt.Errorf("secret %q: expected version %d, latest is %d: %w", p.Name, p.Version, m.Latest, ErrConflict), nil
		}
	} else {
		if p.Version != 1 {
			return fmt.Errorf("secret %q does not exist; version must be 1: %w", p.Name, ErrConflict), nil
		}
		m = SecretMeta{ID: p.ID, Name: p.Name, Created: now}
	}
	m.Latest = p.Version
	m.Updated = now
	m.Versions = append(m.Versions, VersionMeta{Version: p.Version, Created: now})
	if err := tx.Bucket(bucketValues).Put(valueKey(p.ID, p.Version), p.Value); err != nil {
		return nil, err
	}
	return m.Latest, putJSON(names, []byte(p.Name), m)
}

// Secret returns a secret's metadata by name.
func (s *Store) Secret(name string) (SecretMeta, error) {
	var m SecretMeta
	err := s.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketSecrets).Get([]byte(name))
		if v == nil {
			return fmt.Errorf("secret %q: %w", name, ErrNotFound)
		}
		return decodeJSON(v, &m)
	})
	return m, err
}

// SecretValue returns the sealed value of one version.
func (s *Store) SecretValue(id string, version uint64) ([]byte, error) {
	var out []byte
	err := s.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketValues).Get(valueKey(id, version))
		if v == nil {
			return fmt.Errorf("secret %s version %d: %w", id, version, ErrNotFound)
		}
		out = append([]byte(nil), v...)
		return nil
	})
	return out, err
}

// TokenByHash looks up a token by its hex SHA-256.
func (s *Store) TokenByHash(hash string) (Token, error) {
	var t Token
	err := s.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketTokens).Get([]byte(hash))
		if v == nil {
			return ErrNotFound
		}
		return decodeJSON(v, &t)
	})
	return t, err
}

func valueKey(id string, version uint64) []byte {
	k := make([]byte, 0, len(id)+9)
	k = append(k, id...)
	k = append(k, '/')
	return binary.BigEndian.AppendUint64(k, version)
}

func u32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

func putJSON(b *bolt.Bucket, k []byte, v any) error {
	enc, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(k, enc)
}

func decodeJSON(b []byte, v any) error { return json.Unmarshal(b, v) }
