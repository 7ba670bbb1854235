package state

import (
	"bytes"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// decodeCacheMax bounds each decode cache; a full cache starts over.
// Records over decodeCacheMaxRaw bytes are decoded every time.
const (
	decodeCacheMax    = 1024
	decodeCacheMaxRaw = 4096
)

// decodeCache keeps decoded records by their encoded bytes. It needs no
// invalidation: a record that changes has other bytes, and the same bytes
// always decode to the same value. It serves the small records every
// request reads (tokens, wallets, endpoints, mounts, object metadata);
// copyOut gives each caller its own copy of what the value shares (maps,
// slices, pointers). None of them holds secrets: tokens are kept by their
// hash, material is stored apart from the object's metadata.
type decodeCache[T any] struct {
	mu      sync.RWMutex
	m       map[string]T
	copyOut func(T) T
}

func (c *decodeCache[T]) decode(raw []byte, v *T) error {
	c.mu.RLock()
	got, ok := c.m[string(raw)]
	c.mu.RUnlock()
	if ok {
		*v = c.copyOut(got)
		return nil
	}
	var fresh T
	if err := decodeJSON(raw, &fresh); err != nil {
		return err
	}
	if len(raw) > decodeCacheMaxRaw {
		*v = fresh
		return nil
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= decodeCacheMax {
		c.m = make(map[string]T)
	}
	c.m[string(raw)] = fresh
	c.mu.Unlock()
	*v = c.copyOut(fresh)
	return nil
}

// read calls fn with the decoded record, the cache's own value when it is
// cached: fn must not change it or keep what it shares (maps, slices,
// pointers). For callers that need one field, without copyOut's copies.
func (c *decodeCache[T]) read(raw []byte, fn func(T)) error {
	c.mu.RLock()
	got, ok := c.m[string(raw)]
	c.mu.RUnlock()
	if ok {
		fn(got)
		return nil
	}
	var v T
	if err := c.decode(raw, &v); err != nil {
		return err
	}
	fn(v)
	return nil
}

func copyTime(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	c := *t
	return &c
}

var (
	tokenCache    = &decodeCache[Token]{copyOut: func(t Token) Token { t.Expires = copyTime(t.Expires); return t }}
	walletCache   = &decodeCache[Wallet]{copyOut: func(w Wallet) Wallet { w.Grants = maps.Clone(w.Grants); return w }}
	endpointCache = &decodeCache[Endpoint]{copyOut: func(e Endpoint) Endpoint { e.Revoked = copyTime(e.Revoked); return e }}
	mountCache    = &decodeCache[VaultMount]{copyOut: func(m VaultMount) VaultMount { return m }}
	objectCache   = &decodeCache[Object]{copyOut: copyObject}
	kvMetaCache   = &decodeCache[KVMeta]{copyOut: func(m KVMeta) KVMeta {
		m.CustomMetadata, m.Deleted = maps.Clone(m.CustomMetadata), maps.Clone(m.Deleted)
		return m
	}}
)

// copyObject copies what an Object shares: attributes, time pointers,
// versions and their public keys.
func copyObject(o Object) Object {
	o.Attributes = maps.Clone(o.Attributes)
	o.Activated, o.Deactivate = copyTime(o.Activated), copyTime(o.Deactivate)
	o.Compromise, o.Destroyed = copyTime(o.Compromise), copyTime(o.Destroyed)
	if o.Versions != nil {
		o.Versions = slices.Clone(o.Versions)
		for i := range o.Versions {
			o.Versions[i].Public = bytes.Clone(o.Versions[i].Public)
		}
	}
	return o
}

// viewCached is viewJSON through a decode cache. A missing record is an
// ErrNotFound naming it as format does with key (formatted only then: this
// runs several times for every request).
func viewCached[T any](s *Store, c *decodeCache[T], bucket []byte, key, format string) (T, error) {
	var v T
	err := s.View(func(tx *bolt.Tx) error {
		raw := tx.Bucket(bucket).Get([]byte(key))
		if raw == nil {
			return fmt.Errorf(format+": %w", key, ErrNotFound)
		}
		return c.decode(raw, &v)
	})
	return v, err
}
