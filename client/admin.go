package client

import (
	"context"
	"iter"
	"net/url"
	"strconv"
	"time"
)

// Roles of administrators.
const (
	RoleSystemAdmin  = "system_admin"
	RoleKeyAdmin     = "key_admin"
	RoleAuditManager = "audit_manager"
)

// Permissions of endpoints on a wallet, weakest first.
const (
	PermRead       = "read"
	PermReadModify = "read_modify"
	PermManage     = "manage"
)

// Wallet is a named group of objects with the endpoints' permissions on it.
type Wallet struct {
	Name        string            `json:"name"`
	Description string            `json:"description,omitempty"`
	CreatedBy   string            `json:"created_by,omitempty"`
	Created     time.Time         `json:"created"`
	Grants      map[string]string `json:"grants,omitempty"` // endpoint name to permission
}

// Endpoint is an enrolled client.
type Endpoint struct {
	Name            string     `json:"name"`
	Description     string     `json:"description,omitempty"`
	State           string     `json:"state"` // active or revoked
	CertFingerprint string     `json:"cert_fingerprint,omitempty"`
	CertSerial      string     `json:"cert_serial,omitempty"`
	CertNotAfter    *time.Time `json:"cert_not_after,omitempty"`
	CreatedBy       string     `json:"created_by,omitempty"`
	Created         time.Time  `json:"created"`
	Revoked         *time.Time `json:"revoked,omitempty"`
}

// EnrollRequest enrols an endpoint. CSR is a PEM certificate request; the
// endpoint keeps its private key. Without a CSR only a token is issued.
type EnrollRequest struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	CSR         string `json:"csr,omitempty"`
}

// Enrollment is what enrolling returns, once: the token and, for a CSR, the
// signed client certificate and the CA bundle to trust (PEM).
type Enrollment struct {
	Endpoint    Endpoint `json:"endpoint"`
	Token       string   `json:"token"`
	Certificate string   `json:"certificate,omitempty"`
	CA          string   `json:"ca,omitempty"`
}

// User is an administrator.
type User struct {
	Name     string    `json:"name"`
	Roles    []string  `json:"roles"`
	Disabled bool      `json:"disabled,omitempty"`
	Created  time.Time `json:"created"`
	Updated  time.Time `json:"updated"`
}

// UserChange lists what to change; nil fields stay as they are. Users
// changing their own password give OldPassword.
type UserChange struct {
	Password    *string   `json:"password,omitempty"`
	OldPassword *string   `json:"old_password,omitempty"`
	Roles       *[]string `json:"roles,omitempty"`
	Disabled    *bool     `json:"disabled,omitempty"`
}

// Session is the result of a login.
type Session struct {
	Token   string    `json:"token"`
	User    string    `json:"user"`
	Roles   []string  `json:"roles"`
	Expires time.Time `json:"expires"`
}

// Whoami describes the caller.
type Whoami struct {
	Kind    string     `json:"kind"` // root, user or endpoint
	Name    string     `json:"name"`
	Roles   []string   `json:"roles,omitempty"`
	Expires *time.Time `json:"expires,omitempty"`
}

// AuditRecord is one audited request.
type AuditRecord struct {
	Seq       uint64    `json:"seq"`
	Time      time.Time `json:"time"`
	Prev      string    `json:"prev"`
	Node      string    `json:"node,omitempty"`
	Actor     string    `json:"actor"`
	Roles     []string  `json:"roles,omitempty"`
	Source    string    `json:"source,omitempty"`
	Transport string    `json:"transport,omitempty"`
	Operation string    `json:"operation"`
	Objects   []string  `json:"objects,omitempty"`
	Result    string    `json:"result"`
	Status    int       `json:"status,omitempty"`
	Error     string    `json:"error,omitempty"`
	LatencyMS float64   `json:"latency_ms"`
}

// AuditPage is a run of audit records. Oldest first, NextFrom is the from
// of the next page; newest first, NextBefore is its before; 0 after the last.
type AuditPage struct {
	Records    []AuditRecord `json:"records"`
	NextFrom   uint64        `json:"next_from,omitempty"`
	NextBefore uint64        `json:"next_before,omitempty"`
}

// AuditReport summarises a verified audit log.
type AuditReport struct {
	Files    int    `json:"files"`
	Records  uint64 `json:"records"`
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
	LastHash string `json:"last_hash"`
	HeadSeq  uint64 `json:"head_seq"`
	// PrunedThrough: records up to this seq were pruned (0: none); the
	// chain was verified from there.
	PrunedThrough uint64 `json:"pruned_through,omitempty"`
}

func pageQuery(limit int, tok string) string {
	v := url.Values{}
	if limit > 0 {
		v.Set("limit", strconv.Itoa(limit))
	}
	if tok != "" {
		v.Set("page_token", tok)
	}
	return encodeQuery(v)
}

// Wallets

// CreateWallet creates a wallet (key_admin).
func (c *Client) CreateWallet(ctx context.Context, name, description string) (Wallet, error) {
	var w Wallet
	return w, c.Do(ctx, "POST", "/api/v1/wallets", map[string]string{"name": name, "description": description}, &w)
}

// ListWallets returns one page of wallets (endpoints see those granted to them).
func (c *Client) ListWallets(ctx context.Context, limit int, pageToken string) (Page[Wallet], error) {
	var p Page[Wallet]
	return p, c.Do(ctx, "GET", "/api/v1/wallets"+pageQuery(limit, pageToken), nil, &p)
}

// Wallets iterates over every wallet, following next_page_token.
func (c *Client) Wallets(ctx context.Context) iter.Seq2[Wallet, error] {
	return paginate(func(tok string) (Page[Wallet], error) { return c.ListWallets(ctx, 0, tok) }, "")
}

// GetWallet returns a wallet with its grants.
func (c *Client) GetWallet(ctx context.Context, name string) (Wallet, error) {
	var w Wallet
	return w, c.Do(ctx, "GET", "/api/v1/wallets/"+url.PathEscape(name), nil, &w)
}

// DeleteWallet deletes an empty wallet.
func (c *Client) DeleteWallet(ctx context.Context, name string) error {
	return c.Do(ctx, "DELETE", "/api/v1/wallets/"+url.PathEscape(name), nil, nil)
}

// Grant gives an endpoint read, read_modify or manage on a wallet.
func (c *Client) Grant(ctx context.Context, wallet, endpoint, permission string) (Wallet, error) {
	var w Wallet
	return w, c.Do(ctx, "PUT", "/api/v1/wallets/"+url.PathEscape(wallet)+"/grants/"+url.PathEscape(endpoint),
		map[string]string{"permission": permission}, &w)
}

// RevokeGrant takes an endpoint's permission on a wallet away.
func (c *Client) RevokeGrant(ctx context.Context, wallet, endpoint string) (Wallet, error) {
	var w Wallet
	return w, c.Do(ctx, "DELETE", "/api/v1/wallets/"+url.PathEscape(wallet)+"/grants/"+url.PathEscape(endpoint), nil, &w)
}

// Endpoints

// EnrollEndpoint enrols an endpoint (key_admin).
func (c *Client) EnrollEndpoint(ctx context.Context, req EnrollRequest) (Enrollment, error) {
	var e Enrollment
	return e, c.Do(ctx, "POST", "/api/v1/endpoints", req, &e)
}

// ListEndpoints returns one page of endpoints.
func (c *Client) ListEndpoints(ctx context.Context, limit int, pageToken string) (Page[Endpoint], error) {
	var p Page[Endpoint]
	return p, c.Do(ctx, "GET", "/api/v1/endpoints"+pageQuery(limit, pageToken), nil, &p)
}

// Endpoints iterates over every endpoint, following next_page_token.
func (c *Client) Endpoints(ctx context.Context) iter.Seq2[Endpoint, error] {
	return paginate(func(tok string) (Page[Endpoint], error) { return c.ListEndpoints(ctx, 0, tok) }, "")
}

// GetEndpoint returns an endpoint.
func (c *Client) GetEndpoint(ctx context.Context, name string) (Endpoint, error) {
	var e Endpoint
	return e, c.Do(ctx, "GET", "/api/v1/endpoints/"+url.PathEscape(name), nil, &e)
}

// RenewEndpoint issues an endpoint a new client certificate for csr (PEM),
// keeping its token and grants; the old certificate is refused from then on.
func (c *Client) RenewEndpoint(ctx context.Context, name, csr string) (Enrollment, error) {
	var e Enrollment
	return e, c.Do(ctx, "POST", "/api/v1/endpoints/"+url.PathEscape(name)+"/renew", map[string]string{"csr": csr}, &e)
}

// AppRoleSecret is an AppRole secret id, shown once: log in with
// role_id and secret_id at the Vault API's auth/approle/login.
type AppRoleSecret struct {
	RoleID   string    `json:"role_id"`
	SecretID string    `json:"secret_id"`
	Accessor string    `json:"secret_id_accessor"`
	Expires  time.Time `json:"expires"`
	Uses     int       `json:"uses,omitempty"`
}

// IssueAppRole issues endpoint name an AppRole secret id valid for ttl
// (0: the server's default) and uses logins (0: unlimited).
func (c *Client) IssueAppRole(ctx context.Context, name string, ttl time.Duration, uses int) (AppRoleSecret, error) {
	var s AppRoleSecret
	body := map[string]any{"uses": uses}
	if ttl > 0 {
		body["ttl"] = ttl.String()
	}
	return s, c.Do(ctx, "POST", "/api/v1/endpoints/"+url.PathEscape(name)+"/approle", body, &s)
}

// RevokeAppRole revokes every AppRole secret id of endpoint name and
// returns how many there were.
func (c *Client) RevokeAppRole(ctx context.Context, name string) (int, error) {
	var r struct {
		Revoked int `json:"revoked"`
	}
	return r.Revoked, c.Do(ctx, "DELETE", "/api/v1/endpoints/"+url.PathEscape(name)+"/approle", nil, &r)
}

// RevokeEndpoint revokes an endpoint's token, certificate and grants.
func (c *Client) RevokeEndpoint(ctx context.Context, name string) (Endpoint, error) {
	var e Endpoint
	return e, c.Do(ctx, "POST", "/api/v1/endpoints/"+url.PathEscape(name)+"/revoke", nil, &e)
}

// Users

// CreateUser creates an administrator (system_admin).
func (c *Client) CreateUser(ctx context.Context, name, password string, roles []string) (User, error) {
	if roles == nil {
		roles = []string{}
	}
	var u User
	return u, c.Do(ctx, "POST", "/api/v1/users", struct {
		Name     string   `json:"name"`
		Password string   `json:"password"`
		Roles    []string `json:"roles"`
	}{name, password, roles}, &u)
}

// ListUsers returns one page of administrators.
func (c *Client) ListUsers(ctx context.Context, limit int, pageToken string) (Page[User], error) {
	var p Page[User]
	return p, c.Do(ctx, "GET", "/api/v1/users"+pageQuery(limit, pageToken), nil, &p)
}

// Users iterates over every administrator, following next_page_token.
func (c *Client) Users(ctx context.Context) iter.Seq2[User, error] {
	return paginate(func(tok string) (Page[User], error) { return c.ListUsers(ctx, 0, tok) }, "")
}

// GetUser returns an administrator.
func (c *Client) GetUser(ctx context.Context, name string) (User, error) {
	var u User
	return u, c.Do(ctx, "GET", "/api/v1/users/"+url.PathEscape(name), nil, &u)
}

// UpdateUser changes an administrator's password, roles or disabled flag.
func (c *Client) UpdateUser(ctx context.Context, name string, ch UserChange) (User, error) {
	var u User
	return u, c.Do(ctx, "PATCH", "/api/v1/users/"+url.PathEscape(name), ch, &u)
}

// DeleteUser deletes an administrator and ends its sessions.
func (c *Client) DeleteUser(ctx context.Context, name string) error {
	return c.Do(ctx, "DELETE", "/api/v1/users/"+url.PathEscape(name), nil, nil)
}

// Sessions

// Login checks a user's password and returns an expiring session. Use
// WithToken(s.Token) to call as that user.
func (c *Client) Login(ctx context.Context, username, password string) (Session, error) {
	var s Session
	return s, c.Do(ctx, "POST", "/api/v1/auth/login", map[string]string{"username": username, "password": password}, &s)
}

// Logout ends the session of the client's token.
func (c *Client) Logout(ctx context.Context) error {
	return c.Do(ctx, "POST", "/api/v1/auth/logout", nil, nil)
}

// WhoAmI returns the caller's identity.
func (c *Client) WhoAmI(ctx context.Context) (Whoami, error) {
	var w Whoami
	return w, c.Do(ctx, "GET", "/api/v1/auth/whoami", nil, &w)
}

// Audit

// AuditRecords reads up to limit records from sequence number from (0 = 1;
// limit 0 = server default).
func (c *Client) AuditRecords(ctx context.Context, from uint64, limit int) (AuditPage, error) {
	return c.auditPage(ctx, url.Values{}, "from", from, limit)
}

// AuditRecordsNewest reads up to limit records with sequence numbers below
// before (0 = from the end), newest first (limit 0 = server default).
func (c *Client) AuditRecordsNewest(ctx context.Context, before uint64, limit int) (AuditPage, error) {
	return c.auditPage(ctx, url.Values{"order": {"newest"}}, "before", before, limit)
}

func (c *Client) auditPage(ctx context.Context, v url.Values, cursor string, at uint64, limit int) (AuditPage, error) {
	if at > 0 {
		v.Set(cursor, strconv.FormatUint(at, 10))
	}
	if limit > 0 {
		v.Set("limit", strconv.Itoa(limit))
	}
	var p AuditPage
	return p, c.Do(ctx, "GET", "/api/v1/audit"+encodeQuery(v), nil, &p)
}

// VerifyAudit verifies the node's audit hash chain. A broken chain is an
// error with code "audit_tampered".
func (c *Client) VerifyAudit(ctx context.Context) (AuditReport, error) {
	var r AuditReport
	return r, c.Do(ctx, "POST", "/api/v1/audit/verify", nil, &r)
}
