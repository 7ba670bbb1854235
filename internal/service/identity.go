package service

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coffer-kms/coffer/internal/state"
)

// Role is an administrator's role, as in Oracle Key Vault.
type Role string

// Roles. Values are stored: never rename.
const (
	// RoleSystemAdmin: keystore, backups, cluster, settings, users.
	RoleSystemAdmin Role = "system_admin"
	// RoleKeyAdmin: wallets, endpoints, objects in every wallet.
	RoleKeyAdmin Role = "key_admin"
	// RoleAuditManager: read and verify the audit log.
	RoleAuditManager Role = "audit_manager"
)

// AllRoles lists the roles.
var AllRoles = []Role{RoleSystemAdmin, RoleKeyAdmin, RoleAuditManager}

// Permission is an endpoint's right on a wallet.
type Permission string

// Permissions, weakest first; each includes the ones before it.
const (
	// PermRead: get objects and their metadata, list, locate.
	PermRead Permission = "read"
	// PermReadModify: also create, rotate, activate, set attributes.
	PermReadModify Permission = "read_modify"
	// PermManage: also deactivate, revoke, destroy, and grant others access to the wallet.
	PermManage Permission = "manage"
)

// AllPermissions lists the permissions, weakest first.
var AllPermissions = []Permission{PermRead, PermReadModify, PermManage}

func (p Permission) rank() int { return slices.Index(AllPermissions, p) }

// Includes reports whether p allows everything q does.
func (p Permission) Includes(q Permission) bool { return p.rank() >= 0 && p.rank() >= q.rank() }

// Identity kinds.
const (
	KindRoot     = "root"
	KindUser     = "user"
	KindEndpoint = "endpoint"
	// KindNode is another cluster node (its node certificate).
	KindNode = "node"
)

// Identity is who is calling: an administrator (root token or user session)
// or an enrolled endpoint.
type Identity struct {
	Kind  string
	Name  string
	Roles []Role
	Local bool // came through the local control socket
	// tokenHash identifies the session for logout (never the token itself).
	tokenHash string
	Expires   *time.Time
}

// LocalRoot is the identity of a request on the local control socket, whose
// access is guarded by the data dir's file permissions.
func LocalRoot() Identity {
	return Identity{Kind: KindRoot, Name: "local", Roles: AllRoles, Local: true}
}

// Has reports whether the identity holds role r.
func (id Identity) Has(r Role) bool { return slices.Contains(id.Roles, r) }

// Actor names the identity for the audit log: "root", "local", "user:alice", "endpoint:db1".
func (id Identity) Actor() string {
	switch {
	case id.Local:
		return "local"
	case id.Kind == KindRoot:
		return "root"
	case id.Kind == "":
		return "anonymous"
	}
	return id.Kind + ":" + id.Name
}

// RoleNames returns the roles as strings.
func (id Identity) RoleNames() []string {
	out := make([]string, len(id.Roles))
	for i, r := range id.Roles {
		out[i] = string(r)
	}
	return out
}

// Call carries one request's caller and what it touched through the service,
// so that every transport audits the same way.
type Call struct {
	Identity  Identity
	Source    string // remote address
	Transport string // rest, vault, kmip, socket
	Start     time.Time

	mu      sync.Mutex
	objects []string
	objBuf  [2]string // objects' first array: most requests touch one or two
	// quiet: a repeated poll whose success is not audited (pollAudit).
	quiet bool
}

type callKey struct{}

// WithCall attaches a call to ctx. Service methods that need a caller fail
// with ErrUnauthenticated when there is none.
func WithCall(ctx context.Context, c *Call) context.Context {
	return context.WithValue(ctx, callKey{}, c)
}

// CallFrom returns the call attached to ctx, or nil.
func CallFrom(ctx context.Context) *Call { c, _ := ctx.Value(callKey{}).(*Call); return c }

type auditMarkKey struct{}

// WithAuditMark returns a context whose requests can be marked as accounted
// for in the audit log (MarkAudited), and the mark: the outermost HTTP
// handler audits any request that no transport marked.
func WithAuditMark(ctx context.Context) (context.Context, *atomic.Bool) {
	m := &markCtx{Context: ctx}
	return m, &m.seen
}

// markCtx is ctx carrying an audit mark: one allocation where
// context.WithValue and the mark would take two (every request has one).
type markCtx struct {
	context.Context
	seen atomic.Bool
	call atomic.Pointer[Call] // AttachCall's
}

// markCtxKey finds the markCtx itself (AttachCall).
type markCtxKey struct{}

func (c *markCtx) Value(key any) any {
	switch key {
	case auditMarkKey{}:
		return &c.seen
	case markCtxKey{}:
		return c
	case callKey{}:
		if call := c.call.Load(); call != nil {
			return call
		}
	}
	return c.Context.Value(key)
}

// AttachCall is WithCall without a new context, for a transport served
// under WithAuditMark: when ctx carries an audit mark and no call yet, c
// becomes the call of ctx (and of every context made from it) and
// AttachCall reports true; otherwise nothing changes and the transport
// uses WithCall. Attaching happens before the request's work starts, in
// its own goroutine.
func AttachCall(ctx context.Context, c *Call) bool {
	m, ok := ctx.Value(markCtxKey{}).(*markCtx)
	if !ok || ctx.Value(callKey{}) != nil {
		return false
	}
	return m.call.CompareAndSwap(nil, c)
}

// MarkAudited notes, on a context from WithAuditMark, that the request is
// audited by its transport (or deliberately not: health, metrics).
func MarkAudited(ctx context.Context) {
	if m, ok := ctx.Value(auditMarkKey{}).(*atomic.Bool); ok {
		m.Store(true)
	}
}

// WithIdentity is WithCall for a caller without transport details (tests, in-process use).
func WithIdentity(ctx context.Context, id Identity) context.Context {
	return WithCall(ctx, &Call{Identity: id, Transport: "internal", Start: time.Now()})
}

// Note records object ids the call touched (for the audit log).
func (c *Call) Note(ids ...string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	if c.objects == nil {
		c.objects = c.objBuf[:0]
	}
	c.objects = append(c.objects, ids...)
	c.mu.Unlock()
}

// Objects returns the ids noted so far.
func (c *Call) Objects() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.objects)
}

func note(ctx context.Context, ids ...string) { CallFrom(ctx).Note(ids...) }

// caller returns the authenticated identity of ctx.
func caller(ctx context.Context) (Identity, error) {
	c := CallFrom(ctx)
	if c == nil || c.Identity.Kind == "" {
		return Identity{}, ErrUnauthenticated
	}
	return c.Identity, nil
}

// requireRole checks that the caller is an administrator holding role r.
func requireRole(ctx context.Context, r Role, what string) (Identity, error) {
	id, err := caller(ctx)
	if err != nil {
		return id, err
	}
	if !id.Has(r) {
		return id, fmt.Errorf("%w: %s needs the %s role (caller %s)", ErrForbidden, what, r, id.Actor())
	}
	return id, nil
}

// requireAdmin checks that the caller is an administrator with any role.
func requireAdmin(ctx context.Context, what string) (Identity, error) {
	id, err := caller(ctx)
	if err != nil {
		return id, err
	}
	if id.Kind == KindEndpoint || len(id.Roles) == 0 {
		return id, fmt.Errorf("%w: %s is for administrators (caller %s)", ErrForbidden, what, id.Actor())
	}
	return id, nil
}

// TokenPrefix marks Coffer tokens so they are easy to spot in leaked text.
const TokenPrefix = "cof_"

func hashToken(tok string) string {
	h := sha256.Sum256([]byte(tok))
	var x [2 * sha256.Size]byte
	hex.Encode(x[:], h[:])
	return string(x[:])
}

func newToken() (tok, hash string) {
	b := make([]byte, 32)
	randRead(b)
	tok = TokenPrefix + base64.RawURLEncoding.EncodeToString(b)
	return tok, hashToken(tok)
}

func (s *Access) createTokenLocked(ctx context.Context, name, policy string) (string, error) {
	tok, h := newToken()
	err := s.applyLocked(ctx, state.TypeTokenCreate, state.Token{Hash: h, Kind: state.TokenRoot, Policy: policy, Name: name, Created: s.now().UTC()})
	if err != nil {
		return "", fmt.Errorf("store %s token: %w", name, err)
	}
	return tok, nil
}

// Authenticate resolves a bearer token. It works while sealed (token hashes
// are not secret), so an operator can check status, seal and stop.
func (s *Access) Authenticate(tok string) (Identity, error) {
	if tok == "" {
		return Identity{}, ErrUnauthenticated
	}
	h := hashToken(tok)
	r, err := s.readToken(h)
	t := r.t
	if err != nil || subtle.ConstantTimeCompare([]byte(t.Hash), []byte(h)) != 1 {
		return Identity{}, ErrUnauthenticated
	}
	if t.Expires != nil && !s.now().Before(*t.Expires) {
		if t.Kind == state.TokenSession {
			return Identity{}, fmt.Errorf("%w: session expired at %s; log in again", ErrUnauthenticated, t.Expires.Format(time.RFC3339))
		}
		return Identity{}, fmt.Errorf("%w: token expired at %s", ErrUnauthenticated, t.Expires.Format(time.RFC3339))
	}
	switch t.Kind {
	case "", state.TokenRoot:
		return Identity{Kind: KindRoot, Name: t.Name, Roles: AllRoles, tokenHash: h}, nil
	case state.TokenSession:
		u, err := s.st.User(t.Subject)
		if err != nil || u.Disabled || u.CredGen != t.CredGen {
			return Identity{}, ErrUnauthenticated
		}
		return Identity{Kind: KindUser, Name: u.Name, Roles: rolesOf(u.Roles), tokenHash: h, Expires: t.Expires}, nil
	case state.TokenEndpoint:
		if !r.haveEndpoint || r.endpointState != "active" {
			return Identity{}, ErrUnauthenticated
		}
		return Identity{Kind: KindEndpoint, Name: r.endpointName, tokenHash: h, Expires: t.Expires}, nil
	}
	return Identity{}, ErrUnauthenticated
}

// AuthenticateCert resolves a client certificate (its DER bytes, already
// verified against Coffer's CA by the TLS layer) to an enrolled endpoint.
func (s *Access) AuthenticateCert(der []byte) (Identity, error) {
	fp := sha256.Sum256(der)
	e, err := s.st.EndpointByCert(hex.EncodeToString(fp[:]))
	if err != nil || e.State != "active" {
		return Identity{}, fmt.Errorf("%w: client certificate is not enrolled or its endpoint is revoked", ErrUnauthenticated)
	}
	return Identity{Kind: KindEndpoint, Name: e.Name}, nil
}

// CertAuth is what AuthenticateCertWith remembers for one connection: the
// identity its client certificate resolved to and the state it was read
// from. The zero value remembers nothing.
type CertAuth struct {
	st  *state.Store
	at  uint64
	der []byte
	id  Identity
}

// AuthenticateCertWith is AuthenticateCert answered from c when the state
// has applied no command since c was filled with the same certificate: an
// endpoint, its certificates and its state change only by applied
// commands, so a revocation still refuses the next request. A successful
// lookup is remembered in c (nil: none).
func (s *Access) AuthenticateCertWith(c *CertAuth, der []byte) (Identity, error) {
	at := s.st.AppliedIndex()
	if c != nil && c.st == s.st && c.at == at && c.der != nil && bytes.Equal(c.der, der) {
		return c.id, nil
	}
	id, err := s.AuthenticateCert(der)
	if err == nil && c != nil {
		// at was read before the lookup: a command applied in between
		// makes the next call look again.
		*c = CertAuth{st: s.st, at: at, der: der, id: id}
	}
	return id, err
}

func rolesOf(names []string) []Role {
	out := make([]Role, 0, len(names))
	for _, n := range names {
		out = append(out, Role(n))
	}
	return out
}

// Presented is what a request presents to be identified, as a transport
// extracted it: a token, a verified client certificate, and, when another
// cluster node is the peer, that node and what it vouches for.
type Presented struct {
	Token      string
	ClientCert []byte // DER of a verified client certificate (or one a node forwarded)
	// Peer is a node certificate's id when another node is the TLS peer,
	// and PeerKey its key's fingerprint (tlsutil.KeyFingerprint).
	Peer    string
	PeerKey string
	// Node: that node calls on its own behalf (no client behind it).
	Node bool
	// Local: that node received the request on its control socket.
	Local bool
	// Hint names, for the error, how this transport takes a token.
	Hint string
}

// Identify resolves a caller for every transport alike: a node peer must be
// a member; a node vouches for its control socket (root) or for itself; a
// token and/or an enrolled client certificate otherwise, and when both are
// sent they must name the same endpoint (a certificate never lends its
// trust to another identity's token).
func (s *Access) Identify(p Presented) (Identity, error) {
	if p.Peer != "" && !s.svc.Cluster.IsMember(p.Peer, p.PeerKey) {
		return Identity{}, fmt.Errorf("%w: node %s is not a member of this cluster, or its certificate's key is not the one recorded for it", ErrUnauthenticated, p.Peer)
	}
	if p.Local && p.Peer != "" {
		return LocalRoot(), nil
	}
	if p.Node && p.Peer != "" && p.Token == "" {
		return Identity{Kind: KindNode, Name: p.Peer}, nil
	}
	var certID *Identity
	if p.ClientCert != nil {
		id, err := s.AuthenticateCert(p.ClientCert)
		if err != nil {
			return Identity{}, err
		}
		certID = &id
	}
	if p.Token != "" {
		id, err := s.Authenticate(p.Token)
		if err != nil {
			return id, err
		}
		if certID != nil && (id.Kind != KindEndpoint || id.Name != certID.Name) {
			return Identity{}, fmt.Errorf("%w: the client certificate belongs to endpoint %q but the token to %s", ErrUnauthenticated, certID.Name, id.Actor())
		}
		return id, nil
	}
	if certID != nil {
		return *certID, nil
	}
	return Identity{}, fmt.Errorf("%w: send %s or an enrolled client certificate", ErrUnauthenticated, p.Hint)
}
