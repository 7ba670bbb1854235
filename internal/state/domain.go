package state

import (
	"bytes"
	"fmt"
	"maps"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/coffer-kms/coffer/internal/lifecycle"
)

// Limits the state machine enforces on every committed command. The service
// checks the same (and stricter) rules first so users get a precise message;
// these are the last line, so that a malformed entry fails as a result
// instead of corrupting the state.
const (
	maxIDBytes       = 64
	maxNameBytes     = 255
	maxMaterialBytes = 128 << 10
	maxAttributes    = 64
	maxAttrKeyBytes  = 128
	maxAttrValBytes  = 1024
	maxTextBytes     = 1024
)

// Object types.
const (
	TypeSymmetricKey = "symmetric_key"
	TypeSecretData   = "secret_data"
	TypeKeyPair      = "key_pair"
)

// Object is a security object's metadata. Its material lives, sealed by the
// barrier, under (ID, version) in the versions bucket.
type Object struct {
	ID         string            `json:"id"`
	Wallet     string            `json:"wallet"`
	Name       string            `json:"name"`
	Type       string            `json:"type"`
	Algorithm  string            `json:"algorithm"`
	Length     int               `json:"length"` // bits
	State      lifecycle.State   `json:"state"`
	Reason     string            `json:"reason,omitempty"` // why it was deactivated or revoked
	Attributes map[string]string `json:"attributes,omitempty"`
	CreatedBy  string            `json:"created_by,omitempty"`
	Created    time.Time         `json:"created"`
	Updated    time.Time         `json:"updated"`
	Activated  *time.Time        `json:"activated,omitempty"`
	Deactivate *time.Time        `json:"deactivated,omitempty"`
	Compromise *time.Time        `json:"compromised,omitempty"`
	Destroyed  *time.Time        `json:"destroyed,omitempty"`
	Latest     uint64            `json:"latest"`
	Versions   []Version         `json:"versions"`
}

// Version is one generation of an object's material.
type Version struct {
	Version   uint64    `json:"version"`
	Created   time.Time `json:"created"`
	Length    int       `json:"length,omitempty"` // bits, when it differs per version (secret data)
	Public    []byte    `json:"public,omitempty"` // PKIX DER public key of a key pair (not secret)
	Destroyed bool      `json:"destroyed,omitempty"`
}

// ObjectCreate adds an object with its first version. Material is already
// sealed by the barrier for (Object.ID, 1).
type ObjectCreate struct {
	Object   Object `json:"object"`
	Material []byte `json:"material"`
	Public   []byte `json:"public,omitempty"`
	Length   int    `json:"length,omitempty"`
}

// ObjectRotate adds version Version (which must be latest+1).
type ObjectRotate struct {
	ID       string `json:"id"`
	Version  uint64 `json:"version"`
	Material []byte `json:"material"`
	Public   []byte `json:"public,omitempty"`
	Length   int    `json:"length,omitempty"`
}

// ObjectState moves an object along its lifecycle. Destroyed erases the
// material of every version; the metadata stays.
type ObjectState struct {
	ID     string          `json:"id"`
	To     lifecycle.State `json:"to"`
	Reason string          `json:"reason,omitempty"`
}

// ObjectAttrs sets and deletes custom attributes.
type ObjectAttrs struct {
	ID     string            `json:"id"`
	Set    map[string]string `json:"set,omitempty"`
	Delete []string          `json:"delete,omitempty"`
}

// Wallet is a named group of objects and the endpoints' permissions on it.
type Wallet struct {
	Name        string            `json:"name"`
	Description string            `json:"description,omitempty"`
	CreatedBy   string            `json:"created_by,omitempty"`
	Created     time.Time         `json:"created"`
	Grants      map[string]string `json:"grants,omitempty"` // endpoint name -> permission
}

// WalletDelete removes an empty wallet.
type WalletDelete struct {
	Name string `json:"name"`
}

// Grant sets (or, with an empty Permission, removes) an endpoint's permission on a wallet.
type Grant struct {
	Wallet     string `json:"wallet"`
	Endpoint   string `json:"endpoint"`
	Permission string `json:"permission,omitempty"`
}

// Permissions an endpoint can hold on a wallet, weakest first.
var Permissions = []string{"read", "read_modify", "manage"}

// Endpoint is an enrolled client.
type Endpoint struct {
	Name            string     `json:"name"`
	Description     string     `json:"description,omitempty"`
	State           string     `json:"state"` // active, revoked
	CertFingerprint string     `json:"cert_fingerprint,omitempty"`
	CertSerial      string     `json:"cert_serial,omitempty"`
	CertNotAfter    time.Time  `json:"cert_not_after,omitzero"`
	CreatedBy       string     `json:"created_by,omitempty"`
	Created         time.Time  `json:"created"`
	Revoked         *time.Time `json:"revoked,omitempty"`
}

// EndpointEnroll stores an endpoint with its token hash. A revoked endpoint
// of the same name is replaced (re-enrolment); an active one is a conflict.
type EndpointEnroll struct {
	Endpoint  Endpoint `json:"endpoint"`
	TokenHash string   `json:"token_hash"`
}

// EndpointRevoke disables an endpoint's token and certificate.
type EndpointRevoke struct {
	Name string `json:"name"`
}

// User is an administrator.
type User struct {
	Name         string    `json:"name"`
	PasswordHash string    `json:"password_hash"` // argon2id, PHC string form
	Roles        []string  `json:"roles"`
	Disabled     bool      `json:"disabled,omitempty"`
	CredGen      uint64    `json:"cred_gen,omitempty"` // bumped by a password change or a disable: older sessions stop working
	Created      time.Time `json:"created"`
	Updated      time.Time `json:"updated"`
}

// UserUpdate changes fields that are set.
type UserUpdate struct {
	Name         string    `json:"name"`
	PasswordHash *string   `json:"password_hash,omitempty"`
	Roles        *[]string `json:"roles,omitempty"`
	Disabled     *bool     `json:"disabled,omitempty"`
}

// UserDelete removes a user and its sessions.
type UserDelete struct {
	Name string `json:"name"`
}

// TokenRevoke deletes a token by hash.
type TokenRevoke struct {
	Hash string `json:"hash"`
}

func bad(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrBadCommand}, args...)...)
}

func checkLen(what, s string, lo, hi int) error {
	if len(s) < lo || len(s) > hi {
		return bad("%s must be %d to %d bytes, got %d", what, lo, hi, len(s))
	}
	return nil
}

func nameKey(wallet, name string) []byte {
	k := make([]byte, 0, len(wallet)+1+len(name))
	k = append(k, wallet...)
	k = append(k, 0)
	return append(k, name...)
}

func getJSON[T any](b *bolt.Bucket, k []byte) (T, bool, error) {
	var v T
	raw := b.Get(k)
	if raw == nil {
		return v, false, nil
	}
	return v, true, decodeJSON(raw, &v)
}

func checkAttrs(set map[string]string) error {
	if len(set) > maxAttributes {
		return bad("at most %d attributes", maxAttributes)
	}
	for k, v := range set {
		if err := checkLen("attribute name", k, 1, maxAttrKeyBytes); err != nil {
			return err
		}
		if len(v) > maxAttrValBytes {
			return bad("attribute %q value longer than %d bytes", k, maxAttrValBytes)
		}
	}
	return nil
}

func (s *Store) applyObjectCreate(tx *bolt.Tx, now time.Time, c ObjectCreate) (any, error) {
	o := c.Object
	for _, e := range []error{checkLen("object id", o.ID, 1, maxIDBytes), checkLen("object name", o.Name, 1, maxNameBytes),
		checkLen("wallet name", o.Wallet, 1, maxNameBytes), checkLen("material", string(c.Material), 1, maxMaterialBytes),
		checkAttrs(o.Attributes)} {
		if e != nil {
			return e, nil
		}
	}
	switch o.Type {
	case TypeSymmetricKey, TypeSecretData, TypeKeyPair:
	default:
		return bad("unknown object type %q", o.Type), nil
	}
	if o.State != lifecycle.PreActive && o.State != lifecycle.Active {
		return bad("a new object is pre-active or active, not %q", o.State), nil
	}
	if !s.wc.has(tx, bucketWallets, []byte(o.Wallet)) {
		return fmt.Errorf("wallet %q: %w", o.Wallet, ErrNotFound), nil
	}
	if s.wc.has(tx, bucketObjects, []byte(o.ID)) {
		return fmt.Errorf("object id %s: %w", o.ID, ErrExists), nil
	}
	if s.wc.has(tx, bucketNames, nameKey(o.Wallet, o.Name)) {
		return fmt.Errorf("object %q in wallet %q: %w", o.Name, o.Wallet, ErrExists), nil
	}
	o.Created, o.Updated, o.Latest, o.Reason = now, now, 1, ""
	o.Activated, o.Deactivate, o.Compromise, o.Destroyed = nil, nil, nil, nil
	if o.State == lifecycle.Active {
		t := now
		o.Activated = &t
	}
	o.Versions = []Version{{Version: 1, Created: now, Length: c.Length, Public: c.Public}}
	if err := tx.Bucket(bucketValues).Put(valueKey(o.ID, 1), c.Material); err != nil {
		return nil, err
	}
	if err := tx.Bucket(bucketNames).Put(nameKey(o.Wallet, o.Name), []byte(o.ID)); err != nil {
		return nil, err
	}
	return o, putJSON(tx.Bucket(bucketObjects), []byte(o.ID), o)
}

// load reads key from b; a missing key is an ErrNotFound naming what (a
// domain result, see resultOrIO), a decoding failure an I/O error.
func load[T any](b *bolt.Bucket, key, what string) (T, error) {
	v, ok, err := getJSON[T](b, []byte(key))
	if err == nil && !ok {
		err = fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	return v, err
}

func (s *Store) loadObject(tx *bolt.Tx, id string) (Object, error) {
	return load[Object](tx.Bucket(bucketObjects), id, "object "+id)
}

func (s *Store) applyObjectRotate(tx *bolt.Tx, now time.Time, c ObjectRotate) (any, error) {
	if err := checkLen("material", string(c.Material), 1, maxMaterialBytes); err != nil {
		return err, nil
	}
	o, err := s.loadObject(tx, c.ID)
	if err != nil {
		return resultOrIO(err)
	}
	if o.State != lifecycle.PreActive && o.State != lifecycle.Active {
		return fmt.Errorf("%w: object %s is %s; only a pre-active or active object can be rotated", lifecycle.ErrIllegal, o.ID, o.State), nil
	}
	if c.Version != o.Latest+1 {
		return fmt.Errorf("object %s: version %d proposed, but the next version is %d: %w", o.ID, c.Version, o.Latest+1, ErrConflict), nil
	}
	o.Latest, o.Updated = c.Version, now
	o.Versions = append(o.Versions, Version{Version: c.Version, Created: now, Length: c.Length, Public: c.Public})
	if err := tx.Bucket(bucketValues).Put(valueKey(o.ID, c.Version), c.Material); err != nil {
		return nil, err
	}
	return o, putJSON(tx.Bucket(bucketObjects), []byte(o.ID), o)
}

func (s *Store) applyObjectState(tx *bolt.Tx, now time.Time, c ObjectState) (any, error) {
	if len(c.Reason) > maxTextBytes {
		return bad("reason longer than %d bytes", maxTextBytes), nil
	}
	o, err := s.loadObject(tx, c.ID)
	if err != nil {
		return resultOrIO(err)
	}
	if err := lifecycle.Check(o.State, c.To); err != nil {
		return fmt.Errorf("object %s: %w", o.ID, err), nil
	}
	t := now
	switch c.To {
	case lifecycle.Active:
		o.Activated = &t
	case lifecycle.Deactivated:
		o.Deactivate = &t
	case lifecycle.Compromised:
		o.Compromise = &t
	case lifecycle.Destroyed:
		o.Destroyed = &t
		vals := tx.Bucket(bucketValues)
		for i := range o.Versions {
			if err := vals.Delete(valueKey(o.ID, o.Versions[i].Version)); err != nil {
				return nil, err
			}
			o.Versions[i].Destroyed = true
		}
	}
	if c.Reason != "" {
		o.Reason = c.Reason
	}
	o.State, o.Updated = c.To, now
	return o, putJSON(tx.Bucket(bucketObjects), []byte(o.ID), o)
}

func (s *Store) applyObjectAttrs(tx *bolt.Tx, now time.Time, c ObjectAttrs) (any, error) {
	if err := checkAttrs(c.Set); err != nil {
		return err, nil
	}
	o, err := s.loadObject(tx, c.ID)
	if err != nil {
		return resultOrIO(err)
	}
	if o.State == lifecycle.Destroyed {
		return fmt.Errorf("%w: object %s is destroyed; its attributes are frozen", lifecycle.ErrIllegal, o.ID), nil
	}
	attrs := maps.Clone(o.Attributes)
	if attrs == nil {
		attrs = map[string]string{}
	}
	maps.Copy(attrs, c.Set)
	for _, k := range c.Delete {
		delete(attrs, k)
	}
	if err := checkAttrs(attrs); err != nil {
		return err, nil
	}
	if len(attrs) == 0 {
		attrs = nil
	}
	o.Attributes, o.Updated = attrs, now
	return o, putJSON(tx.Bucket(bucketObjects), []byte(o.ID), o)
}

func (s *Store) applyWalletCreate(tx *bolt.Tx, now time.Time, w Wallet) (any, error) {
	if err := checkLen("wallet name", w.Name, 1, maxNameBytes); err != nil {
		return err, nil
	}
	if len(w.Description) > maxTextBytes {
		return bad("description longer than %d bytes", maxTextBytes), nil
	}
	b := tx.Bucket(bucketWallets)
	if b.Get([]byte(w.Name)) != nil {
		return fmt.Errorf("wallet %q: %w", w.Name, ErrExists), nil
	}
	w.Created, w.Grants = now, nil
	return w, putJSON(b, []byte(w.Name), w)
}

func (s *Store) applyWalletDelete(tx *bolt.Tx, c WalletDelete) (any, error) {
	b := tx.Bucket(bucketWallets)
	if b.Get([]byte(c.Name)) == nil {
		return fmt.Errorf("wallet %q: %w", c.Name, ErrNotFound), nil
	}
	prefix := nameKey(c.Name, "")
	if k, _ := tx.Bucket(bucketNames).Cursor().Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) {
		return fmt.Errorf("wallet %q still holds objects (including destroyed ones, whose metadata is kept): %w", c.Name, ErrConflict), nil
	}
	return nil, b.Delete([]byte(c.Name))
}

func (s *Store) applyGrant(tx *bolt.Tx, c Grant) (any, error) {
	if c.Permission != "" && !slices.Contains(Permissions, c.Permission) {
		return bad("permission %q: use one of %v", c.Permission, Permissions), nil
	}
	b := tx.Bucket(bucketWallets)
	w, err := load[Wallet](b, c.Wallet, fmt.Sprintf("wallet %q", c.Wallet))
	if err != nil {
		return resultOrIO(err)
	}
	ep, err := load[Endpoint](tx.Bucket(bucketEndpoints), c.Endpoint, fmt.Sprintf("endpoint %q", c.Endpoint))
	if err != nil {
		return resultOrIO(err)
	}
	if c.Permission != "" && ep.State != "active" {
		return fmt.Errorf("endpoint %q is %s: %w", c.Endpoint, ep.State, ErrConflict), nil
	}
	if c.Permission == "" {
		if _, had := w.Grants[c.Endpoint]; !had {
			return fmt.Errorf("endpoint %q has no permission on wallet %q: %w", c.Endpoint, c.Wallet, ErrNotFound), nil
		}
		delete(w.Grants, c.Endpoint)
	} else {
		if w.Grants == nil {
			w.Grants = map[string]string{}
		}
		w.Grants[c.Endpoint] = c.Permission
	}
	return w, putJSON(b, []byte(w.Name), w)
}

func checkHash(what, h string) error {
	if len(h) != 64 || !isLowerHex(h) {
		return bad("%s must be 64 lowercase hex characters", what)
	}
	return nil
}

func isLowerHex(s string) bool {
	for _, c := range []byte(s) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func (s *Store) applyEndpointEnroll(tx *bolt.Tx, now time.Time, c EndpointEnroll) (any, error) {
	e := c.Endpoint
	if err := checkLen("endpoint name", e.Name, 1, maxNameBytes); err != nil {
		return err, nil
	}
	if err := checkHash("token hash", c.TokenHash); err != nil {
		return err, nil
	}
	if e.CertFingerprint != "" {
		if err := checkHash("certificate fingerprint", e.CertFingerprint); err != nil {
			return err, nil
		}
		if tx.Bucket(bucketCerts).Get([]byte(e.CertFingerprint)) != nil {
			return fmt.Errorf("certificate %s is already enrolled: %w", e.CertFingerprint, ErrExists), nil
		}
	}
	if len(e.Description) > maxTextBytes {
		return bad("description longer than %d bytes", maxTextBytes), nil
	}
	b := tx.Bucket(bucketEndpoints)
	old, ok, err := getJSON[Endpoint](b, []byte(e.Name))
	if err != nil {
		return nil, err
	}
	if ok && old.State == "active" {
		return fmt.Errorf("endpoint %q is enrolled (revoke it first to re-enrol): %w", e.Name, ErrExists), nil
	}
	if tx.Bucket(bucketTokens).Get([]byte(c.TokenHash)) != nil {
		return fmt.Errorf("token: %w", ErrExists), nil
	}
	e.State, e.Created, e.Revoked = "active", now, nil
	if err := putJSON(tx.Bucket(bucketTokens), []byte(c.TokenHash), Token{Hash: c.TokenHash, Kind: TokenEndpoint, Subject: e.Name, Name: "endpoint " + e.Name, Created: now}); err != nil {
		return nil, err
	}
	if e.CertFingerprint != "" {
		if err := tx.Bucket(bucketCerts).Put([]byte(e.CertFingerprint), []byte(e.Name)); err != nil {
			return nil, err
		}
	}
	return e, putJSON(b, []byte(e.Name), e)
}

func (s *Store) applyEndpointRevoke(tx *bolt.Tx, now time.Time, c EndpointRevoke) (any, error) {
	b := tx.Bucket(bucketEndpoints)
	e, err := load[Endpoint](b, c.Name, fmt.Sprintf("endpoint %q", c.Name))
	if err != nil {
		return resultOrIO(err)
	}
	if e.State != "active" {
		return fmt.Errorf("endpoint %q is already revoked: %w", c.Name, ErrConflict), nil
	}
	if err := deleteTokens(tx, TokenAppRole, e.Name); err != nil {
		return nil, err
	}
	if err := deleteTokens(tx, TokenEndpoint, e.Name); err != nil {
		return nil, err
	}
	if e.CertFingerprint != "" {
		if err := tx.Bucket(bucketCerts).Delete([]byte(e.CertFingerprint)); err != nil {
			return nil, err
		}
		if err := denyCert(tx, e.CertFingerprint, e.Name, "revoked", now); err != nil {
			return nil, err
		}
	}
	// Grants go with the credentials: a re-enrolled endpoint starts with none.
	wb := tx.Bucket(bucketWallets)
	var changed []Wallet
	err = wb.ForEach(func(k, v []byte) error {
		var w Wallet
		if err := decodeJSON(v, &w); err != nil {
			return err
		}
		if _, ok := w.Grants[e.Name]; ok {
			delete(w.Grants, e.Name)
			changed = append(changed, w)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, w := range changed {
		if err := putJSON(wb, []byte(w.Name), w); err != nil {
			return nil, err
		}
	}
	t := now
	e.State, e.Revoked = "revoked", &t
	return e, putJSON(b, []byte(e.Name), e)
}

// deleteTokens removes every token of kind for subject.
func deleteTokens(tx *bolt.Tx, kind, subject string) error {
	b := tx.Bucket(bucketTokens)
	var del [][]byte
	err := b.ForEach(func(k, v []byte) error {
		var t Token
		if err := decodeJSON(v, &t); err != nil {
			return err
		}
		if t.Kind == kind && t.Subject == subject {
			del = append(del, append([]byte(nil), k...))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range del {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

func checkUser(u User) error {
	if err := checkLen("user name", u.Name, 1, maxNameBytes); err != nil {
		return err
	}
	if err := checkLen("password hash", u.PasswordHash, 1, 512); err != nil {
		return err
	}
	if len(u.Roles) > 8 {
		return bad("at most 8 roles")
	}
	return nil
}

func (s *Store) applyUserCreate(tx *bolt.Tx, now time.Time, u User) (any, error) {
	if err := checkUser(u); err != nil {
		return err, nil
	}
	b := tx.Bucket(bucketUsers)
	if b.Get([]byte(u.Name)) != nil {
		return fmt.Errorf("user %q: %w", u.Name, ErrExists), nil
	}
	u.Created, u.Updated = now, now
	return nil, putJSON(b, []byte(u.Name), u)
}

func (s *Store) applyUserUpdate(tx *bolt.Tx, now time.Time, c UserUpdate) (any, error) {
	b := tx.Bucket(bucketUsers)
	u, err := load[User](b, c.Name, fmt.Sprintf("user %q", c.Name))
	if err != nil {
		return resultOrIO(err)
	}
	if c.PasswordHash != nil {
		u.PasswordHash = *c.PasswordHash
	}
	if c.Roles != nil {
		u.Roles = slices.Clone(*c.Roles)
	}
	if c.Disabled != nil {
		u.Disabled = *c.Disabled
	}
	if err := checkUser(u); err != nil {
		return err, nil
	}
	u.Updated = now
	if c.PasswordHash != nil || u.Disabled {
		// A new password or a disabled account ends every session, and a
		// session still being granted on the old credentials is refused.
		u.CredGen++
		if err := deleteTokens(tx, TokenSession, u.Name); err != nil {
			return nil, err
		}
	}
	return nil, putJSON(b, []byte(u.Name), u)
}

func (s *Store) applyUserDelete(tx *bolt.Tx, c UserDelete) (any, error) {
	b := tx.Bucket(bucketUsers)
	if b.Get([]byte(c.Name)) == nil {
		return fmt.Errorf("user %q: %w", c.Name, ErrNotFound), nil
	}
	if err := deleteTokens(tx, TokenSession, c.Name); err != nil {
		return nil, err
	}
	return nil, b.Delete([]byte(c.Name))
}

func (s *Store) applyTokenCreate(tx *bolt.Tx, now time.Time, t Token) (any, error) {
	if err := checkHash("token hash", t.Hash); err != nil {
		return err, nil
	}
	switch t.Kind {
	case "", TokenRoot:
	case TokenSession:
		u, err := load[User](tx.Bucket(bucketUsers), t.Subject, fmt.Sprintf("user %q", t.Subject))
		if err != nil {
			return resultOrIO(err)
		}
		if u.Disabled || u.CredGen != t.CredGen {
			return fmt.Errorf("user %q changed (password or disabled) since the login was checked: %w", t.Subject, ErrConflict), nil
		}
	case TokenEndpoint:
		// An endpoint's login token (Vault's cert login) expires and dies
		// with the endpoint; its enrollment credential is created by the enroll.
		if t.Expires == nil {
			return bad("an endpoint login token needs an expiry"), nil
		}
		e, err := load[Endpoint](tx.Bucket(bucketEndpoints), t.Subject, fmt.Sprintf("endpoint %q", t.Subject))
		if err != nil {
			return resultOrIO(err)
		}
		if e.State != "active" {
			return fmt.Errorf("endpoint %q is %s: %w", t.Subject, e.State, ErrConflict), nil
		}
	case TokenAppRole:
		if res, err := checkAppRoleSecret(tx, t); res != nil || err != nil {
			return res, err
		}
	default:
		return bad("token kind %q cannot be created directly", t.Kind), nil
	}
	b := tx.Bucket(bucketTokens)
	if b.Get([]byte(t.Hash)) != nil {
		return fmt.Errorf("token: %w", ErrExists), nil
	}
	// Sweep expired tokens, a bounded number per command, with the leader's
	// clock from the command: deterministic on every node.
	var expired [][]byte
	c := b.Cursor()
	for k, v := c.First(); k != nil && len(expired) < 64; k, v = c.Next() {
		var old Token
		if decodeJSON(v, &old) == nil && old.Expires != nil && !old.Expires.After(now) {
			expired = append(expired, append([]byte(nil), k...))
		}
	}
	for _, k := range expired {
		if err := b.Delete(k); err != nil {
			return nil, err
		}
	}
	return nil, putJSON(b, []byte(t.Hash), t)
}

func (s *Store) applyTokenRevoke(tx *bolt.Tx, c TokenRevoke) (any, error) {
	b := tx.Bucket(bucketTokens)
	if b.Get([]byte(c.Hash)) == nil {
		return fmt.Errorf("token: %w", ErrNotFound), nil
	}
	return nil, b.Delete([]byte(c.Hash))
}

// resultOrIO splits a lookup error into a domain result or an I/O failure.
func resultOrIO(err error) (any, error) {
	if isDomain(err) {
		return err, nil
	}
	return nil, err
}
