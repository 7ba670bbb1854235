package service

import (
	"context"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/argon2"

	"github.com/coffer-kms/coffer/internal/state"
)

// DefaultWallet is created at initialisation.
const DefaultWallet = "default"

// Wallet is a named group of objects with the endpoints' permissions on it.
type Wallet struct {
	Name        string                `json:"name"`
	Description string                `json:"description,omitempty"`
	CreatedBy   string                `json:"created_by,omitempty"`
	Created     time.Time             `json:"created"`
	Grants      map[string]Permission `json:"grants,omitempty" doc:"endpoint name to permission"`
}

func walletOf(w state.Wallet) Wallet {
	out := Wallet{Name: w.Name, Description: w.Description, CreatedBy: w.CreatedBy, Created: w.Created}
	if len(w.Grants) > 0 {
		out.Grants = map[string]Permission{}
		for k, v := range w.Grants {
			out.Grants[k] = Permission(v)
		}
	}
	return out
}

// CreateWallet adds a wallet (key administrators).
func (s *Access) CreateWallet(ctx context.Context, name, description string) (Wallet, error) {
	note(ctx, "wallet:"+name)
	id, err := requireRole(ctx, RoleKeyAdmin, "creating a wallet")
	if err != nil {
		return Wallet{}, err
	}
	if err := ValidLabel("wallet", name); err != nil {
		return Wallet{}, err
	}
	if err := validText("description", description); err != nil {
		return Wallet{}, err
	}
	if _, err := s.st.Wallet(name); err == nil {
		return Wallet{}, fmt.Errorf("%w: wallet %q already exists", ErrConflict, name)
	}
	res, err := s.applyOpen(ctx, state.TypeWalletCreate, state.Wallet{Name: name, Description: description, CreatedBy: id.Actor()})
	if err != nil {
		return Wallet{}, fmt.Errorf("create wallet %q: %w", name, err)
	}
	w, ok := res.(state.Wallet)
	if !ok {
		return Wallet{}, fmt.Errorf("create wallet %q: the state machine did not confirm the write", name)
	}
	return walletOf(w), nil
}

// DeleteWallet removes an empty wallet (key administrators).
func (s *Access) DeleteWallet(ctx context.Context, name string) error {
	note(ctx, "wallet:"+name)
	if _, err := requireRole(ctx, RoleKeyAdmin, "deleting a wallet"); err != nil {
		return err
	}
	if _, err := s.applyOpen(ctx, state.TypeWalletDelete, state.WalletDelete{Name: name}); err != nil {
		return fmt.Errorf("delete wallet %q: %w", name, err)
	}
	return nil
}

// GetWallet returns a wallet: key administrators see any, endpoints those they may read.
func (s *Access) GetWallet(ctx context.Context, name string) (Wallet, error) {
	note(ctx, "wallet:"+name)
	if _, err := s.authorizeWallet(ctx, name, PermRead, "reading a wallet"); err != nil {
		return Wallet{}, err
	}
	w, err := s.st.Wallet(name)
	if err != nil {
		return Wallet{}, mapStateErr(err)
	}
	return s.viewWallet(ctx, w), nil
}

// viewWallet hides other endpoints' grants from an endpoint without manage.
func (s *Access) viewWallet(ctx context.Context, w state.Wallet) Wallet {
	out := walletOf(w)
	if id, _ := caller(ctx); id.Kind == KindEndpoint && !Permission(w.Grants[id.Name]).Includes(PermManage) {
		out.Grants = map[string]Permission{id.Name: Permission(w.Grants[id.Name])}
	}
	return out
}

// ListWallets lists wallets: all for key administrators, granted ones for endpoints.
func (s *Access) ListWallets(ctx context.Context, limit int, token string) (Page[Wallet], error) {
	id, err := caller(ctx)
	if err != nil {
		return Page[Wallet]{}, err
	}
	if id.Kind != KindEndpoint && !id.Has(RoleKeyAdmin) {
		return Page[Wallet]{}, fmt.Errorf("%w: listing wallets needs the %s role (caller %s)", ErrForbidden, RoleKeyAdmin, id.Actor())
	}
	ws, err := s.st.Wallets()
	if err != nil {
		return Page[Wallet]{}, err
	}
	var out []Wallet
	for _, w := range ws {
		if id.Kind == KindEndpoint && !Permission(w.Grants[id.Name]).Includes(PermRead) {
			continue
		}
		out = append(out, s.viewWallet(ctx, w))
	}
	return paginate(out, func(w Wallet) string { return w.Name }, limit, token)
}

// SetGrant gives endpoint a permission on wallet, or takes it away (perm "").
// Key administrators may; so may an endpoint holding manage on the wallet.
func (s *Access) SetGrant(ctx context.Context, wallet, endpoint string, perm Permission) (Wallet, error) {
	note(ctx, "wallet:"+wallet, "endpoint:"+endpoint)
	if perm != "" && perm.rank() < 0 {
		return Wallet{}, fmt.Errorf("%w: permission %q: use read, read_modify or manage", ErrInvalid, perm)
	}
	if _, err := s.authorizeWallet(ctx, wallet, PermManage, "granting access to a wallet"); err != nil {
		return Wallet{}, err
	}
	if _, err := s.st.Wallet(wallet); err != nil {
		return Wallet{}, mapStateErr(err)
	}
	if e, err := s.st.Endpoint(endpoint); err != nil {
		return Wallet{}, mapStateErr(err)
	} else if perm != "" && e.State != "active" {
		return Wallet{}, fmt.Errorf("%w: endpoint %q is %s", ErrConflict, endpoint, e.State)
	}
	res, err := s.applyOpen(ctx, state.TypeGrant, state.Grant{Wallet: wallet, Endpoint: endpoint, Permission: string(perm)})
	if err != nil {
		return Wallet{}, fmt.Errorf("grant on wallet %q to endpoint %q: %w", wallet, endpoint, err)
	}
	w, ok := res.(state.Wallet)
	if !ok {
		return Wallet{}, errors.New("grant: the state machine did not confirm the write")
	}
	return walletOf(w), nil
}

// Endpoint is an enrolled client.
type Endpoint struct {
	Name            string     `json:"name"`
	Description     string     `json:"description,omitempty"`
	State           string     `json:"state" doc:"active or revoked"`
	CertFingerprint string     `json:"cert_fingerprint,omitempty" doc:"hex SHA-256 of the client certificate"`
	CertSerial      string     `json:"cert_serial,omitempty"`
	CertNotAfter    *time.Time `json:"cert_not_after,omitempty"`
	CreatedBy       string     `json:"created_by,omitempty"`
	Created         time.Time  `json:"created"`
	Revoked         *time.Time `json:"revoked,omitempty"`
}

func endpointOf(e state.Endpoint) Endpoint {
	out := Endpoint{Name: e.Name, Description: e.Description, State: e.State, CertFingerprint: e.CertFingerprint,
		CertSerial: e.CertSerial, CreatedBy: e.CreatedBy, Created: e.Created, Revoked: e.Revoked}
	if !e.CertNotAfter.IsZero() {
		t := e.CertNotAfter
		out.CertNotAfter = &t
	}
	return out
}

// CertIssuer signs endpoint client certificates with Coffer's CA.
type CertIssuer interface {
	// IssueClientCert signs csr (DER) for commonName and returns the
	// certificate (DER) and the CA bundle (PEM) clients should trust.
	IssueClientCert(csr *x509.CertificateRequest, commonName string) (certDER []byte, caPEM []byte, err error)
}

// Enrollment is what enrolling an endpoint returns, once.
type Enrollment struct {
	Endpoint    Endpoint `json:"endpoint"`
	Token       string   `json:"token"`
	Certificate string   `json:"certificate,omitempty" doc:"PEM client certificate signed by Coffer's CA"`
	CA          string   `json:"ca,omitempty" doc:"PEM CA bundle to trust"`
}

// EnrollEndpoint registers a client and issues its credentials: a bearer
// token and, when csr (PEM or DER) is given, a client certificate.
func (s *Access) EnrollEndpoint(ctx context.Context, name, description string, csr []byte) (Enrollment, error) {
	note(ctx, "endpoint:"+name)
	id, err := requireRole(ctx, RoleKeyAdmin, "enrolling an endpoint")
	if err != nil {
		return Enrollment{}, err
	}
	if err := ValidLabel("endpoint", name); err != nil {
		return Enrollment{}, err
	}
	if err := validText("description", description); err != nil {
		return Enrollment{}, err
	}
	if old, err := s.st.Endpoint(name); err == nil && old.State == "active" {
		return Enrollment{}, fmt.Errorf("%w: endpoint %q is already enrolled (revoke it first to re-enrol)", ErrConflict, name)
	}
	e := state.Endpoint{Name: name, Description: description, CreatedBy: id.Actor()}
	var out Enrollment
	if len(csr) > 0 {
		c, err := s.signEndpointCSR(name, csr)
		if err != nil {
			return Enrollment{}, err
		}
		e.CertFingerprint, e.CertSerial, e.CertNotAfter = c.fingerprint, c.serial, c.notAfter
		out.Certificate = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.der}))
		out.CA = string(c.ca)
	}
	tok, h := newToken()
	res, err := s.applyOpen(ctx, state.TypeEndpointEnroll, state.EndpointEnroll{Endpoint: e, TokenHash: h})
	if err != nil {
		return Enrollment{}, fmt.Errorf("enrol endpoint %q: %w", name, err)
	}
	got, ok := res.(state.Endpoint)
	if !ok {
		return Enrollment{}, fmt.Errorf("enrol endpoint %q: the state machine did not confirm the write", name)
	}
	out.Endpoint, out.Token = endpointOf(got), tok
	s.log.Info("endpoint enrolled", "endpoint", name, "by", id.Actor(), "certificate", e.CertFingerprint != "")
	return out, nil
}

// GetEndpoint returns an endpoint (key administrators, or the endpoint itself).
func (s *Access) GetEndpoint(ctx context.Context, name string) (Endpoint, error) {
	note(ctx, "endpoint:"+name)
	id, err := caller(ctx)
	if err != nil {
		return Endpoint{}, err
	}
	if !(id.Kind == KindEndpoint && id.Name == name) && !id.Has(RoleKeyAdmin) {
		return Endpoint{}, fmt.Errorf("%w: reading an endpoint needs the %s role (caller %s)", ErrForbidden, RoleKeyAdmin, id.Actor())
	}
	e, err := s.st.Endpoint(name)
	if err != nil {
		return Endpoint{}, mapStateErr(err)
	}
	return endpointOf(e), nil
}

// ListEndpoints lists endpoints (key administrators).
func (s *Access) ListEndpoints(ctx context.Context, limit int, token string) (Page[Endpoint], error) {
	if _, err := requireRole(ctx, RoleKeyAdmin, "listing endpoints"); err != nil {
		return Page[Endpoint]{}, err
	}
	es, err := s.st.Endpoints()
	if err != nil {
		return Page[Endpoint]{}, err
	}
	out := make([]Endpoint, len(es))
	for i, e := range es {
		out[i] = endpointOf(e)
	}
	return paginate(out, func(e Endpoint) string { return e.Name }, limit, token)
}

// RevokeEndpoint disables an endpoint's token and certificate and drops its grants.
func (s *Access) RevokeEndpoint(ctx context.Context, name string) (Endpoint, error) {
	note(ctx, "endpoint:"+name)
	id, err := requireRole(ctx, RoleKeyAdmin, "revoking an endpoint")
	if err != nil {
		return Endpoint{}, err
	}
	res, err := s.applyOpen(ctx, state.TypeEndpointRevoke, state.EndpointRevoke{Name: name})
	if err != nil {
		return Endpoint{}, fmt.Errorf("revoke endpoint %q: %w", name, err)
	}
	e, ok := res.(state.Endpoint)
	if !ok {
		return Endpoint{}, fmt.Errorf("revoke endpoint %q: the state machine did not confirm the write", name)
	}
	s.log.Warn("endpoint revoked", "endpoint", name, "by", id.Actor())
	return endpointOf(e), nil
}

// User is an administrator as callers see it (never the password hash).
type User struct {
	Name     string    `json:"name"`
	Roles    []Role    `json:"roles"`
	Disabled bool      `json:"disabled,omitempty"`
	Created  time.Time `json:"created"`
	Updated  time.Time `json:"updated"`
}

func userOf(u state.User) User {
	return User{Name: u.Name, Roles: rolesOf(u.Roles), Disabled: u.Disabled, Created: u.Created, Updated: u.Updated}
}

// Password rules.
const (
	MinPasswordBytes = 10
	MaxPasswordBytes = 1024
)

func validPassword(p string) error {
	if len(p) < MinPasswordBytes || len(p) > MaxPasswordBytes {
		return fmt.Errorf("%w: password must be %d to %d bytes", ErrInvalid, MinPasswordBytes, MaxPasswordBytes)
	}
	return nil
}

func validRoles(roles []Role) ([]string, error) {
	if len(roles) == 0 {
		return nil, fmt.Errorf("%w: a user needs at least one role: %v", ErrInvalid, AllRoles)
	}
	var out []string
	for _, r := range roles {
		if !slices.Contains(AllRoles, r) {
			return nil, fmt.Errorf("%w: role %q: use %v", ErrInvalid, r, AllRoles)
		}
		if !slices.Contains(out, string(r)) {
			out = append(out, string(r))
		}
	}
	slices.Sort(out)
	return out, nil
}

// PasswordKDF sets the Argon2id cost of password hashes.
type PasswordKDF struct {
	Time      uint32
	MemoryKiB uint32
	Threads   uint8
}

// DefaultPasswordKDF: Argon2id t=2, 64 MiB, 2 lanes (about 100 ms here).
var DefaultPasswordKDF = PasswordKDF{Time: 2, MemoryKiB: 64 * 1024, Threads: 2}

func (s *Access) hashPassword(p string) string {
	k := s.cfg.PasswordKDF
	salt := make([]byte, 16)
	randRead(salt)
	h := argon2.IDKey([]byte(p), salt, k.Time, k.MemoryKiB, k.Threads, 32)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, k.MemoryKiB, k.Time, k.Threads,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(h))
}

// checkPassword verifies p against a PHC-form Argon2id hash.
func checkPassword(p, phc string) bool {
	parts := strings.Split(phc, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return false
	}
	var m, t uint32
	var th uint8
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &th); err != nil || m > 4<<20 || t > 100 || th == 0 {
		return false
	}
	salt, err1 := base64.RawStdEncoding.DecodeString(parts[4])
	want, err2 := base64.RawStdEncoding.DecodeString(parts[5])
	if err1 != nil || err2 != nil || len(want) == 0 {
		return false
	}
	got := argon2.IDKey([]byte(p), salt, t, m, th, uint32(len(want))) // #nosec G115 -- a stored password hash is 32 bytes
	return subtle.ConstantTimeCompare(got, want) == 1
}

// CreateUser adds an administrator (system administrators).
func (s *Access) CreateUser(ctx context.Context, name, password string, roles []Role) (User, error) {
	note(ctx, "user:"+name)
	if _, err := requireRole(ctx, RoleSystemAdmin, "creating a user"); err != nil {
		return User{}, err
	}
	if err := ValidLabel("user", name); err != nil {
		return User{}, err
	}
	if err := validPassword(password); err != nil {
		return User{}, err
	}
	rs, err := validRoles(roles)
	if err != nil {
		return User{}, err
	}
	if _, err := s.st.User(name); err == nil {
		return User{}, fmt.Errorf("%w: user %q already exists", ErrConflict, name)
	}
	if _, err := s.applyOpen(ctx, state.TypeUserCreate, state.User{Name: name, PasswordHash: s.hashPassword(password), Roles: rs}); err != nil {
		return User{}, fmt.Errorf("create user %q: %w", name, err)
	}
	u, err := s.st.User(name)
	return userOf(u), mapStateErr(err)
}

// GetUser returns a user (system administrators, or the user itself).
func (s *Access) GetUser(ctx context.Context, name string) (User, error) {
	note(ctx, "user:"+name)
	id, err := caller(ctx)
	if err != nil {
		return User{}, err
	}
	if !(id.Kind == KindUser && id.Name == name) && !id.Has(RoleSystemAdmin) {
		return User{}, fmt.Errorf("%w: reading a user needs the %s role (caller %s)", ErrForbidden, RoleSystemAdmin, id.Actor())
	}
	u, err := s.st.User(name)
	if err != nil {
		return User{}, mapStateErr(err)
	}
	return userOf(u), nil
}

// ListUsers lists administrators (system administrators).
func (s *Access) ListUsers(ctx context.Context, limit int, token string) (Page[User], error) {
	if _, err := requireRole(ctx, RoleSystemAdmin, "listing users"); err != nil {
		return Page[User]{}, err
	}
	us, err := s.st.Users()
	if err != nil {
		return Page[User]{}, err
	}
	out := make([]User, len(us))
	for i, u := range us {
		out[i] = userOf(u)
	}
	return paginate(out, func(u User) string { return u.Name }, limit, token)
}

// UserChange lists the fields to change; nil means unchanged.
type UserChange struct {
	Password    *string `json:"password,omitempty"`
	OldPassword *string `json:"old_password,omitempty" doc:"required when users change their own password"`
	Roles       *[]Role `json:"roles,omitempty"`
	Disabled    *bool   `json:"disabled,omitempty"`
}

// UpdateUser changes a user. System administrators may change anything;
// users may change their own password, giving the old one.
func (s *Access) UpdateUser(ctx context.Context, name string, c UserChange) (User, error) {
	note(ctx, "user:"+name)
	id, err := caller(ctx)
	if err != nil {
		return User{}, err
	}
	self := id.Kind == KindUser && id.Name == name
	admin := id.Has(RoleSystemAdmin)
	if !admin && !(self && c.Password != nil && c.Roles == nil && c.Disabled == nil) {
		return User{}, fmt.Errorf("%w: changing a user needs the %s role; users may only change their own password (caller %s)", ErrForbidden, RoleSystemAdmin, id.Actor())
	}
	upd := state.UserUpdate{Name: name}
	if c.Password != nil {
		if err := validPassword(*c.Password); err != nil {
			return User{}, err
		}
		if self && !admin {
			u, err := s.st.User(name)
			if err != nil {
				return User{}, mapStateErr(err)
			}
			d, release, err := s.throttle.begin(ctx, "user:"+name)
			if err != nil {
				return User{}, fmt.Errorf("%w: %v", ErrThrottled, err)
			}
			defer release()
			if d > 0 {
				if err := s.cfg.Sleep(ctx, d); err != nil {
					return User{}, fmt.Errorf("%w: %v", ErrThrottled, err)
				}
			}
			ok := false
			if c.OldPassword != nil {
				if ok, err = s.checkPasswordBounded(ctx, *c.OldPassword, u.PasswordHash); err != nil {
					return User{}, err
				}
			}
			if !ok {
				return User{}, fmt.Errorf("%w: old_password is missing or wrong", ErrInvalid)
			}
			s.throttle.succeed("user:" + name)
		}
		h := s.hashPassword(*c.Password)
		upd.PasswordHash = &h
	}
	if c.Roles != nil {
		rs, err := validRoles(*c.Roles)
		if err != nil {
			return User{}, err
		}
		upd.Roles = &rs
	}
	upd.Disabled = c.Disabled
	if _, err := s.applyOpen(ctx, state.TypeUserUpdate, upd); err != nil {
		return User{}, fmt.Errorf("update user %q: %w", name, err)
	}
	u, err := s.st.User(name)
	return userOf(u), mapStateErr(err)
}

// DeleteUser removes a user and ends its sessions (system administrators).
func (s *Access) DeleteUser(ctx context.Context, name string) error {
	note(ctx, "user:"+name)
	if _, err := requireRole(ctx, RoleSystemAdmin, "deleting a user"); err != nil {
		return err
	}
	if _, err := s.applyOpen(ctx, state.TypeUserDelete, state.UserDelete{Name: name}); err != nil {
		return fmt.Errorf("delete user %q: %w", name, err)
	}
	return nil
}

// Session is the result of a login.
type Session struct {
	Token   string    `json:"token"`
	User    string    `json:"user"`
	Roles   []Role    `json:"roles"`
	Expires time.Time `json:"expires"`
}

// throttle slows down repeated failed logins, per user name and per source
// address: after three failures each attempt waits, doubling from 250 ms up
// to 8 s; a success resets the user's count (the source's count decays
// after 15 idle minutes). Attempts on one key are serialised — one in
// flight per user name and per source — and an attempt is counted as a
// failure before its password is checked, so parallel guesses cannot share
// one delay.
type throttle struct {
	mu    sync.Mutex
	fails map[string]*failCount
	swept time.Time
}

type failCount struct {
	n      int
	last   time.Time
	inUse  int           // attempts holding or waiting for the key
	turnCh chan struct{} // one token: the key's turn
}

const (
	throttleFree    = 3
	throttleBase    = 250 * time.Millisecond
	throttleMax     = 8 * time.Second
	throttleReset   = 15 * time.Minute
	throttleMaxKeys = 100000
)

func (t *throttle) entry(k string, now time.Time) *failCount {
	if t.fails == nil {
		t.fails = map[string]*failCount{}
	}
	if now.Sub(t.swept) > time.Minute || len(t.fails) >= throttleMaxKeys {
		t.swept = now
		for key, f := range t.fails {
			if f.inUse == 0 && now.Sub(f.last) > throttleReset {
				delete(t.fails, key)
			}
		}
		t.evict(throttleMaxKeys * 9 / 10)
	}
	f := t.fails[k]
	if f == nil {
		f = &failCount{turnCh: make(chan struct{}, 1)}
		f.turnCh <- struct{}{}
		t.fails[k] = f
	}
	if now.Sub(f.last) > throttleReset {
		f.n = 0
	}
	return f
}

// evict makes room under a flood (the throttle full of idle keys that
// have not expired): it never refuses to count, so idle keys go until at
// most keep remain, a tenth at once so that a flood does not scan the whole
// map for every new key. Keys that do not slow anybody down yet (fewer
// failures than the free attempts) go first; a key past them, such as a
// user under attack, goes only if that is not enough; the counters across
// every source ("…:all") never go, so a flood of new sources cannot reset
// them.
func (t *throttle) evict(keep int) {
	if len(t.fails) < throttleMaxKeys {
		return
	}
	for _, throttling := range []bool{false, true} {
		for key, f := range t.fails {
			if len(t.fails) <= keep {
				return
			}
			if f.inUse == 0 && (f.n >= throttleFree) == throttling && !strings.HasSuffix(key, ":all") {
				delete(t.fails, key)
			}
		}
	}
}

// begin waits for the keys' turns, counts the attempt and returns how long
// it must wait before checking the password, and a release function.
func (t *throttle) begin(ctx context.Context, keys ...string) (time.Duration, func(), error) {
	if err := ctx.Err(); err != nil {
		return 0, nil, err // a request already cancelled takes no turn
	}
	now := time.Now()
	t.mu.Lock()
	var held []*failCount
	for _, k := range keys {
		f := t.entry(k, now)
		f.inUse++
		held = append(held, f)
	}
	t.mu.Unlock()
	release := func(n int) {
		t.mu.Lock()
		for i, f := range held {
			if i < n {
				f.turnCh <- struct{}{}
			}
			f.inUse--
		}
		t.mu.Unlock()
	}
	for i, f := range held { // keys in a fixed order (user, then source): no deadlock
		select {
		case <-f.turnCh:
		case <-ctx.Done():
			release(i)
			return 0, nil, ctx.Err()
		}
	}
	t.mu.Lock()
	var d time.Duration
	for _, f := range held {
		if f.n >= throttleFree {
			d = max(d, min(throttleBase<<min(f.n-throttleFree, 10), throttleMax))
		}
		f.n++ // counted as a failure until it succeeds
		f.last = time.Now()
	}
	t.mu.Unlock()
	return d, func() { release(len(held)) }, nil
}

// succeed clears the first key's count after a successful attempt, and
// takes the attempt back from the other keys' counts (a source's earlier
// failures still stand).
func (t *throttle) succeed(keys ...string) {
	t.mu.Lock()
	for i, k := range keys {
		if f := t.fails[k]; f != nil {
			if i == 0 {
				f.n = 0
			} else if f.n > 0 {
				f.n--
			}
		}
	}
	t.mu.Unlock()
}

// dummyHash keeps a login for an unknown user as slow as for a known one.
var dummyHash = "$argon2id$v=19$m=65536,t=2,p=2$c2FsdHNhbHRzYWx0c2FsdA$ZHVtbXlkdW1teWR1bW15ZHVtbXlkdW1teWR1bW15ZHU"

// Login checks a user's password and issues a session token that expires
// after the configured session TTL. Failed logins are slowed down.
func (s *Access) Login(ctx context.Context, name, password, source string) (Session, error) {
	if ValidLabel("user", name) == nil {
		note(ctx, "user:"+name)
	} else {
		note(ctx, "user:(invalid name)")
	}
	if len(password) > MaxPasswordBytes {
		return Session{}, fmt.Errorf("%w: wrong user name or password", ErrUnauthenticated)
	}
	host := source
	if i := strings.LastIndex(source, ":"); i > 0 {
		host = source[:i]
	}
	// Failures count per (user, address) and per address: someone else's
	// guesses at a user's password from elsewhere never slow that user
	// down, and a success clears the user's count at that address.
	ukey, skey := "user:"+name+"@"+host, "source:"+host
	d, release, err := s.throttle.begin(ctx, ukey, skey)
	if errors.Is(err, context.Canceled) {
		return Session{}, fmt.Errorf("login waiting for earlier attempts: %w", err) // the request ended: not the throttle's doing
	}
	if err != nil {
		return Session{}, fmt.Errorf("%w: login waited for earlier attempts: %v", ErrThrottled, err)
	}
	defer release()
	if d > 0 {
		if err := s.cfg.Sleep(ctx, d); err != nil {
			return Session{}, fmt.Errorf("%w: login delayed after repeated failures: %v", ErrThrottled, err)
		}
	}
	u, err := s.st.User(name)
	hash := u.PasswordHash
	if err != nil {
		hash = dummyHash
	}
	ok, perr := s.checkPasswordBounded(ctx, password, hash)
	if perr != nil {
		return Session{}, perr
	}
	if !ok || err != nil || u.Disabled {
		s.log.Warn("login failed", "user", name, "source", source)
		return Session{}, fmt.Errorf("%w: wrong user name or password", ErrUnauthenticated)
	}
	s.throttle.succeed(ukey, skey)
	tok, h := newToken()
	exp := s.now().Add(s.cfg.SessionTTL).UTC()
	// The session names the credential generation it was granted for: the
	// state machine refuses it if the password changed or the account was
	// disabled meanwhile (a login racing a password change gets nothing).
	if _, err := s.applyOpen(ctx, state.TypeTokenCreate, state.Token{Hash: h, Kind: state.TokenSession, Subject: name, Name: "session " + name,
		Created: s.now().UTC(), Expires: &exp, CredGen: u.CredGen}); err != nil {
		if errors.Is(err, ErrConflict) {
			return Session{}, fmt.Errorf("%w: the account changed during the login; log in again", ErrUnauthenticated)
		}
		return Session{}, fmt.Errorf("store session of %q: %w", name, err)
	}
	return Session{Token: tok, User: name, Roles: rolesOf(u.Roles), Expires: exp}, nil
}

// checkPasswordBounded runs Argon2id with at most a few checks at once: each
// takes the KDF's memory, and an unbounded number of concurrent logins would
// exhaust it. A login that cannot get a slot within 10 s is refused (429).
func (s *Access) checkPasswordBounded(ctx context.Context, password, hash string) (bool, error) {
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case s.pwSlots <- struct{}{}:
	case <-t.C:
		return false, fmt.Errorf("%w: too many logins in progress; try again", ErrThrottled)
	case <-ctx.Done():
		return false, fmt.Errorf("%w: %v", ErrThrottled, ctx.Err())
	}
	defer func() { <-s.pwSlots }()
	return checkPassword(password, hash), nil
}

// Logout ends the caller's session (root and endpoint tokens are revoked
// with their own commands).
func (s *Access) Logout(ctx context.Context) error {
	id, err := caller(ctx)
	if err != nil {
		return err
	}
	if id.Kind != KindUser || id.tokenHash == "" {
		return fmt.Errorf("%w: only user sessions log out (caller %s)", ErrInvalid, id.Actor())
	}
	_, err = s.applyOpen(ctx, state.TypeTokenRevoke, state.TokenRevoke{Hash: id.tokenHash})
	return err
}

// Whoami describes the caller.
type Whoami struct {
	Kind    string     `json:"kind"`
	Name    string     `json:"name"`
	Roles   []Role     `json:"roles,omitempty"`
	Expires *time.Time `json:"expires,omitempty"`
}

// WhoAmI returns the caller's identity.
func (s *Access) WhoAmI(ctx context.Context) (Whoami, error) {
	id, err := caller(ctx)
	if err != nil {
		return Whoami{}, err
	}
	return Whoami{Kind: id.Kind, Name: id.Name, Roles: id.Roles, Expires: id.Expires}, nil
}

func validText(what, s string) error {
	if len(s) > 1024 || strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return fmt.Errorf("%w: %s must be at most 1024 bytes of printable text", ErrInvalid, what)
	}
	return nil
}
