package service

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/coffer-kms/coffer/internal/lifecycle"
	"github.com/coffer-kms/coffer/internal/state"
)

// The Vault-compatible API's service side: the mount table and the KV v2
// view of a wallet. A KV v2 mount serves one wallet; a KV path is an object
// name in it; KV versions are object versions. Secret-data objects hold the
// KV map as JSON and are read-write; symmetric-key objects read as
// {"data":"<hex of the key>"} (what MariaDB's key plugin reads) and are
// read-only through KV.

// Mount types.
const (
	MountKV      = state.MountKV
	MountTransit = state.MountTransit
)

// Mount is a declared /v1/<path> mount.
type Mount struct {
	Path        string    `json:"path"`
	Type        string    `json:"type"`
	Wallet      string    `json:"wallet"`
	Description string    `json:"description,omitempty"`
	CreatedBy   string    `json:"created_by,omitempty"`
	Created     time.Time `json:"created"`
}

func mountOf(m state.VaultMount) Mount {
	return Mount{Path: m.Path, Type: m.Type, Wallet: m.Wallet, Description: m.Description, CreatedBy: m.CreatedBy, Created: m.Created}
}

// CreateMount declares a mount (key administrators). The wallet must exist.
func (s *Objects) CreateMount(ctx context.Context, m Mount) (Mount, error) {
	if !state.ValidMountPath(m.Path) {
		return Mount{}, fmt.Errorf("%w: mount path %q: use 1-64 characters from A-Z a-z 0-9 _ . -, not sys, auth, identity or cubbyhole", ErrInvalid, m.Path)
	}
	if m.Type != MountKV && m.Type != MountTransit {
		return Mount{}, fmt.Errorf("%w: mount type %q: use %s or %s", ErrInvalid, m.Type, MountKV, MountTransit)
	}
	if m.Wallet == "" {
		m.Wallet = m.Path
	}
	if err := ValidLabel("wallet", m.Wallet); err != nil {
		return Mount{}, err
	}
	if len(m.Description) > 1024 {
		return Mount{}, fmt.Errorf("%w: description longer than 1024 bytes", ErrInvalid)
	}
	id, err := requireRole(ctx, RoleKeyAdmin, "declaring a mount")
	if err != nil {
		return Mount{}, err
	}
	unlock, err := s.openForRead()
	if err != nil {
		return Mount{}, err
	}
	defer unlock()
	res, err := s.applyResult(ctx, state.TypeVaultMount, state.VaultMount{Path: m.Path, Type: m.Type, Wallet: m.Wallet,
		Description: m.Description, CreatedBy: id.Actor()})
	if errors.Is(err, ErrNotFound) {
		// The only thing the command looks up is the wallet: bad input,
		// not a missing route (a Vault client shows a 404's empty list).
		return Mount{}, fmt.Errorf("%w: mount %q: wallet %q does not exist; create it first, or name another with options.wallet", ErrInvalid, m.Path, m.Wallet)
	}
	if err != nil {
		return Mount{}, fmt.Errorf("mount %q: %w", m.Path, err)
	}
	vm, ok := res.(state.VaultMount)
	if !ok {
		return Mount{}, fmt.Errorf("the state machine did not confirm the mount (result %T)", res)
	}
	s.log.Info("mount declared", "path", vm.Path, "type", vm.Type, "wallet", vm.Wallet, "by", id.Actor())
	return mountOf(vm), nil
}

// DeleteMount removes a mount declaration (key administrators). The wallet
// and its objects stay.
func (s *Objects) DeleteMount(ctx context.Context, path string) error {
	if _, err := requireRole(ctx, RoleKeyAdmin, "removing a mount"); err != nil {
		return err
	}
	unlock, err := s.openForRead()
	if err != nil {
		return err
	}
	defer unlock()
	err = s.applyLocked(ctx, state.TypeVaultUnmount, state.VaultUnmount{Path: path})
	if errors.Is(err, ErrNotFound) {
		// Not mounted: nothing to remove, and Vault answers success.
		s.log.Info("unmount: nothing to do, the path is not mounted", "path", path, "by", CallFrom(ctx).Identity.Actor())
		return nil
	}
	if err != nil {
		return fmt.Errorf("unmount %q: %w", path, err)
	}
	return nil
}

// Mounts lists the declared mounts (key administrators).
func (s *Objects) Mounts(ctx context.Context) ([]Mount, error) {
	if _, err := requireRole(ctx, RoleKeyAdmin, "listing mounts"); err != nil {
		return nil, err
	}
	ms, err := s.st.VaultMounts()
	if err != nil {
		return nil, err
	}
	out := make([]Mount, 0, len(ms))
	for _, m := range ms {
		out = append(out, mountOf(m))
	}
	return out, nil
}

// ReadableMounts lists the declared mounts whose wallet the caller may
// read (what Vault's sys/internal/ui/mounts shows a token): every mount for
// a key administrator, the mounts of its granted wallets for an endpoint.
func (s *Objects) ReadableMounts(ctx context.Context) ([]Mount, error) {
	if _, err := caller(ctx); err != nil {
		return nil, err
	}
	ms, err := s.st.VaultMounts()
	if err != nil {
		return nil, err
	}
	out := make([]Mount, 0, len(ms))
	for _, m := range ms {
		if _, err := s.authorizeWallet(ctx, m.Wallet, PermRead, "reading a mount"); err != nil {
			if errors.Is(err, ErrForbidden) {
				continue
			}
			return nil, err
		}
		out = append(out, mountOf(m))
	}
	return out, nil
}

// ResolveMount finds the mount a /v1/<path> request names, for routing.
// It checks no permission: every operation on the mount's wallet does.
func (s *Objects) ResolveMount(path string) (Mount, error) {
	m, err := s.vaultMount(path)
	if err != nil {
		return Mount{}, mapStateErr(err)
	}
	return mountOf(m), nil
}

// DescribeMount returns a mount to a caller that may read its wallet (what
// Vault's sys/mounts/<path>/tune answers).
func (s *Objects) DescribeMount(ctx context.Context, path string) (Mount, error) {
	if _, err := caller(ctx); err != nil {
		return Mount{}, err
	}
	m, err := s.ResolveMount(path)
	if err != nil {
		if state.ValidMountPath(path) {
			// Do not tell an endpoint which mounts exist.
			if _, aerr := s.authorizeWallet(ctx, path, PermRead, "reading a mount"); aerr != nil {
				return Mount{}, aerr
			}
		}
		return Mount{}, err
	}
	if _, err := s.authorizeWallet(ctx, m.Wallet, PermRead, "reading a mount"); err != nil {
		return Mount{}, err
	}
	return m, nil
}

// KVVersion is one version's KV metadata.
type KVVersion struct {
	Version   uint64     `json:"version"`
	Created   time.Time  `json:"created_time"`
	Deleted   *time.Time `json:"deletion_time,omitempty"`
	Destroyed bool       `json:"destroyed"`
}

// KVSecret is one version of a KV secret: its data (a JSON object) and metadata.
type KVSecret struct {
	Data           json.RawMessage   `json:"data"`
	Version        KVVersion         `json:"version"`
	CustomMetadata map[string]string `json:"custom_metadata,omitempty"`
}

// KVMetadata is a KV path's metadata and version list (oldest first).
type KVMetadata struct {
	Path           string            `json:"path"`
	CASRequired    bool              `json:"cas_required"`
	Created        time.Time         `json:"created_time"`
	Updated        time.Time         `json:"updated_time"`
	Current        uint64            `json:"current_version"`
	Oldest         uint64            `json:"oldest_version"`
	CustomMetadata map[string]string `json:"custom_metadata,omitempty"`
	Versions       []KVVersion       `json:"versions"`
}

// kvObject loads a KV path with its KV state, checking permission need on
// the wallet. A path hidden by a metadata delete is not found.
func (s *Objects) kvObject(ctx context.Context, wallet, path string, need Permission, what string) (state.Object, state.KVMeta, error) {
	o, m, _, err := s.kvEntry(ctx, wallet, path, need, what, false, 0)
	return o, m, err
}

// kvEntry is kvObject and, when material is true, the sealed material of
// version (0: the latest; nil if there is none), read in one transaction.
func (s *Objects) kvEntry(ctx context.Context, wallet, path string, need Permission, what string, material bool, version uint64) (state.Object, state.KVMeta, []byte, error) {
	if err := ValidName(path); err != nil {
		return state.Object{}, state.KVMeta{}, nil, err
	}
	if _, err := caller(ctx); err != nil {
		return state.Object{}, state.KVMeta{}, nil, err
	}
	if _, err := s.authorizeWallet(ctx, wallet, need, what); err != nil {
		return state.Object{}, state.KVMeta{}, nil, err
	}
	o, m, sealed, err := s.st.KVEntry(wallet, path, material, version)
	if err != nil && o.ID == "" {
		note(ctx, wallet+"/"+path)
		return o, state.KVMeta{}, nil, mapStateErr(err)
	}
	note(ctx, o.ID)
	if o.Type != TypeSecretData && o.Type != TypeSymmetricKey {
		return o, state.KVMeta{}, nil, fmt.Errorf("%w: %s/%s is a %s; KV serves secret data and symmetric keys", ErrNotFound, wallet, path, o.Type)
	}
	if err != nil {
		return o, m, nil, err
	}
	if o.Latest <= m.HiddenThrough {
		return o, m, nil, fmt.Errorf("%w: %s/%s: its KV metadata was deleted", ErrNotFound, wallet, path)
	}
	return o, m, sealed, nil
}

func kvVersionOf(v state.Version, m state.KVMeta) KVVersion {
	out := KVVersion{Version: v.Version, Created: v.Created, Destroyed: v.Destroyed}
	if t, ok := m.Deleted[v.Version]; ok {
		d := t // allocated only for a deleted version
		out.Deleted = &d
	}
	return out
}

// KVGet reads version (0 = latest) of a KV path. The secret's Data is a
// buffer of the caller's own, which it may clear after use. For a soft-deleted or
// destroyed version it returns the version's metadata with an ErrNotFound
// (Vault answers 404 with the metadata).
func (s *Objects) KVGet(ctx context.Context, wallet, path string, version uint64) (KVSecret, error) {
	unlock, err := s.openForRead()
	if err != nil {
		return KVSecret{}, err
	}
	defer unlock()
	o, m, sealed, err := s.kvEntry(ctx, wallet, path, PermRead, "reading a KV secret", true, version)
	if err != nil {
		return KVSecret{}, err
	}
	if version == 0 {
		version = o.Latest
	}
	i := slices.IndexFunc(o.Versions, func(v state.Version) bool { return v.Version == version })
	if i < 0 || version <= m.HiddenThrough {
		return KVSecret{}, fmt.Errorf("%w: %s/%s has no version %d (current %d)", ErrNotFound, wallet, path, version, o.Latest)
	}
	sec := KVSecret{Version: kvVersionOf(o.Versions[i], m), CustomMetadata: m.CustomMetadata}
	switch {
	case sec.Version.Destroyed || !lifecycle.Usable(o.State):
		sec.Version.Destroyed = true
		return sec, fmt.Errorf("%w: %s/%s version %d is destroyed", ErrNotFound, wallet, path, version)
	case sec.Version.Deleted != nil:
		return sec, fmt.Errorf("%w: %s/%s version %d is deleted", ErrNotFound, wallet, path, version)
	}
	if sealed == nil {
		return KVSecret{}, mapStateErr(fmt.Errorf("object %s version %d material: %w", o.ID, version, state.ErrNotFound))
	}
	pt, err := s.bar.DecryptValue(o.ID, version, sealed)
	if err != nil {
		return KVSecret{}, fmt.Errorf("object %s version %d: %w", o.ID, version, err)
	}
	if o.Type == TypeSymmetricKey {
		defer clear(pt)
		sec.Data, err = json.Marshal(map[string]string{"data": hex.EncodeToString(pt)})
		return sec, err
	}
	if !isJSONObject(pt) {
		clear(pt)
		return KVSecret{}, fmt.Errorf("%w: %s/%s version %d holds a value that is not a JSON object (written outside the KV API); read it with the native API", ErrConflict, wallet, path, version)
	}
	// pt is the caller's own (decrypted into a new buffer): it clears it
	// when done.
	sec.Data = pt
	return sec, nil
}

// isJSONObject: b, as it is, is one valid JSON object. Only JSON's white
// space may surround it (bytes.TrimSpace would pass "\v{}" or U+00A0
// before it, which json.Valid on the trimmed bytes cannot see).
func isJSONObject(b []byte) bool {
	t := bytes.TrimLeft(b, " \t\r\n")
	return len(t) > 0 && t[0] == '{' && json.Valid(b)
}

// KVPut writes data (a JSON object) as the next version of a KV path,
// creating the secret-data object if needed. cas, when set, is Vault's
// check-and-set: 0 = only if the path does not exist, N = only if the
// current version is N. It answers the version written and the path's
// custom metadata (no Data).
func (s *Objects) KVPut(ctx context.Context, wallet, path string, data []byte, cas *uint64) (KVSecret, error) {
	if err := ValidLabel("wallet", wallet); err != nil {
		return KVSecret{}, err
	}
	if err := ValidName(path); err != nil {
		return KVSecret{}, err
	}
	var buf bytes.Buffer
	if !isJSONObject(data) || json.Compact(&buf, data) != nil {
		return KVSecret{}, fmt.Errorf("%w: KV data must be a JSON object", ErrInvalid)
	}
	value := buf.Bytes()
	if len(value) > MaxSecretBytes {
		return KVSecret{}, fmt.Errorf("%w: KV data is %d bytes as JSON; at most %d", ErrInvalid, len(value), MaxSecretBytes)
	}
	if err := s.checkOpen(); err != nil {
		return KVSecret{}, err
	}
	if _, err := s.authorizeWallet(ctx, wallet, PermReadModify, "writing a KV secret"); err != nil {
		return KVSecret{}, err
	}
	l := &s.nameLocks[lockSlot(wallet+"/"+path)]
	l.Lock()
	defer l.Unlock()
	for attempt := 0; ; attempt++ {
		o, err := s.st.ObjectByName(wallet, path)
		if errors.Is(err, state.ErrNotFound) {
			if cas != nil && *cas != 0 {
				return KVSecret{}, casMismatch(*cas, 0)
			}
			obj, err := s.CreateObject(ctx, CreateObject{Wallet: wallet, Name: path, Type: TypeSecretData, Value: value})
			if errors.Is(err, ErrConflict) && attempt < 3 {
				continue // created concurrently by another node's request
			}
			if err != nil {
				return KVSecret{}, err
			}
			return KVSecret{Version: KVVersion{Version: obj.Latest, Created: obj.Versions[len(obj.Versions)-1].Created}}, nil
		}
		if err != nil {
			return KVSecret{}, err
		}
		return s.kvRotate(ctx, o.ID, wallet, path, value, cas)
	}
}

func casMismatch(want, have uint64) error {
	return fmt.Errorf("%w: check-and-set parameter did not match the current version (cas %d, current %d)", ErrInvalid, want, have)
}

// kvRotate adds the next version of an existing KV secret, honouring cas.
func (s *Objects) kvRotate(ctx context.Context, id, wallet, path string, value []byte, cas *uint64) (KVSecret, error) {
	unlock, err := s.openForRead()
	if err != nil {
		return KVSecret{}, err
	}
	defer unlock()
	l := &s.objLocks[lockSlot(id)]
	l.Lock()
	defer l.Unlock()
	for attempt := 0; ; attempt++ {
		o, err := s.lookup(Ref{ID: id})
		if err != nil {
			return KVSecret{}, err
		}
		if o.Type != TypeSecretData {
			return KVSecret{}, fmt.Errorf("%w: %s/%s is a %s; KV writes only secret data (rotate keys with the native API)", ErrConflict, wallet, path, o.Type)
		}
		if o.State != lifecycle.PreActive && o.State != lifecycle.Active {
			return KVSecret{}, fmt.Errorf("%w: %s/%s is %s; only a pre-active or active secret takes new versions", ErrState, wallet, path, o.State)
		}
		m, err := s.st.KVMetaOf(o.ID)
		if err != nil {
			return KVSecret{}, err
		}
		current := o.Latest
		if current <= m.HiddenThrough {
			current = 0
		}
		switch {
		case cas == nil && m.CASRequired:
			return KVSecret{}, fmt.Errorf("%w: check-and-set parameter required for this call (cas_required is set on %s/%s)", ErrInvalid, wallet, path)
		case cas != nil && *cas != current:
			return KVSecret{}, casMismatch(*cas, current)
		}
		version := o.Latest + 1
		sealed, err := s.bar.EncryptValue(o.ID, version, value)
		if err != nil {
			return KVSecret{}, err
		}
		res, err := s.applyResult(ctx, state.TypeObjectRotate, state.ObjectRotate{ID: o.ID, Version: version, Material: sealed, Length: len(value) * 8})
		if errors.Is(err, ErrConflict) && cas == nil && attempt < 10 {
			time.Sleep(time.Duration(attempt+1) * 5 * time.Millisecond)
			continue
		}
		if errors.Is(err, ErrConflict) && cas != nil {
			return KVSecret{}, casMismatch(*cas, current+1)
		}
		if err != nil {
			return KVSecret{}, fmt.Errorf("write %s/%s: %w", wallet, path, err)
		}
		note(ctx, o.ID)
		obj, err := confirmObject(res)
		if err != nil {
			return KVSecret{}, err
		}
		return KVSecret{Version: KVVersion{Version: obj.Latest, Created: obj.Versions[len(obj.Versions)-1].Created}, CustomMetadata: m.CustomMetadata}, nil
	}
}

// KV version operations.
const (
	KVDelete   = state.KVDelete
	KVUndelete = state.KVUndelete
	KVDestroy  = state.KVDestroy
)

// KVVersions soft-deletes (read_modify), undeletes (read_modify) or destroys
// (manage; only versions soft-deleted before) versions of a KV path. No
// versions with delete means the latest.
func (s *Objects) KVVersions(ctx context.Context, wallet, path, op string, versions []uint64) error {
	need := PermReadModify
	switch op {
	case KVDelete:
	case KVUndelete:
		if len(versions) == 0 {
			return fmt.Errorf("%w: name the versions to undelete", ErrInvalid)
		}
	case KVDestroy:
		need = PermManage
		if len(versions) == 0 {
			return fmt.Errorf("%w: name the versions to destroy", ErrInvalid)
		}
	default:
		return fmt.Errorf("%w: KV operation %q: use delete, undelete or destroy", ErrInvalid, op)
	}
	if len(versions) > 1000 {
		return fmt.Errorf("%w: at most 1000 versions per request", ErrInvalid)
	}
	unlock, err := s.openForRead()
	if err != nil {
		return err
	}
	defer unlock()
	// A path or version KV does not show is skipped, as Vault does: a delete
	// of what is already gone succeeds and changes nothing. The versions
	// that exist are acted on in one command (all or none). A metadata
	// delete between the read and the command hides every version read;
	// reading again then finds nothing to do.
	for attempt := 0; ; attempt++ {
		o, m, err := s.kvObject(ctx, wallet, path, need, op+" of KV versions")
		if errors.Is(err, ErrNotFound) {
			s.log.Info("KV "+op+": nothing to do, the path does not exist", "wallet", wallet, "name", path, "by", CallFrom(ctx).Identity.Actor())
			return nil
		}
		if err != nil {
			return err
		}
		if o.Type != TypeSecretData {
			return fmt.Errorf("%w: %s/%s is a %s; use the native API's lifecycle (deactivate, destroy) for keys", ErrConflict, wallet, path, o.Type)
		}
		todo := existingKVVersions(o, m, op, versions)
		if len(todo) == 0 {
			s.log.Info("KV "+op+": nothing to do, no version named exists", "id", o.ID, "wallet", wallet, "name", path, "versions", versions, "by", CallFrom(ctx).Identity.Actor())
			return nil
		}
		_, err = s.applyResult(ctx, state.TypeKVVersions, state.KVVersions{ID: o.ID, Op: op, Versions: todo})
		if errors.Is(err, ErrNotFound) && attempt < 2 {
			continue
		}
		if err != nil {
			return fmt.Errorf("%s %s/%s versions %v: %w", op, wallet, path, todo, err)
		}
		if op == KVDestroy {
			s.log.Warn("KV versions destroyed", "id", o.ID, "wallet", wallet, "name", path, "versions", todo, "by", CallFrom(ctx).Identity.Actor())
		}
		return nil
	}
}

// existingKVVersions returns the versions of want (the latest when want is
// empty) that o has and KV shows, once each, in the order given. For an
// undelete a destroyed version is left out too, as Vault skips it: it keeps
// its deletion time.
func existingKVVersions(o state.Object, m state.KVMeta, op string, want []uint64) []uint64 {
	if len(want) == 0 {
		want = []uint64{o.Latest}
	}
	have := make(map[uint64]bool, len(o.Versions))
	for _, v := range o.Versions {
		have[v.Version] = v.Version > m.HiddenThrough && (op != KVUndelete || !v.Destroyed)
	}
	out := make([]uint64, 0, len(want))
	for _, v := range want {
		if have[v] {
			out = append(out, v)
			have[v] = false
		}
	}
	return out
}

// KVDeleteMetadata is Vault's metadata delete (manage): every version must
// already be soft-deleted or destroyed; their material is erased and the
// path disappears from KV reads and lists. Unlike Vault, the object and its
// name stay, and a new write continues the version numbers.
func (s *Objects) KVDeleteMetadata(ctx context.Context, wallet, path string) error {
	unlock, err := s.openForRead()
	if err != nil {
		return err
	}
	defer unlock()
	o, _, err := s.kvObject(ctx, wallet, path, PermManage, "deleting KV metadata")
	if errors.Is(err, ErrNotFound) {
		// Already gone (or never there): Vault answers success.
		s.log.Info("KV metadata delete: nothing to do, the path does not exist", "wallet", wallet, "name", path, "by", CallFrom(ctx).Identity.Actor())
		return nil
	}
	if err != nil {
		return err
	}
	if o.Type != TypeSecretData {
		return fmt.Errorf("%w: %s/%s is a %s; use the native API's lifecycle for keys", ErrConflict, wallet, path, o.Type)
	}
	if _, err := s.applyResult(ctx, state.TypeKVVersions, state.KVVersions{ID: o.ID, Op: state.KVDeleteAll}); err != nil {
		return fmt.Errorf("delete metadata of %s/%s: %w", wallet, path, err)
	}
	s.log.Warn("KV metadata deleted (all versions destroyed)", "id", o.ID, "wallet", wallet, "name", path, "by", CallFrom(ctx).Identity.Actor())
	return nil
}

// KVMetadataOf returns a KV path's metadata.
func (s *Objects) KVMetadataOf(ctx context.Context, wallet, path string) (KVMetadata, error) {
	o, m, err := s.kvObject(ctx, wallet, path, PermRead, "reading KV metadata")
	if err != nil {
		return KVMetadata{}, err
	}
	md := KVMetadata{Path: path, CASRequired: m.CASRequired, Created: o.Created, Updated: o.Updated, Current: o.Latest,
		CustomMetadata: m.CustomMetadata, Versions: []KVVersion{}}
	if m.Updated.After(md.Updated) {
		md.Updated = m.Updated
	}
	for _, v := range o.Versions {
		if v.Version <= m.HiddenThrough {
			continue
		}
		kv := kvVersionOf(v, m)
		if !lifecycle.Usable(o.State) {
			kv.Destroyed = true
		}
		md.Versions = append(md.Versions, kv)
		if md.Oldest == 0 {
			md.Oldest = v.Version
		}
	}
	return md, nil
}

// KVMetadataChange names the KV settings a metadata write changes; the
// others keep their values. CASRequired: nil keeps it. CustomMetadata is
// set (nil or empty clears it) only when SetCustomMetadata. MaxVersions
// must be 0: Coffer keeps every version.
type KVMetadataChange struct {
	CASRequired       *bool
	SetCustomMetadata bool
	CustomMetadata    map[string]string
	MaxVersions       int
}

// KVPutMetadata changes a KV path's settings (read_modify): only those ch
// names, in one state command, so writers changing different settings at
// the same time do not undo each other. The path must exist (write data
// first).
func (s *Objects) KVPutMetadata(ctx context.Context, wallet, path string, ch KVMetadataChange) error {
	if ch.MaxVersions != 0 {
		return fmt.Errorf("%w: max_versions %d: Coffer keeps every version of a secret (a database needs every key version that encrypted its data); use 0", ErrInvalid, ch.MaxVersions)
	}
	if err := validAttrs(ch.CustomMetadata); err != nil {
		return err
	}
	unlock, err := s.openForRead()
	if err != nil {
		return err
	}
	defer unlock()
	o, _, err := s.kvObject(ctx, wallet, path, PermReadModify, "changing KV metadata")
	if err != nil {
		return err
	}
	if o.Type != TypeSecretData {
		return fmt.Errorf("%w: %s/%s is a %s; KV metadata applies to secret data", ErrConflict, wallet, path, o.Type)
	}
	cmd := state.KVMetadataMerge{ID: o.ID, CASRequired: ch.CASRequired, SetCustomMetadata: ch.SetCustomMetadata, CustomMetadata: ch.CustomMetadata}
	if _, err := s.applyResult(ctx, state.TypeKVMetadataMerge, cmd); err != nil {
		return fmt.Errorf("set metadata of %s/%s: %w", wallet, path, err)
	}
	return nil
}

// maxKVListKeys bounds the keys one KV list answers (a variable for tests).
var maxKVListKeys = 100000

// KVList lists the keys directly under prefix ("" or ending in "/") of a KV
// mount's wallet, Vault style: "name" for a secret, "dir/" for a folder
// holding at least one secret KV serves.
// An empty result is ErrNotFound (Vault answers 404). Vault's list has no
// paging: the answer stops at maxKVListKeys keys, and more says it did.
func (s *Objects) KVList(ctx context.Context, wallet, prefix string) (keys []string, more bool, err error) {
	if prefix != "" && (!strings.HasSuffix(prefix, "/") || ValidName(strings.TrimSuffix(prefix, "/")) != nil) {
		return nil, false, fmt.Errorf("%w: list prefix %q: a valid path ending in /", ErrInvalid, prefix)
	}
	if _, err := s.authorizeWallet(ctx, wallet, PermRead, "listing KV secrets"); err != nil {
		return nil, false, err
	}
	keys, more, err = s.st.KVKeys(wallet, prefix, maxKVListKeys)
	if err != nil {
		return nil, false, err
	}
	if len(keys) == 0 {
		return nil, false, fmt.Errorf("%w: nothing under %q in wallet %q", ErrNotFound, prefix, wallet)
	}
	return keys, more, nil
}

// MaxKVListKeys is the most keys one KV list answers.
func MaxKVListKeys() int { return maxKVListKeys }
