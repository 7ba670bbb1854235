package service

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/coffer-kms/coffer/internal/lifecycle"
	"github.com/coffer-kms/coffer/internal/state"
)

// Object types.
const (
	TypeSymmetricKey = state.TypeSymmetricKey
	TypeSecretData   = state.TypeSecretData
	TypeKeyPair      = state.TypeKeyPair
)

// Limits.
const (
	// MaxSecretBytes is the largest secret-data value accepted (64 KiB).
	MaxSecretBytes = 64 * 1024
	// MaxAttributes per object; names up to 128 bytes, values up to 1024.
	MaxAttributes = 64
	// MaxListLimit is the largest page a list returns.
	MaxListLimit = 1000
	// DefaultListLimit is the page size when none is asked for.
	DefaultListLimit = 100
)

// plainChars reports whether s has 1 to max bytes, the first an ASCII
// letter or digit and the rest letters, digits or bytes of extra: the
// regexp ^[A-Za-z0-9][A-Za-z0-9<extra>]{0,max-1}$ without the regexp
// machine (names are checked on every write; a test holds the two to the
// same answers).
func plainChars(s string, max int, extra string) bool {
	if len(s) == 0 || len(s) > max || !alnum(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !alnum(c) && strings.IndexByte(extra, c) < 0 {
			return false
		}
	}
	return true
}

func alnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// Characters allowed after the first in names, labels and attribute names.
const (
	nameExtra  = "_.-/"
	labelExtra = "_.-"
	attrExtra  = "_.:-"
)

// ValidName checks an object name: 1-255 characters from A-Z a-z 0-9 _ . - /,
// starting with a letter or digit, with no empty, "." or ".." path segment.
func ValidName(name string) error {
	if !plainChars(name, 255, nameExtra) {
		return fmt.Errorf("%w: name %q: use 1-255 characters from A-Z a-z 0-9 _ . - /, starting with a letter or digit", ErrInvalid, name)
	}
	for rest := name; ; {
		seg, after, more := strings.Cut(rest, "/")
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("%w: name %q: empty, \".\" and \"..\" path segments are not allowed", ErrInvalid, name)
		}
		if !more {
			return nil
		}
		rest = after
	}
}

// ValidLabel checks a wallet, endpoint or user name: 1-64 characters from
// A-Z a-z 0-9 _ . -, starting with a letter or digit.
func ValidLabel(what, name string) error {
	if !plainChars(name, 64, labelExtra) {
		return fmt.Errorf("%w: %s name %q: use 1-64 characters from A-Z a-z 0-9 _ . -, starting with a letter or digit", ErrInvalid, what, name)
	}
	return nil
}

func validAttrs(set map[string]string) error {
	if len(set) > MaxAttributes {
		return fmt.Errorf("%w: at most %d attributes, got %d", ErrInvalid, MaxAttributes, len(set))
	}
	for k, v := range set {
		if !plainChars(k, 128, attrExtra) {
			return fmt.Errorf("%w: attribute name %q: use 1-128 characters from A-Z a-z 0-9 _ . : -, starting with a letter or digit", ErrInvalid, k)
		}
		if len(v) > 1024 || !utf8.ValidString(v) || strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			return fmt.Errorf("%w: attribute %q: value must be at most 1024 bytes of printable UTF-8", ErrInvalid, k)
		}
	}
	return nil
}

// Object is a security object's metadata as callers see it.
type Object struct {
	ID          string            `json:"id"`
	Wallet      string            `json:"wallet"`
	Name        string            `json:"name"`
	Type        string            `json:"type"`
	Algorithm   string            `json:"algorithm"`
	Length      int               `json:"length" doc:"bits"`
	State       string            `json:"state" doc:"pre-active, active, deactivated, compromised or destroyed"`
	Reason      string            `json:"reason,omitempty"`
	Attributes  map[string]string `json:"attributes,omitempty"`
	CreatedBy   string            `json:"created_by,omitempty"`
	Created     time.Time         `json:"created"`
	Updated     time.Time         `json:"updated"`
	Activated   *time.Time        `json:"activated,omitempty"`
	Deactivated *time.Time        `json:"deactivated,omitempty"`
	Compromised *time.Time        `json:"compromised,omitempty"`
	Destroyed   *time.Time        `json:"destroyed,omitempty"`
	Latest      uint64            `json:"latest_version"`
	Versions    []ObjectVersion   `json:"versions"`
}

// ObjectVersion is one generation of an object's material.
type ObjectVersion struct {
	Version   uint64    `json:"version"`
	Created   time.Time `json:"created"`
	Length    int       `json:"length,omitempty"`
	Public    []byte    `json:"public_key,omitempty" doc:"PKIX DER public key of a key pair, base64"`
	Destroyed bool      `json:"destroyed,omitempty"`
}

// Material is one version's secret: the raw key bytes (symmetric), the value
// (secret data) or the PKCS#8 DER private key (key pair).
type Material struct {
	Version uint64 `json:"version"`
	Value   []byte `json:"value" doc:"base64"`
	Public  []byte `json:"public_key,omitempty" doc:"PKIX DER, base64"`
}

func objectOf(o state.Object) Object {
	out := Object{ID: o.ID, Wallet: o.Wallet, Name: o.Name, Type: o.Type, Algorithm: o.Algorithm, Length: o.Length,
		State: string(o.State), Reason: o.Reason, Attributes: o.Attributes, CreatedBy: o.CreatedBy, Created: o.Created,
		Updated: o.Updated, Activated: o.Activated, Deactivated: o.Deactivate, Compromised: o.Compromise, Destroyed: o.Destroyed,
		Latest: o.Latest, Versions: make([]ObjectVersion, len(o.Versions))}
	for i, v := range o.Versions {
		out.Versions[i] = ObjectVersion{Version: v.Version, Created: v.Created, Length: v.Length, Public: v.Public, Destroyed: v.Destroyed}
	}
	return out
}

// Ref names an object: by ID, or by wallet and name.
type Ref struct {
	ID     string
	Wallet string
	Name   string
}

func (r Ref) String() string {
	if r.ID != "" {
		return r.ID
	}
	return r.Wallet + "/" + r.Name
}

// CreateObject is a request to create a security object.
type CreateObject struct {
	Wallet    string            `json:"wallet"`
	Name      string            `json:"name"`
	Type      string            `json:"type" doc:"symmetric_key, secret_data or key_pair"`
	Algorithm string            `json:"algorithm,omitempty" doc:"AES (symmetric_key), RSA or EC (key_pair); OPAQUE for secret_data"`
	Length    int               `json:"length,omitempty" doc:"AES: 128, 192, 256 (default 256); RSA: 2048, 3072, 4096 (default 3072); EC: 256 or 384 (default 256)"`
	Value     []byte            `json:"value,omitempty" doc:"secret_data: the value (required, base64, at most 64 KiB); symmetric_key: optional imported key"`
	Attrs     map[string]string `json:"attributes,omitempty"`
	PreActive bool              `json:"pre_active,omitempty" doc:"create in state pre-active instead of active"`
}

// generate makes new material for a type/algorithm/length, or checks
// imported material. It returns the normalised algorithm and length.
func generate(typ, alg string, length int, value []byte) (material, public []byte, algOut string, lenOut int, err error) {
	switch typ {
	case TypeSymmetricKey:
		if alg == "" {
			alg = "AES"
		}
		if !strings.EqualFold(alg, "AES") {
			return nil, nil, "", 0, fmt.Errorf("%w: symmetric key algorithm %q: only AES", ErrInvalid, alg)
		}
		if len(value) > 0 {
			if length != 0 && length != len(value)*8 {
				return nil, nil, "", 0, fmt.Errorf("%w: imported key is %d bits, length says %d", ErrInvalid, len(value)*8, length)
			}
			length = len(value) * 8
		}
		if length == 0 {
			length = 256
		}
		if length != 128 && length != 192 && length != 256 {
			return nil, nil, "", 0, fmt.Errorf("%w: AES key length %d: use 128, 192 or 256 bits", ErrInvalid, length)
		}
		if len(value) > 0 {
			return slices.Clone(value), nil, "AES", length, nil
		}
		k := make([]byte, length/8)
		randRead(k)
		return k, nil, "AES", length, nil
	case TypeSecretData:
		if alg != "" && !strings.EqualFold(alg, "OPAQUE") {
			return nil, nil, "", 0, fmt.Errorf("%w: secret data has no algorithm (got %q)", ErrInvalid, alg)
		}
		if len(value) == 0 || len(value) > MaxSecretBytes {
			return nil, nil, "", 0, fmt.Errorf("%w: secret value must be 1 to %d bytes, got %d", ErrInvalid, MaxSecretBytes, len(value))
		}
		return slices.Clone(value), nil, "OPAQUE", len(value) * 8, nil
	case TypeKeyPair:
		if len(value) > 0 {
			return nil, nil, "", 0, fmt.Errorf("%w: key pairs are generated by the server; import is not supported", ErrInvalid)
		}
		var priv any
		switch strings.ToUpper(alg) {
		case "RSA":
			if length == 0 {
				length = 3072
			}
			if length != 2048 && length != 3072 && length != 4096 {
				return nil, nil, "", 0, fmt.Errorf("%w: RSA key length %d: use 2048, 3072 or 4096 bits", ErrInvalid, length)
			}
			k, err := rsa.GenerateKey(rand.Reader, length)
			if err != nil {
				return nil, nil, "", 0, fmt.Errorf("generate RSA key: %w", err)
			}
			priv, alg = k, "RSA"
		case "EC":
			if length == 0 {
				length = 256
			}
			var curve elliptic.Curve
			switch length {
			case 256:
				curve = elliptic.P256()
			case 384:
				curve = elliptic.P384()
			default:
				return nil, nil, "", 0, fmt.Errorf("%w: EC key length %d: use 256 (P-256) or 384 (P-384)", ErrInvalid, length)
			}
			k, err := ecdsa.GenerateKey(curve, rand.Reader)
			if err != nil {
				return nil, nil, "", 0, fmt.Errorf("generate EC key: %w", err)
			}
			priv, alg = k, "EC"
		default:
			return nil, nil, "", 0, fmt.Errorf("%w: key pair algorithm %q: use RSA or EC", ErrInvalid, alg)
		}
		der, err := x509.MarshalPKCS8PrivateKey(priv)
		if err != nil {
			return nil, nil, "", 0, fmt.Errorf("encode private key: %w", err)
		}
		pub, err := x509.MarshalPKIXPublicKey(priv.(crypto.Signer).Public())
		if err != nil {
			return nil, nil, "", 0, fmt.Errorf("encode public key: %w", err)
		}
		return der, pub, alg, length, nil
	}
	return nil, nil, "", 0, fmt.Errorf("%w: object type %q: use symmetric_key, secret_data or key_pair", ErrInvalid, typ)
}

// authorizeObject checks that the caller may act on o, found by ref, with
// permission need. An endpoint with no grant at all on o's wallet is told
// exactly what it is told of an id that does not exist: 403 here and 404
// there would confirm that the id names an object in a wallet it cannot see.
// (By name the wallet is named by the caller, and both cases answer 403.)
func (s *Objects) authorizeObject(ctx context.Context, ref Ref, o state.Object, need Permission, what string) (Identity, error) {
	return s.authorizeObjectWith(ctx, ref, o, need, what, nil)
}

// readGrant is an endpoint's grant on a wallet read with the object it
// holds (state.ObjectMaterialGrant).
type readGrant struct {
	grant string
	err   error
}

// authorizeObjectWith is authorizeObject with the endpoint caller's grant
// on o's wallet already read (pre; nil reads it here).
func (s *Objects) authorizeObjectWith(ctx context.Context, ref Ref, o state.Object, need Permission, what string, pre *readGrant) (Identity, error) {
	var (
		id  Identity
		err error
	)
	if pre != nil {
		if id, err = caller(ctx); err == nil {
			if id.Kind != KindEndpoint {
				return s.authorizeObjectWith(ctx, ref, o, need, what, nil)
			}
			err = endpointGranted(id, o.Wallet, pre.grant, pre.err, need, what)
		}
	} else {
		id, err = s.authorizeWallet(ctx, o.Wallet, need, what)
	}
	if err == nil || ref.ID == "" || id.Kind != KindEndpoint {
		return id, err
	}
	w, werr := s.st.Wallet(o.Wallet)
	if werr != nil && !errors.Is(werr, state.ErrNotFound) {
		return id, werr
	}
	if Permission(w.Grants[id.Name]) == "" {
		return id, missingObject(ref.ID)
	}
	return id, err
}

// missingObject is the error of a lookup of an id that names no object,
// word for word (see authorizeObject).
func missingObject(id string) error {
	return mapStateErr(fmt.Errorf("object %s: %w", id, state.ErrNotFound))
}

// lookup loads an object by ref.
func (s *Objects) lookup(ref Ref) (state.Object, error) {
	var (
		o   state.Object
		err error
	)
	switch {
	case ref.ID != "":
		o, err = s.st.Object(ref.ID)
	case ref.Wallet != "" && ref.Name != "":
		o, err = s.st.ObjectByName(ref.Wallet, ref.Name)
	default:
		return o, fmt.Errorf("%w: name an object by id, or by wallet and name", ErrInvalid)
	}
	return o, mapStateErr(err)
}

// CreateObject creates a security object with its first version.
func (s *Objects) CreateObject(ctx context.Context, req CreateObject) (Object, error) {
	if err := ValidLabel("wallet", req.Wallet); err != nil {
		return Object{}, err
	}
	if err := ValidName(req.Name); err != nil {
		return Object{}, err
	}
	if err := validAttrs(req.Attrs); err != nil {
		return Object{}, err
	}
	if err := s.checkOpen(); err != nil {
		return Object{}, err
	}
	id, err := s.authorizeWallet(ctx, req.Wallet, PermReadModify, "creating an object")
	if err != nil {
		return Object{}, err
	}
	if _, err := s.st.Wallet(req.Wallet); err != nil {
		return Object{}, mapStateErr(err)
	}
	material, public, alg, length, err := generate(req.Type, req.Algorithm, req.Length, req.Value)
	if err != nil {
		return Object{}, err
	}
	defer clear(material)
	unlock, err := s.openForRead()
	if err != nil {
		return Object{}, err
	}
	defer unlock()
	oid := newUUID()
	sealed, err := s.bar.EncryptValue(oid, 1, material)
	if err != nil {
		return Object{}, err
	}
	st := lifecycle.Active
	if req.PreActive {
		st = lifecycle.PreActive
	}
	vlen := 0
	if req.Type == TypeSecretData {
		vlen = length
	}
	res, err := s.applyResult(ctx, state.TypeObjectCreate, state.ObjectCreate{
		Object: state.Object{ID: oid, Wallet: req.Wallet, Name: req.Name, Type: req.Type, Algorithm: alg, Length: length,
			State: st, Attributes: req.Attrs, CreatedBy: id.Actor()},
		Material: sealed, Public: public, Length: vlen})
	if err != nil {
		return Object{}, fmt.Errorf("create %s %q in wallet %q: %w", req.Type, req.Name, req.Wallet, err)
	}
	note(ctx, oid)
	return confirmObject(res)
}

func confirmObject(res any) (Object, error) {
	o, ok := res.(state.Object)
	if !ok {
		// Never report success for a write the state machine did not apply.
		return Object{}, fmt.Errorf("the state machine did not confirm the write (result %T)", res)
	}
	return objectOf(o), nil
}

// DescribeObject returns an object's metadata (no material).
func (s *Objects) DescribeObject(ctx context.Context, ref Ref) (Object, error) {
	o, err := s.readable(ctx, ref, "reading object metadata")
	if err != nil {
		return Object{}, err
	}
	return objectOf(o), nil
}

// readable loads ref and checks read permission on its wallet.
func (s *Objects) readable(ctx context.Context, ref Ref, what string) (state.Object, error) {
	o, _, err := s.readableWith(ctx, ref, what, false, 0)
	return o, err
}

// readableWith is readable and, when material is true and ref is by id,
// the sealed material of version (the latest when 0; nil if none) read
// with the object in one transaction.
func (s *Objects) readableWith(ctx context.Context, ref Ref, what string, material bool, version uint64) (state.Object, []byte, error) {
	id, err := caller(ctx)
	if err != nil {
		return state.Object{}, nil, err
	}
	var (
		o      state.Object
		sealed []byte
		pre    *readGrant
	)
	switch {
	case material && ref.ID != "" && id.Kind == KindEndpoint:
		// An endpoint's grant is read with the object, in one transaction.
		pre = new(readGrant)
		o, sealed, pre.grant, pre.err, err = s.st.ObjectMaterialGrant(ref.ID, version, id.Name)
		err = mapStateErr(err)
	case material && ref.ID != "":
		o, sealed, err = s.st.ObjectWithMaterial(ref.ID, version)
		err = mapStateErr(err)
	default:
		o, err = s.lookup(ref)
	}
	if err != nil {
		note(ctx, ref.String())
		if ref.Wallet != "" {
			// Do not tell an endpoint what exists in a wallet it cannot read.
			if _, aerr := s.authorizeWallet(ctx, ref.Wallet, PermRead, what); aerr != nil {
				return o, nil, aerr
			}
		}
		return o, nil, err
	}
	if _, err := s.authorizeObjectWith(ctx, ref, o, PermRead, what, pre); err != nil {
		if errors.Is(err, ErrNotFound) {
			note(ctx, ref.String())
		}
		return o, nil, err
	}
	note(ctx, o.ID)
	return o, sealed, nil
}

// GetObject returns an object's metadata and the material of version (0 = latest).
func (s *Objects) GetObject(ctx context.Context, ref Ref, version uint64) (Object, Material, error) {
	unlock, err := s.openForRead()
	if err != nil {
		return Object{}, Material{}, err
	}
	defer unlock()
	o, sealed, err := s.readableWith(ctx, ref, "getting object material", true, version)
	if err != nil {
		return Object{}, Material{}, err
	}
	if version == 0 {
		version = o.Latest
	}
	i := slices.IndexFunc(o.Versions, func(v state.Version) bool { return v.Version == version })
	if i < 0 {
		return Object{}, Material{}, fmt.Errorf("%w: object %s has no version %d (latest %d)", ErrNotFound, o.ID, version, o.Latest)
	}
	if o.Versions[i].Destroyed || !lifecycle.Usable(o.State) {
		return objectOf(o), Material{}, fmt.Errorf("%w: object %s version %d was destroyed on %s; its material is erased from the live state (it remains in backups taken before, within their retention)",
			ErrGone, o.ID, version, fmtTime(o.Destroyed))
	}
	if sealed == nil {
		// Not read with the object (a ref by name), or missing: read
		// here, or its not-found error.
		if sealed, err = s.st.Material(o.ID, version); err != nil {
			return Object{}, Material{}, mapStateErr(err)
		}
	}
	pt, err := s.bar.DecryptValue(o.ID, version, sealed)
	if err != nil {
		return Object{}, Material{}, fmt.Errorf("object %s version %d: %w", o.ID, version, err)
	}
	return objectOf(o), Material{Version: version, Value: pt, Public: o.Versions[i].Public}, nil
}

func fmtTime(t *time.Time) string {
	if t == nil {
		return "an unknown date"
	}
	return t.UTC().Format(time.RFC3339)
}

// RotateObject adds a new version: fresh material of the same kind, or value
// for secret data (required) and imported symmetric keys.
func (s *Objects) RotateObject(ctx context.Context, ref Ref, value []byte) (Object, error) {
	unlock, err := s.openForRead()
	if err != nil {
		return Object{}, err
	}
	defer unlock()
	return s.rotateLocked(ctx, ref, value)
}

func (s *Objects) rotateLocked(ctx context.Context, ref Ref, value []byte) (Object, error) {
	if _, err := caller(ctx); err != nil {
		return Object{}, err
	}
	first, err := s.lookup(ref)
	if err != nil {
		return Object{}, err
	}
	asked := ref
	// Rotations of one object take turns on this node (a slot per object),
	// so concurrent rotations do not race for the same version number; the
	// state machine still refuses a stale one (another node's), retried here.
	l := &s.objLocks[lockSlot(first.ID)]
	l.Lock()
	defer l.Unlock()
	ref = Ref{ID: first.ID}
	for attempt := 0; ; attempt++ {
		o, err := s.lookup(ref)
		if err != nil {
			return Object{}, err
		}
		if _, err := s.authorizeObject(ctx, asked, o, PermReadModify, "rotating an object"); err != nil {
			return Object{}, err
		}
		if o.State != lifecycle.PreActive && o.State != lifecycle.Active {
			return Object{}, fmt.Errorf("%w: object %s is %s; only a pre-active or active object can be rotated", ErrState, o.ID, o.State)
		}
		length := o.Length
		if o.Type == TypeSecretData {
			length = 0
		} else if o.Type == TypeSymmetricKey && len(value) > 0 && len(value)*8 != o.Length {
			return Object{}, fmt.Errorf("%w: object %s is a %d-bit key; the new value is %d bits", ErrInvalid, o.ID, o.Length, len(value)*8)
		}
		material, public, _, vlen, err := generate(o.Type, o.Algorithm, length, value)
		if err != nil {
			return Object{}, err
		}
		version := o.Latest + 1
		sealed, err := s.bar.EncryptValue(o.ID, version, material)
		clear(material)
		if err != nil {
			return Object{}, err
		}
		if o.Type != TypeSecretData {
			vlen = 0
		}
		res, err := s.applyResult(ctx, state.TypeObjectRotate, state.ObjectRotate{ID: o.ID, Version: version, Material: sealed, Public: public, Length: vlen})
		if errors.Is(err, ErrConflict) && attempt < 10 {
			time.Sleep(time.Duration(attempt+1) * 5 * time.Millisecond)
			continue // a rotation elsewhere took this version number
		}
		if err != nil {
			return Object{}, fmt.Errorf("rotate object %s: %w", o.ID, err)
		}
		note(ctx, o.ID)
		return confirmObject(res)
	}
}

// PutSecret stores value as the next version of the secret-data object
// wallet/name, creating it (active) if it does not exist. It is the write of
// a key/value store: what Vault's KV write does.
func (s *Objects) PutSecret(ctx context.Context, wallet, name string, value []byte) (Object, error) {
	if err := ValidLabel("wallet", wallet); err != nil {
		return Object{}, err
	}
	if err := ValidName(name); err != nil {
		return Object{}, err
	}
	if len(value) == 0 || len(value) > MaxSecretBytes {
		return Object{}, fmt.Errorf("%w: secret value must be 1 to %d bytes, got %d", ErrInvalid, MaxSecretBytes, len(value))
	}
	if err := s.checkOpen(); err != nil {
		return Object{}, err
	}
	if _, err := s.authorizeWallet(ctx, wallet, PermReadModify, "writing a secret"); err != nil {
		return Object{}, err
	}
	l := &s.nameLocks[lockSlot(wallet+"/"+name)]
	l.Lock()
	defer l.Unlock()
	for attempt := 0; ; attempt++ {
		o, err := s.st.ObjectByName(wallet, name)
		if errors.Is(err, state.ErrNotFound) {
			obj, err := s.CreateObject(ctx, CreateObject{Wallet: wallet, Name: name, Type: TypeSecretData, Value: value})
			if errors.Is(err, ErrConflict) && attempt < 3 {
				continue // created concurrently by another node's request
			}
			return obj, err
		}
		if err != nil {
			return Object{}, err
		}
		if o.Type != TypeSecretData {
			return Object{}, fmt.Errorf("%w: %s/%s is a %s, not secret data", ErrConflict, wallet, name, o.Type)
		}
		unlock, err := s.openForRead()
		if err != nil {
			return Object{}, err
		}
		obj, err := s.rotateLocked(ctx, Ref{ID: o.ID}, value)
		unlock()
		return obj, err
	}
}

// Transition names an object state change.
type Transition string

// Transitions callers ask for.
const (
	Activate   Transition = "activate"
	Deactivate Transition = "deactivate"
	Revoke     Transition = "revoke" // mark compromised
	Destroy    Transition = "destroy"
)

var transitionTarget = map[Transition]struct {
	to   lifecycle.State
	need Permission
}{
	Activate:   {lifecycle.Active, PermReadModify},
	Deactivate: {lifecycle.Deactivated, PermManage},
	Revoke:     {lifecycle.Compromised, PermManage},
	Destroy:    {lifecycle.Destroyed, PermManage},
}

// ChangeState applies a lifecycle transition. Destroying erases the material
// of every version from the live state and keeps the metadata.
func (s *Objects) ChangeState(ctx context.Context, ref Ref, t Transition, reason string) (Object, error) {
	tt, ok := transitionTarget[t]
	if !ok {
		return Object{}, fmt.Errorf("%w: transition %q: use activate, deactivate, revoke or destroy", ErrInvalid, t)
	}
	if len(reason) > 1024 || !utf8.ValidString(reason) {
		return Object{}, fmt.Errorf("%w: reason must be at most 1024 bytes of UTF-8", ErrInvalid)
	}
	unlock, err := s.openForRead()
	if err != nil {
		return Object{}, err
	}
	defer unlock()
	if _, err := caller(ctx); err != nil {
		return Object{}, err
	}
	o, err := s.lookup(ref)
	if err != nil {
		return Object{}, err
	}
	if _, err := s.authorizeObject(ctx, ref, o, tt.need, string(t)+" of an object"); err != nil {
		return Object{}, err
	}
	if err := lifecycle.Check(o.State, tt.to); err != nil {
		return Object{}, fmt.Errorf("%w: object %s: %v", ErrState, o.ID, err)
	}
	res, err := s.applyResult(ctx, state.TypeObjectState, state.ObjectState{ID: o.ID, To: tt.to, Reason: reason})
	if err != nil {
		return Object{}, fmt.Errorf("%s object %s: %w", t, o.ID, err)
	}
	note(ctx, o.ID)
	if t == Destroy {
		s.log.Warn("object destroyed", "id", o.ID, "wallet", o.Wallet, "name", o.Name, "by", CallFrom(ctx).Identity.Actor())
	}
	return confirmObject(res)
}

// SetAttributes sets and deletes custom attributes.
func (s *Objects) SetAttributes(ctx context.Context, ref Ref, set map[string]string, del []string) (Object, error) {
	if err := validAttrs(set); err != nil {
		return Object{}, err
	}
	if len(del) > MaxAttributes {
		return Object{}, fmt.Errorf("%w: at most %d attribute deletions", ErrInvalid, MaxAttributes)
	}
	unlock, err := s.openForRead()
	if err != nil {
		return Object{}, err
	}
	defer unlock()
	if _, err := caller(ctx); err != nil {
		return Object{}, err
	}
	o, err := s.lookup(ref)
	if err != nil {
		return Object{}, err
	}
	if _, err := s.authorizeObject(ctx, ref, o, PermReadModify, "changing attributes"); err != nil {
		return Object{}, err
	}
	res, err := s.applyResult(ctx, state.TypeObjectAttrs, state.ObjectAttrs{ID: o.ID, Set: set, Delete: del})
	if err != nil {
		return Object{}, fmt.Errorf("set attributes of object %s: %w", o.ID, err)
	}
	note(ctx, o.ID)
	return confirmObject(res)
}

// Query selects objects (locate). Empty fields match everything.
type Query struct {
	Wallet     string
	Name       string // exact, or a prefix ending in "*"
	Type       string
	State      string
	Attributes map[string]string // all must match exactly
	Limit      int
	PageToken  string
}

// Page is one page of a list.
type Page[T any] struct {
	Items     []T    `json:"items"`
	NextToken string `json:"next_page_token,omitempty"`
}

// ListObjects returns objects matching q, in id order, one page at a time.
// Endpoints see only wallets they may read.
func (s *Objects) ListObjects(ctx context.Context, q Query) (Page[Object], error) {
	id, err := caller(ctx)
	if err != nil {
		return Page[Object]{}, err
	}
	limit, err := pageLimit(q.Limit)
	if err != nil {
		return Page[Object]{}, err
	}
	after, err := decodePageToken(q.PageToken)
	if err != nil {
		return Page[Object]{}, err
	}
	if q.State != "" && !lifecycle.Valid(lifecycle.State(q.State)) {
		return Page[Object]{}, fmt.Errorf("%w: state %q: use one of %v", ErrInvalid, q.State, lifecycle.All)
	}
	if q.Type != "" && q.Type != TypeSymmetricKey && q.Type != TypeSecretData && q.Type != TypeKeyPair {
		return Page[Object]{}, fmt.Errorf("%w: type %q: use symmetric_key, secret_data or key_pair", ErrInvalid, q.Type)
	}
	var readable map[string]bool // nil: all wallets
	switch {
	case q.Wallet != "":
		if _, err := s.authorizeWallet(ctx, q.Wallet, PermRead, "listing objects"); err != nil {
			return Page[Object]{}, err
		}
	case id.Kind == KindEndpoint:
		ws, err := s.st.Wallets()
		if err != nil {
			return Page[Object]{}, err
		}
		readable = map[string]bool{}
		for _, w := range ws {
			if Permission(w.Grants[id.Name]).Includes(PermRead) {
				readable[w.Name] = true
			}
		}
	default:
		if _, err := s.authorizeWallet(ctx, "", PermRead, "listing objects"); err != nil {
			return Page[Object]{}, err
		}
	}
	prefix, isPrefix := strings.CutSuffix(q.Name, "*")
	var page Page[Object]
	err = s.st.Objects(after, func(o state.Object) bool {
		switch {
		case q.Wallet != "" && o.Wallet != q.Wallet,
			readable != nil && !readable[o.Wallet],
			q.Type != "" && o.Type != q.Type,
			q.State != "" && string(o.State) != q.State,
			q.Name != "" && !isPrefix && o.Name != q.Name,
			isPrefix && !strings.HasPrefix(o.Name, prefix):
			return true
		}
		for k, v := range q.Attributes {
			if got, ok := o.Attributes[k]; !ok || got != v {
				return true
			}
		}
		if len(page.Items) == limit {
			page.NextToken = encodePageToken(page.Items[limit-1].ID)
			return false
		}
		page.Items = append(page.Items, objectOf(o))
		return true
	})
	if page.Items == nil {
		page.Items = []Object{}
	}
	return page, err
}

func pageLimit(n int) (int, error) {
	switch {
	case n == 0:
		return DefaultListLimit, nil
	case n < 0 || n > MaxListLimit:
		return 0, fmt.Errorf("%w: limit %d: use 1 to %d", ErrInvalid, n, MaxListLimit)
	}
	return n, nil
}

func encodePageToken(after string) string { return base64.RawURLEncoding.EncodeToString([]byte(after)) }

func decodePageToken(tok string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(b) > 512 {
		return "", fmt.Errorf("%w: page token %q is not one this server issued", ErrInvalid, tok)
	}
	return string(b), nil
}

// paginate pages a sorted in-memory list by name.
func paginate[T any](items []T, key func(T) string, limit int, token string) (Page[T], error) {
	n, err := pageLimit(limit)
	if err != nil {
		return Page[T]{}, err
	}
	after, err := decodePageToken(token)
	if err != nil {
		return Page[T]{}, err
	}
	start, _ := slices.BinarySearchFunc(items, after, func(it T, a string) int { return strings.Compare(key(it), a) })
	if start < len(items) && after != "" && key(items[start]) == after {
		start++
	}
	end := min(start+n, len(items))
	p := Page[T]{Items: slices.Clone(items[start:end])}
	if p.Items == nil {
		p.Items = []T{}
	}
	if end < len(items) {
		p.NextToken = encodePageToken(key(items[end-1]))
	}
	return p, nil
}

// lockSlots is the number of name and object lock slots.
const lockSlots = 4096

func lockSlot(name string) int {
	h := fnv.New32a()
	h.Write([]byte(name)) // #nosec G104 -- hash.Hash writes never fail
	return int(h.Sum32() % lockSlots)
}

// newUUID is a new object id: a UUIDv7 (RFC 9562) of the current time.
func newUUID() string { return newUUIDAt(time.Now()) }

// newUUIDAt is a UUIDv7 for time t: the Unix time in milliseconds in the
// first 48 bits (big-endian), version 7, variant 10, and 74 random bits
// from crypto/rand, which keep ids unique within a millisecond. Ids of
// later milliseconds sort after earlier ones, as strings too, so new
// objects are appended at the end of the buckets keyed by id.
func newUUIDAt(t time.Time) string {
	var b [16]byte
	// The low 48 bits of the millisecond count, big-endian, then 10 random bytes.
	binary.BigEndian.PutUint64(b[:8], uint64(t.UnixMilli())) // #nosec G115 -- times before 1970 do not occur on a running server; the id stays a valid UUID either way
	copy(b[:6], b[2:8])
	randRead(b[6:])
	b[6] = b[6]&0x0f | 0x70
	b[8] = b[8]&0x3f | 0x80
	var out [36]byte
	hex.Encode(out[0:8], b[0:4])
	out[8] = '-'
	hex.Encode(out[9:13], b[4:6])
	out[13] = '-'
	hex.Encode(out[14:18], b[6:8])
	out[18] = '-'
	hex.Encode(out[19:23], b[8:10])
	out[23] = '-'
	hex.Encode(out[24:], b[10:])
	return string(out[:])
}
