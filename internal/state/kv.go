package state

import (
	"bytes"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/coffer-kms/coffer/internal/lifecycle"
)

// The Vault-compatible API's state: the mount table (which wallet a /v1/<mount>
// path serves, as KV v2 or Transit) and the per-version KV state that Vault
// has and security objects do not (soft deletion, KV metadata). Both live in
// buckets of their own, created at open like every other bucket, so a
// state.db written before them opens unchanged (they start empty).
var (
	bucketVaultMounts = []byte("vault_mounts") // mount path -> VaultMount
	bucketKVMeta      = []byte("kv_meta")      // object id -> KVMeta
)

func init() { allBuckets = append(allBuckets, bucketVaultMounts, bucketKVMeta) }

// Mount types.
const (
	MountKV      = "kv-v2"
	MountTransit = "transit"
)

// VaultMount declares that /v1/<Path>/... serves wallet Wallet as Type.
type VaultMount struct {
	Path        string    `json:"path"`
	Type        string    `json:"type"` // kv-v2 or transit
	Wallet      string    `json:"wallet"`
	Description string    `json:"description,omitempty"`
	CreatedBy   string    `json:"created_by,omitempty"`
	Created     time.Time `json:"created"`
}

// VaultUnmount removes a mount declaration (the wallet and its objects stay).
type VaultUnmount struct {
	Path string `json:"path"`
}

// KV version operations.
const (
	KVDelete   = "delete"   // soft-delete versions (reversible)
	KVUndelete = "undelete" // clear a soft deletion
	KVDestroy  = "destroy"  // erase the material of soft-deleted versions
	// KVDeleteAll is Vault's "delete metadata": every version must already be
	// soft-deleted or destroyed; their material is erased and the path is
	// hidden from KV reads and lists until it is written again.
	KVDeleteAll = "delete-all"
)

// KVVersions applies a KV version operation to versions of object ID.
type KVVersions struct {
	ID       string   `json:"id"`
	Op       string   `json:"op"`
	Versions []uint64 `json:"versions,omitempty"`
}

// KVMetadataPut replaces the KV settings of object ID.
type KVMetadataPut struct {
	ID             string            `json:"id"`
	CASRequired    bool              `json:"cas_required,omitempty"`
	CustomMetadata map[string]string `json:"custom_metadata,omitempty"`
}

// KVMetadataMerge changes the KV settings of object ID that it names and
// keeps the others: CASRequired when not nil, CustomMetadata (nil or empty
// clears it) when SetCustomMetadata. Two writers naming different fields
// both take effect.
type KVMetadataMerge struct {
	ID                string            `json:"id"`
	CASRequired       *bool             `json:"cas_required,omitempty"`
	SetCustomMetadata bool              `json:"set_custom_metadata,omitempty"`
	CustomMetadata    map[string]string `json:"custom_metadata,omitempty"`
}

// KVMeta is the KV view's own state for one secret-data object.
type KVMeta struct {
	CASRequired    bool                 `json:"cas_required,omitempty"`
	CustomMetadata map[string]string    `json:"custom_metadata,omitempty"`
	Deleted        map[uint64]time.Time `json:"deleted,omitempty"` // version -> soft-deletion time
	// HiddenThrough: after a delete-all, versions up to this one are gone
	// from the KV view; the path reappears when a later version is written.
	HiddenThrough uint64    `json:"hidden_through,omitempty"`
	Updated       time.Time `json:"updated,omitzero"`
}

// Command types of the Vault-compatible API (range 170-179).
const (
	// TypeVaultMount declares a mount (body: VaultMount).
	TypeVaultMount Type = 170
	// TypeVaultUnmount removes a mount declaration (body: VaultUnmount).
	TypeVaultUnmount Type = 171
	// TypeKVVersions soft-deletes, undeletes or destroys KV versions (body: KVVersions).
	TypeKVVersions Type = 172
	// TypeKVMetadata sets a KV path's settings (body: KVMetadataPut). The
	// service sends TypeKVMetadataMerge; this type stays for the entries of
	// older builds in logs and journals.
	TypeKVMetadata Type = 173
	// TypeKVMetadataMerge changes the KV settings a write names (body:
	// KVMetadataMerge).
	TypeKVMetadataMerge Type = 174
)

func init() {
	typeNames[TypeVaultMount] = "vault-mount"
	typeNames[TypeVaultUnmount] = "vault-unmount"
	typeNames[TypeKVVersions] = "kv-versions"
	typeNames[TypeKVMetadata] = "kv-metadata"
	typeNames[TypeKVMetadataMerge] = "kv-metadata-merge"
}

// applyKV dispatches the Vault-compatible API's commands; ok is false for
// any other type.
func (s *Store) applyKV(tx *bolt.Tx, cmd Command) (res any, err error, ok bool) {
	switch cmd.Type {
	case TypeVaultMount:
		res, err = decodeApply(cmd, func(c VaultMount) (any, error) { return s.applyVaultMount(tx, cmd.Time, c) })
	case TypeVaultUnmount:
		res, err = decodeApply(cmd, func(c VaultUnmount) (any, error) { return s.applyVaultUnmount(tx, c) })
	case TypeKVVersions:
		res, err = decodeApply(cmd, func(c KVVersions) (any, error) { return s.applyKVVersions(tx, cmd.Time, c) })
	case TypeKVMetadata:
		res, err = decodeApply(cmd, func(c KVMetadataPut) (any, error) { return s.applyKVMetadata(tx, cmd.Time, c) })
	case TypeKVMetadataMerge:
		res, err = decodeApply(cmd, func(c KVMetadataMerge) (any, error) { return s.applyKVMetadataMerge(tx, cmd.Time, c) })
	default:
		return nil, nil, false
	}
	return res, err, true
}

// mountPathRE: one path segment, like a wallet name.
var mountPathRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$`)

// Mount paths Vault reserves for itself.
var reservedMounts = []string{"sys", "auth", "identity", "cubbyhole"}

// ValidMountPath reports whether p can name a mount.
func ValidMountPath(p string) bool {
	return mountPathRE.MatchString(p) && !slices.Contains(reservedMounts, p)
}

func (s *Store) applyVaultMount(tx *bolt.Tx, now time.Time, m VaultMount) (any, error) {
	if !ValidMountPath(m.Path) {
		return bad("mount path %q: use 1-64 characters from A-Z a-z 0-9 _ . - (not %v)", m.Path, reservedMounts), nil
	}
	if m.Type != MountKV && m.Type != MountTransit {
		return bad("mount type %q: use %s or %s", m.Type, MountKV, MountTransit), nil
	}
	if len(m.Description) > maxTextBytes || len(m.CreatedBy) > maxNameBytes {
		return bad("description or created_by too long"), nil
	}
	if tx.Bucket(bucketWallets).Get([]byte(m.Wallet)) == nil {
		return fmt.Errorf("wallet %q: %w", m.Wallet, ErrNotFound), nil
	}
	b := tx.Bucket(bucketVaultMounts)
	if b.Get([]byte(m.Path)) != nil {
		return fmt.Errorf("mount %q: %w", m.Path, ErrExists), nil
	}
	m.Created = now
	return m, putJSON(b, []byte(m.Path), m)
}

func (s *Store) applyVaultUnmount(tx *bolt.Tx, c VaultUnmount) (any, error) {
	b := tx.Bucket(bucketVaultMounts)
	if b.Get([]byte(c.Path)) == nil {
		return fmt.Errorf("mount %q: %w", c.Path, ErrNotFound), nil
	}
	return nil, b.Delete([]byte(c.Path))
}

func (s *Store) loadKVMeta(tx *bolt.Tx, id string) (KVMeta, error) {
	m, _, err := getJSON[KVMeta](tx.Bucket(bucketKVMeta), []byte(id))
	return m, err
}

// kvMetaCached is loadKVMeta through the decode cache (the KV read).
func kvMetaCached(tx *bolt.Tx, id string, m *KVMeta) error {
	raw := tx.Bucket(bucketKVMeta).Get([]byte(id))
	if raw == nil {
		*m = KVMeta{}
		return nil
	}
	return kvMetaCache.decode(raw, m)
}

func (s *Store) applyKVVersions(tx *bolt.Tx, now time.Time, c KVVersions) (any, error) {
	if len(c.Versions) > 1000 {
		return bad("at most 1000 versions per request"), nil
	}
	o, err := s.loadObject(tx, c.ID)
	if err != nil {
		return resultOrIO(err)
	}
	if o.Type != TypeSecretData {
		return bad("object %s is a %s; KV version operations apply to secret data", o.ID, o.Type), nil
	}
	if o.State == lifecycle.Destroyed {
		return fmt.Errorf("%w: object %s is destroyed", lifecycle.ErrIllegal, o.ID), nil
	}
	m, err := s.loadKVMeta(tx, o.ID)
	if err != nil {
		return nil, err
	}
	if m.Deleted == nil {
		m.Deleted = map[uint64]time.Time{}
	}
	index := map[uint64]int{}
	for i, v := range o.Versions {
		index[v.Version] = i
	}
	vals := tx.Bucket(bucketValues)
	switch c.Op {
	case KVDelete, KVUndelete, KVDestroy:
		if len(c.Versions) == 0 {
			return bad("name at least one version"), nil
		}
		// Check every version first: a refused command changes nothing.
		for _, v := range c.Versions {
			i, ok := index[v]
			if !ok || v <= m.HiddenThrough {
				return fmt.Errorf("object %s has no version %d: %w", o.ID, v, ErrNotFound), nil
			}
			if c.Op == KVDestroy && !o.Versions[i].Destroyed {
				if _, deleted := m.Deleted[v]; !deleted {
					return fmt.Errorf("%w: object %s version %d is not soft-deleted; delete it first, then destroy it (destroying takes two steps)", lifecycle.ErrIllegal, o.ID, v), nil
				}
			}
		}
		for _, v := range c.Versions {
			i := index[v]
			switch c.Op {
			case KVDelete:
				if _, already := m.Deleted[v]; !already && !o.Versions[i].Destroyed {
					m.Deleted[v] = now
				}
			case KVUndelete:
				delete(m.Deleted, v)
			case KVDestroy:
				if err := vals.Delete(valueKey(o.ID, v)); err != nil {
					return nil, err
				}
				o.Versions[i].Destroyed = true
			}
		}
	case KVDeleteAll:
		for _, v := range o.Versions {
			if _, deleted := m.Deleted[v.Version]; !deleted && !v.Destroyed && v.Version > m.HiddenThrough {
				return fmt.Errorf("%w: object %s version %d is not soft-deleted; delete every version first, then delete the metadata", lifecycle.ErrIllegal, o.ID, v.Version), nil
			}
		}
		for i, v := range o.Versions {
			if err := vals.Delete(valueKey(o.ID, v.Version)); err != nil {
				return nil, err
			}
			o.Versions[i].Destroyed = true
		}
		m.Deleted, m.HiddenThrough, m.CASRequired, m.CustomMetadata = nil, o.Latest, false, nil
	default:
		return bad("KV operation %q: use %s, %s, %s or %s", c.Op, KVDelete, KVUndelete, KVDestroy, KVDeleteAll), nil
	}
	if len(m.Deleted) == 0 {
		m.Deleted = nil
	}
	m.Updated = now
	o.Updated = now
	if err := putJSON(tx.Bucket(bucketKVMeta), []byte(o.ID), m); err != nil {
		return nil, err
	}
	return KVState{Object: o, Meta: m}, putJSON(tx.Bucket(bucketObjects), []byte(o.ID), o)
}

// applyKVMetadata (type 173, before the merge) sets both settings: the
// merge that names both.
func (s *Store) applyKVMetadata(tx *bolt.Tx, now time.Time, c KVMetadataPut) (any, error) {
	cas := c.CASRequired
	return s.applyKVMetadataMerge(tx, now, KVMetadataMerge{ID: c.ID, CASRequired: &cas, SetCustomMetadata: true, CustomMetadata: c.CustomMetadata})
}

func (s *Store) applyKVMetadataMerge(tx *bolt.Tx, now time.Time, c KVMetadataMerge) (any, error) {
	if err := checkAttrs(c.CustomMetadata); err != nil {
		return err, nil
	}
	o, err := s.loadObject(tx, c.ID)
	if err != nil {
		return resultOrIO(err)
	}
	if o.Type != TypeSecretData {
		return bad("object %s is a %s; KV metadata applies to secret data", o.ID, o.Type), nil
	}
	m, err := s.loadKVMeta(tx, o.ID)
	if err != nil {
		return nil, err
	}
	if c.CASRequired != nil {
		m.CASRequired = *c.CASRequired
	}
	if c.SetCustomMetadata {
		m.CustomMetadata = maps.Clone(c.CustomMetadata)
		if len(m.CustomMetadata) == 0 {
			m.CustomMetadata = nil
		}
	}
	m.Updated = now
	return KVState{Object: o, Meta: m}, putJSON(tx.Bucket(bucketKVMeta), []byte(o.ID), m)
}

// KVState is an object with its KV view state.
type KVState struct {
	Object Object `json:"object"`
	Meta   KVMeta `json:"meta"`
}

// VaultMount returns a mount declaration.
func (s *Store) VaultMount(path string) (VaultMount, error) {
	return viewCached(s, mountCache, bucketVaultMounts, path, "mount %q")
}

// VaultMounts lists the mount declarations by path.
func (s *Store) VaultMounts() ([]VaultMount, error) {
	return listJSON[VaultMount](s, bucketVaultMounts)
}

// KVMetaOf returns the KV view state of an object (zero if it has none).
func (s *Store) KVMetaOf(id string) (KVMeta, error) {
	var m KVMeta
	err := s.View(func(tx *bolt.Tx) error {
		var err error
		m, err = s.loadKVMeta(tx, id)
		return err
	})
	return m, err
}

// KVEntry reads, in one transaction, the object named name in wallet, its
// KV metadata and, when material is true, the sealed material of version
// (the latest when 0), nil if the object has no material for it. A missing
// name is ObjectByName's error; o is zero when the object could not be
// read.
func (s *Store) KVEntry(wallet, name string, material bool, version uint64) (o Object, m KVMeta, sealed []byte, err error) {
	k := kvEntryKey{wallet, name, material, version}
	if r, ok := s.kvMemo.Get(s, k); ok {
		return copyObject(r.o), kvMetaCache.copyOut(r.m), bytes.Clone(r.sealed), nil
	}
	at := s.applied.Load()
	if o, m, sealed, err = s.kvEntry(wallet, name, material, version); err == nil && len(sealed) <= memoMaxMaterial && memoWorth(objectFootprint(o)+kvMetaFootprint(m)) {
		s.kvMemo.Put(s, at, k, kvEntryRead{o: copyObject(o), m: kvMetaCache.copyOut(m), sealed: bytes.Clone(sealed)})
	}
	return o, m, sealed, err
}

// kvEntry is KVEntry's read of the state.
func (s *Store) kvEntry(wallet, name string, material bool, version uint64) (o Object, m KVMeta, sealed []byte, err error) {
	err = s.View(func(tx *bolt.Tx) error {
		id := tx.Bucket(bucketNames).Get(nameKey(wallet, name))
		if id == nil {
			return fmt.Errorf("object %q in wallet %q: %w", name, wallet, ErrNotFound)
		}
		raw := tx.Bucket(bucketObjects).Get(id)
		if raw == nil {
			return fmt.Errorf("object %s (name index of %q): %w", id, name, ErrNotFound)
		}
		if err := objectCache.decode(raw, &o); err != nil {
			o = Object{}
			return err
		}
		if err := kvMetaCached(tx, o.ID, &m); err != nil || !material {
			return err
		}
		if version == 0 {
			version = o.Latest
		}
		if v := tx.Bucket(bucketValues).Get(valueKey(o.ID, version)); v != nil {
			sealed = bytes.Clone(v)
		}
		return nil
	})
	return o, m, sealed, err
}

// KVKeys lists the keys directly under prefix ("" or ending in "/") of
// wallet as a KV v2 list shows them, in name order: the rest of the name of
// each object KV serves (secret data or a symmetric key whose versions a
// metadata delete has not hidden), and "dir/" for each folder that holds at
// least one such object at any depth. At most max keys; more is true when
// the list stopped there.
func (s *Store) KVKeys(wallet, prefix string, max int) (keys []string, more bool, err error) {
	err = s.View(func(tx *bolt.Tx) error {
		keys, more = nil, false
		objects := tx.Bucket(bucketObjects)
		visible := func(id []byte) (bool, error) {
			raw := objects.Get(id)
			if raw == nil {
				return false, nil
			}
			var o Object
			if err := objectCache.decode(raw, &o); err != nil {
				return false, err
			}
			if o.Type != TypeSecretData && o.Type != TypeSymmetricKey {
				return false, nil
			}
			var m KVMeta
			if err := kvMetaCached(tx, o.ID, &m); err != nil {
				return false, err
			}
			return o.Latest > m.HiddenThrough, nil
		}
		start := nameKey(wallet, prefix)
		c := tx.Bucket(bucketNames).Cursor()
		k, v := c.Seek(start)
		for k != nil && bytes.HasPrefix(k, start) {
			rest := string(k[len(start):])
			ok, err := visible(v)
			if err != nil {
				return err
			}
			if !ok {
				k, v = c.Next()
				continue
			}
			if len(keys) == max {
				more = true
				return nil
			}
			i := strings.IndexByte(rest, '/')
			if i < 0 {
				keys = append(keys, rest)
				k, v = c.Next()
				continue
			}
			keys = append(keys, rest[:i+1])
			// Past the folder: '0' is the byte after '/'.
			k, v = c.Seek(nameKey(wallet, prefix+rest[:i]+"0"))
		}
		return nil
	})
	return keys, more, err
}

// ObjectNames calls fn with the name and id of every object of wallet whose
// name starts with prefix, in name order, until fn returns false.
func (s *Store) ObjectNames(wallet, prefix string, fn func(name, id string) bool) error {
	return s.View(func(tx *bolt.Tx) error {
		start := nameKey(wallet, prefix)
		walletPrefix := nameKey(wallet, "")
		c := tx.Bucket(bucketNames).Cursor()
		for k, v := c.Seek(start); k != nil && bytes.HasPrefix(k, start); k, v = c.Next() {
			if !fn(string(k[len(walletPrefix):]), string(v)) {
				return nil
			}
		}
		return nil
	})
}
