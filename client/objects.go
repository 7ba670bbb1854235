package client

import (
	"context"
	"errors"
	"iter"
	"net/url"
	"strconv"
	"time"
)

// Object types.
const (
	TypeSymmetricKey = "symmetric_key"
	TypeSecretData   = "secret_data"
	TypeKeyPair      = "key_pair"
)

// Object states (KMIP's lifecycle).
const (
	StatePreActive   = "pre-active"
	StateActive      = "active"
	StateDeactivated = "deactivated"
	StateCompromised = "compromised"
	StateDestroyed   = "destroyed"
)

// Object is a security object's metadata.
type Object struct {
	ID          string            `json:"id"`
	Wallet      string            `json:"wallet"`
	Name        string            `json:"name"`
	Type        string            `json:"type"`
	Algorithm   string            `json:"algorithm"`
	Length      int               `json:"length"` // bits
	State       string            `json:"state"`
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
	PublicKey []byte    `json:"public_key,omitempty"` // PKIX DER of a key pair's public key
	Destroyed bool      `json:"destroyed,omitempty"`
}

// Material is one version's secret: the raw key (symmetric key), the value
// (secret data) or the PKCS#8 DER private key (key pair).
type Material struct {
	Version   uint64 `json:"version"`
	Value     []byte `json:"value"`
	PublicKey []byte `json:"public_key,omitempty"` // PKIX DER
}

// ObjectWithMaterial is an object and, unless metadata only was asked for,
// one version's material.
type ObjectWithMaterial struct {
	Object   Object    `json:"object"`
	Material *Material `json:"material,omitempty"`
}

// CreateObjectRequest creates a security object.
type CreateObjectRequest struct {
	Wallet     string            `json:"wallet"`
	Name       string            `json:"name"`
	Type       string            `json:"type"`                // symmetric_key, secret_data or key_pair
	Algorithm  string            `json:"algorithm,omitempty"` // AES; RSA or EC
	Length     int               `json:"length,omitempty"`    // bits; 0 = the algorithm's default
	Value      []byte            `json:"value,omitempty"`     // secret data (required) or an imported AES key
	Attributes map[string]string `json:"attributes,omitempty"`
	PreActive  bool              `json:"pre_active,omitempty"`
}

// Query selects objects. Empty fields match everything.
type Query struct {
	Wallet     string
	Name       string // exact, or a prefix ending in "*"
	Type       string
	State      string
	Attributes map[string]string // all must match
	Limit      int               // page size; 0 = server default
	PageToken  string
}

// Page is one page of a list; NextPageToken is empty on the last page.
type Page[T any] struct {
	Items         []T    `json:"items"`
	NextPageToken string `json:"next_page_token,omitempty"`
}

// VersionList lists an object's versions.
type VersionList struct {
	ID       string          `json:"id"`
	Latest   uint64          `json:"latest_version"`
	Versions []ObjectVersion `json:"versions"`
}

// CreateObject creates a symmetric key, secret data or key pair.
func (c *Client) CreateObject(ctx context.Context, req CreateObjectRequest) (Object, error) {
	var o Object
	return o, c.Do(ctx, "POST", "/api/v1/objects", req, &o)
}

// DescribeObject returns an object's metadata by id.
func (c *Client) DescribeObject(ctx context.Context, id string) (Object, error) {
	var o Object
	return o, c.Do(ctx, "GET", "/api/v1/objects/"+url.PathEscape(id), nil, &o)
}

// GetObject returns an object by id with the material of version (0 = latest).
func (c *Client) GetObject(ctx context.Context, id string, version uint64) (ObjectWithMaterial, error) {
	var r ObjectWithMaterial
	return r, c.Do(ctx, "GET", "/api/v1/objects/"+url.PathEscape(id)+"/material"+versionQuery(version), nil, &r)
}

// GetObjectByName returns the object wallet/name with the material of
// version (0 = latest).
func (c *Client) GetObjectByName(ctx context.Context, wallet, name string, version uint64) (ObjectWithMaterial, error) {
	var r ObjectWithMaterial
	return r, c.Do(ctx, "GET", objectNamePath(wallet, name)+versionQuery(version), nil, &r)
}

// DescribeObjectByName returns the metadata of wallet/name (no material).
func (c *Client) DescribeObjectByName(ctx context.Context, wallet, name string) (Object, error) {
	var r ObjectWithMaterial
	err := c.Do(ctx, "GET", objectNamePath(wallet, name)+"?metadata_only=true", nil, &r)
	return r.Object, err
}

// ListObjects returns one page of objects matching q.
func (c *Client) ListObjects(ctx context.Context, q Query) (Page[Object], error) {
	v := url.Values{}
	for k, s := range map[string]string{"wallet": q.Wallet, "name": q.Name, "type": q.Type, "state": q.State, "page_token": q.PageToken} {
		if s != "" {
			v.Set(k, s)
		}
	}
	for k, s := range q.Attributes {
		v.Add("attr", k+"="+s)
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	var p Page[Object]
	return p, c.Do(ctx, "GET", "/api/v1/objects"+encodeQuery(v), nil, &p)
}

// Objects iterates over every object matching q, following next_page_token
// (q.Limit is the page size). Iteration stops at the first error, which is
// yielded with a zero Object.
func (c *Client) Objects(ctx context.Context, q Query) iter.Seq2[Object, error] {
	return paginate(func(tok string) (Page[Object], error) {
		q.PageToken = tok
		return c.ListObjects(ctx, q)
	}, q.PageToken)
}

// ObjectVersions lists an object's versions.
func (c *Client) ObjectVersions(ctx context.Context, id string) (VersionList, error) {
	var r VersionList
	return r, c.Do(ctx, "GET", "/api/v1/objects/"+url.PathEscape(id)+"/versions", nil, &r)
}

// RotateObject adds a version: fresh material, or value (secret data:
// required; symmetric key: an imported key of the same length).
func (c *Client) RotateObject(ctx context.Context, id string, value []byte) (Object, error) {
	var o Object
	return o, c.Do(ctx, "POST", "/api/v1/objects/"+url.PathEscape(id)+"/rotate", struct {
		Value []byte `json:"value,omitempty"`
	}{value}, &o)
}

func (c *Client) transition(ctx context.Context, id, t, reason string) (Object, error) {
	var o Object
	return o, c.Do(ctx, "POST", "/api/v1/objects/"+url.PathEscape(id)+"/"+t, struct {
		Reason string `json:"reason,omitempty"`
	}{reason}, &o)
}

// ActivateObject moves a pre-active object to active.
func (c *Client) ActivateObject(ctx context.Context, id, reason string) (Object, error) {
	return c.transition(ctx, id, "activate", reason)
}

// DeactivateObject takes an object out of use (it stays readable).
func (c *Client) DeactivateObject(ctx context.Context, id, reason string) (Object, error) {
	return c.transition(ctx, id, "deactivate", reason)
}

// RevokeObject marks an object compromised.
func (c *Client) RevokeObject(ctx context.Context, id, reason string) (Object, error) {
	return c.transition(ctx, id, "revoke", reason)
}

// DestroyObject erases the material of a deactivated or compromised object;
// the metadata stays.
func (c *Client) DestroyObject(ctx context.Context, id, reason string) (Object, error) {
	return c.transition(ctx, id, "destroy", reason)
}

// RestoreObjectRequest asks for an object as it was at a past time (or
// raft index), read from the backups on a destination.
type RestoreObjectRequest struct {
	Destination string    `json:"destination"`
	Time        time.Time `json:"time,omitzero"`
	Index       uint64    `json:"index,omitempty"`
	As          string    `json:"as,omitempty"` // a new object with this name; empty: in place
}

// RestoreObject puts an object's versions back from a backup: in place (the
// versions it lost since, e.g. after a mistaken destroy) or as a new object.
func (c *Client) RestoreObject(ctx context.Context, id string, req RestoreObjectRequest) (Object, error) {
	var o Object
	return o, c.Do(ctx, "POST", "/api/v1/objects/"+url.PathEscape(id)+"/restore", req, &o)
}

// RestorePreview is what an object restore would do: the object as it
// would leave it and the versions whose material comes back.
type RestorePreview struct {
	Object   Object   `json:"object"`
	Restored []uint64 `json:"restored_versions"`
	From     string   `json:"from"`
}

// PreviewObjectRestore is RestoreObject without the write: what the same
// request would bring back. Nothing changes.
func (c *Client) PreviewObjectRestore(ctx context.Context, id string, req RestoreObjectRequest) (RestorePreview, error) {
	var p RestorePreview
	return p, c.Do(ctx, "POST", "/api/v1/objects/"+url.PathEscape(id)+"/restore/preview", req, &p)
}

// SetAttributes sets and deletes custom attributes.
func (c *Client) SetAttributes(ctx context.Context, id string, set map[string]string, del []string) (Object, error) {
	var o Object
	return o, c.Do(ctx, "PATCH", "/api/v1/objects/"+url.PathEscape(id)+"/attributes", struct {
		Set    map[string]string `json:"set,omitempty"`
		Delete []string          `json:"delete,omitempty"`
	}{set, del}, &o)
}

// Secret is one version of a secret-data object.
type Secret struct {
	ID      string    `json:"id"`
	Wallet  string    `json:"wallet"`
	Name    string    `json:"name"`
	Version uint64    `json:"version"`
	Latest  uint64    `json:"latest_version"`
	Created time.Time `json:"created"` // when this version was written
	Value   []byte    `json:"value"`
}

// PutSecret writes value as the next version of the secret wallet/name,
// creating it if needed. The returned object's Latest is the new version.
func (c *Client) PutSecret(ctx context.Context, wallet, name string, value []byte) (Object, error) {
	var o Object
	return o, c.Do(ctx, "PUT", "/api/v1/wallets/"+url.PathEscape(wallet)+"/secrets/"+escapePath(name), map[string][]byte{"value": value}, &o)
}

// GetSecret reads a version (0 = latest) of the secret wallet/name.
func (c *Client) GetSecret(ctx context.Context, wallet, name string, version uint64) (Secret, error) {
	r, err := c.GetObjectByName(ctx, wallet, name, version)
	if err != nil {
		return Secret{}, err
	}
	if r.Material == nil {
		return Secret{}, errors.New("server returned no material")
	}
	s := Secret{ID: r.Object.ID, Wallet: r.Object.Wallet, Name: r.Object.Name, Version: r.Material.Version, Latest: r.Object.Latest, Value: r.Material.Value}
	for _, v := range r.Object.Versions {
		if v.Version == s.Version {
			s.Created = v.Created
		}
	}
	return s, nil
}

func objectNamePath(wallet, name string) string {
	return "/api/v1/wallets/" + url.PathEscape(wallet) + "/objects/" + escapePath(name)
}

func versionQuery(v uint64) string {
	if v == 0 {
		return ""
	}
	return "?version=" + strconv.FormatUint(v, 10)
}

func encodeQuery(v url.Values) string {
	if len(v) == 0 {
		return ""
	}
	return "?" + v.Encode()
}

// escapePath escapes an object name for a {name...} route: slashes stay.
func escapePath(name string) string {
	u := url.URL{Path: name}
	return u.EscapedPath()
}

// paginate walks pages from start until a page has no next token.
func paginate[T any](list func(tok string) (Page[T], error), start string) iter.Seq2[T, error] {
	return func(yield func(T, error) bool) {
		tok := start
		for {
			p, err := list(tok)
			if err != nil {
				var zero T
				yield(zero, err)
				return
			}
			for _, it := range p.Items {
				if !yield(it, nil) {
					return
				}
			}
			if p.NextPageToken == "" || p.NextPageToken == tok {
				return
			}
			tok = p.NextPageToken
		}
	}
}
