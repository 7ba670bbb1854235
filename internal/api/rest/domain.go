package rest

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/coffer-kms/coffer/internal/service"
)

// Request and response bodies of the domain routes.
type (
	// LoginRequest logs a user in.
	LoginRequest struct {
		Username string `json:"username"`
		Password string `json:"password"`
	}
	// CreateUserRequest creates an administrator.
	CreateUserRequest struct {
		Name     string         `json:"name"`
		Password string         `json:"password"`
		Roles    []service.Role `json:"roles" doc:"system_admin, key_admin, audit_manager"`
	}
	// CreateWalletRequest creates a wallet.
	CreateWalletRequest struct {
		Name        string `json:"name"`
		Description string `json:"description,omitempty"`
	}
	// GrantRequest sets an endpoint's permission on a wallet.
	GrantRequest struct {
		Permission service.Permission `json:"permission" doc:"read, read_modify or manage"`
	}
	// PutSecretRequest writes a secret value.
	PutSecretRequest struct {
		Value []byte `json:"value" doc:"base64, 1 byte to 64 KiB"`
	}
	// ObjectWithMaterial is an object and one version's material.
	ObjectWithMaterial struct {
		Object   service.Object    `json:"object"`
		Material *service.Material `json:"material,omitempty"`
	}
	// VersionList lists an object's versions.
	VersionList struct {
		ID       string                  `json:"id"`
		Latest   uint64                  `json:"latest_version"`
		Versions []service.ObjectVersion `json:"versions"`
	}
	// RotateRequest optionally carries the new value (secret data: required).
	RotateRequest struct {
		Value []byte `json:"value,omitempty" doc:"base64"`
	}
	// StateRequest optionally says why.
	StateRequest struct {
		Reason string `json:"reason,omitempty"`
	}
	// AttributesRequest sets and deletes custom attributes.
	AttributesRequest struct {
		Set    map[string]string `json:"set,omitempty"`
		Delete []string          `json:"delete,omitempty"`
	}
	// EnrollRequest enrols an endpoint.
	EnrollRequest struct {
		Name        string `json:"name"`
		Description string `json:"description,omitempty"`
		CSR         string `json:"csr,omitempty" doc:"PEM certificate request; the endpoint keeps its private key"`
	}
	// RenewRequest carries an endpoint's new certificate request.
	RenewRequest struct {
		CSR string `json:"csr" doc:"PEM certificate request for the new key"`
	}
	// AppRoleRequest asks for an AppRole secret id.
	AppRoleRequest struct {
		TTL  string `json:"ttl,omitempty" doc:"how long the secret id is valid (Go duration, 1m to 8784h; default 24h)"`
		Uses int    `json:"uses,omitempty" doc:"logins allowed (0: unlimited)"`
	}
	// AppRoleRevoked tells how many secret ids were revoked.
	AppRoleRevoked struct {
		Revoked int `json:"revoked"`
	}
	// AuditPage is a run of audit records.
	AuditPage struct {
		Records    []service.AuditRecord `json:"records"`
		Next       uint64                `json:"next_from,omitempty" doc:"oldest first: the from of the next page"`
		NextBefore uint64                `json:"next_before,omitempty" doc:"newest first: the before of the next page"`
	}
	// JournalList lists journal segments.
	JournalList struct {
		Segments []Segment `json:"segments"`
	}
	// JournalRotated names the closed segment.
	JournalRotated struct {
		Closed Segment `json:"closed"`
	}
)

// decodeOptional is decode for bodies that may be empty.
func decodeOptional(w http.ResponseWriter, r *http.Request, v any) error {
	if r.ContentLength == 0 {
		return nil
	}
	return decode(w, r, v)
}

func queryUint(r *http.Request, name string) (uint64, error) {
	q := r.URL.Query().Get(name)
	if q == "" {
		return 0, nil
	}
	v, err := strconv.ParseUint(q, 10, 64)
	if err != nil || v == 0 {
		return 0, fmt.Errorf("%w: %s %q must be a positive integer", service.ErrInvalid, name, q)
	}
	return v, nil
}

func queryInt(r *http.Request, name string) (int, error) {
	v, err := queryUint(r, name)
	if v > 1<<20 {
		return 0, fmt.Errorf("%w: %s %d is too large", service.ErrInvalid, name, v)
	}
	return int(v), err
}

func queryBool(r *http.Request, name string) (bool, error) {
	q := r.URL.Query().Get(name)
	if q == "" {
		return false, nil
	}
	v, err := strconv.ParseBool(q)
	if err != nil {
		return false, fmt.Errorf("%w: %s %q must be true or false", service.ErrInvalid, name, q)
	}
	return v, nil
}

func page(r *http.Request) (int, string, error) {
	n, err := queryInt(r, "limit")
	return n, r.URL.Query().Get("page_token"), err
}

func (a *api) openapi(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Write(a.doc) // #nosec G104 -- the client has gone; nothing to tell it
}

func (a *api) login(w http.ResponseWriter, r *http.Request) {
	var req LoginRequest
	if err := decode(w, r, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	sess, err := a.svc.Access.Login(r.Context(), req.Username, req.Password, r.RemoteAddr)
	if err == nil {
		service.CallFrom(r.Context()).Identity = service.Identity{Kind: service.KindUser, Name: sess.User, Roles: sess.Roles}
	}
	a.reply(w, r, http.StatusOK, sess, err)
}

func (a *api) logout(w http.ResponseWriter, r *http.Request) {
	a.reply(w, r, http.StatusOK, map[string]bool{"logged_out": true}, a.svc.Access.Logout(r.Context()))
}

func (a *api) whoami(w http.ResponseWriter, r *http.Request) {
	v, err := a.svc.Access.WhoAmI(r.Context())
	a.reply(w, r, http.StatusOK, v, err)
}

func (a *api) createUser(w http.ResponseWriter, r *http.Request) {
	var req CreateUserRequest
	if err := decode(w, r, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	u, err := a.svc.Access.CreateUser(r.Context(), req.Name, req.Password, req.Roles)
	a.reply(w, r, http.StatusCreated, u, err)
}

func (a *api) listUsers(w http.ResponseWriter, r *http.Request) {
	n, tok, err := page(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	p, err := a.svc.Access.ListUsers(r.Context(), n, tok)
	a.reply(w, r, http.StatusOK, p, err)
}

func (a *api) getUser(w http.ResponseWriter, r *http.Request) {
	u, err := a.svc.Access.GetUser(r.Context(), r.PathValue("name"))
	a.reply(w, r, http.StatusOK, u, err)
}

func (a *api) updateUser(w http.ResponseWriter, r *http.Request) {
	var req service.UserChange
	if err := decode(w, r, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	u, err := a.svc.Access.UpdateUser(r.Context(), r.PathValue("name"), req)
	a.reply(w, r, http.StatusOK, u, err)
}

func (a *api) deleteUser(w http.ResponseWriter, r *http.Request) {
	if err := a.svc.Access.DeleteUser(r.Context(), r.PathValue("name")); err != nil {
		a.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *api) createWallet(w http.ResponseWriter, r *http.Request) {
	var req CreateWalletRequest
	if err := decode(w, r, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	wl, err := a.svc.Access.CreateWallet(r.Context(), req.Name, req.Description)
	a.reply(w, r, http.StatusCreated, wl, err)
}

func (a *api) listWallets(w http.ResponseWriter, r *http.Request) {
	n, tok, err := page(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	p, err := a.svc.Access.ListWallets(r.Context(), n, tok)
	a.reply(w, r, http.StatusOK, p, err)
}

func (a *api) getWallet(w http.ResponseWriter, r *http.Request) {
	wl, err := a.svc.Access.GetWallet(r.Context(), r.PathValue("wallet"))
	a.reply(w, r, http.StatusOK, wl, err)
}

func (a *api) deleteWallet(w http.ResponseWriter, r *http.Request) {
	if err := a.svc.Access.DeleteWallet(r.Context(), r.PathValue("wallet")); err != nil {
		a.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *api) grant(w http.ResponseWriter, r *http.Request) {
	var req GrantRequest
	if err := decode(w, r, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	if req.Permission == "" {
		a.fail(w, r, fmt.Errorf("%w: permission is required (read, read_modify or manage); DELETE the grant to remove it", service.ErrInvalid))
		return
	}
	wl, err := a.svc.Access.SetGrant(r.Context(), r.PathValue("wallet"), r.PathValue("endpoint"), req.Permission)
	a.reply(w, r, http.StatusOK, wl, err)
}

func (a *api) revokeGrant(w http.ResponseWriter, r *http.Request) {
	wl, err := a.svc.Access.SetGrant(r.Context(), r.PathValue("wallet"), r.PathValue("endpoint"), "")
	a.reply(w, r, http.StatusOK, wl, err)
}

func (a *api) getByName(w http.ResponseWriter, r *http.Request) {
	a.material(w, r, service.Ref{Wallet: r.PathValue("wallet"), Name: r.PathValue("name")})
}

func (a *api) getMaterial(w http.ResponseWriter, r *http.Request) {
	a.material(w, r, service.Ref{ID: r.PathValue("id")})
}

func (a *api) material(w http.ResponseWriter, r *http.Request, ref service.Ref) {
	version, err := queryUint(r, "version")
	if err != nil {
		a.fail(w, r, err)
		return
	}
	metaOnly, err := queryBool(r, "metadata_only")
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if metaOnly {
		if version != 0 {
			a.fail(w, r, fmt.Errorf("%w: version and metadata_only together make no sense", service.ErrInvalid))
			return
		}
		o, err := a.svc.Objects.DescribeObject(r.Context(), ref)
		a.reply(w, r, http.StatusOK, ObjectWithMaterial{Object: o}, err)
		return
	}
	o, m, err := a.svc.Objects.GetObject(r.Context(), ref, version)
	a.reply(w, r, http.StatusOK, ObjectWithMaterial{Object: o, Material: &m}, err)
}

func (a *api) putSecret(w http.ResponseWriter, r *http.Request) {
	var req PutSecretRequest
	if err := decode(w, r, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	o, err := a.svc.Objects.PutSecret(r.Context(), r.PathValue("wallet"), r.PathValue("name"), req.Value)
	a.reply(w, r, http.StatusOK, o, err)
}

func (a *api) createObject(w http.ResponseWriter, r *http.Request) {
	var req service.CreateObject
	if err := decode(w, r, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	o, err := a.svc.Objects.CreateObject(r.Context(), req)
	a.reply(w, r, http.StatusCreated, o, err)
}

func (a *api) listObjects(w http.ResponseWriter, r *http.Request) {
	n, tok, err := page(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	q := r.URL.Query()
	query := service.Query{Wallet: q.Get("wallet"), Name: q.Get("name"), Type: q.Get("type"), State: q.Get("state"), Limit: n, PageToken: tok}
	for _, kv := range q["attr"] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			a.fail(w, r, fmt.Errorf("%w: attr %q: use key=value", service.ErrInvalid, kv))
			return
		}
		if query.Attributes == nil {
			query.Attributes = map[string]string{}
		}
		query.Attributes[k] = v
	}
	p, err := a.svc.Objects.ListObjects(r.Context(), query)
	a.reply(w, r, http.StatusOK, p, err)
}

func (a *api) getObject(w http.ResponseWriter, r *http.Request) {
	o, err := a.svc.Objects.DescribeObject(r.Context(), service.Ref{ID: r.PathValue("id")})
	a.reply(w, r, http.StatusOK, o, err)
}

func (a *api) listVersions(w http.ResponseWriter, r *http.Request) {
	o, err := a.svc.Objects.DescribeObject(r.Context(), service.Ref{ID: r.PathValue("id")})
	a.reply(w, r, http.StatusOK, VersionList{ID: o.ID, Latest: o.Latest, Versions: o.Versions}, err)
}

func (a *api) rotateObject(w http.ResponseWriter, r *http.Request) {
	var req RotateRequest
	if err := decodeOptional(w, r, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	o, err := a.svc.Objects.RotateObject(r.Context(), service.Ref{ID: r.PathValue("id")}, req.Value)
	a.reply(w, r, http.StatusOK, o, err)
}

func (a *api) restoreObject(w http.ResponseWriter, r *http.Request) {
	var req service.RestoreObjectRequest
	if err := decode(w, r, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	o, err := a.svc.Backups.RestoreObject(r.Context(), service.Ref{ID: r.PathValue("id")}, req)
	a.reply(w, r, http.StatusOK, o, err)
}

func (a *api) previewObjectRestore(w http.ResponseWriter, r *http.Request) {
	var req service.RestoreObjectRequest
	if err := decode(w, r, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	p, err := a.svc.Backups.PreviewObjectRestore(r.Context(), service.Ref{ID: r.PathValue("id")}, req)
	a.reply(w, r, http.StatusOK, p, err)
}

func (a *api) transition(t service.Transition) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req StateRequest
		if err := decodeOptional(w, r, &req); err != nil {
			a.fail(w, r, err)
			return
		}
		o, err := a.svc.Objects.ChangeState(r.Context(), service.Ref{ID: r.PathValue("id")}, t, req.Reason)
		a.reply(w, r, http.StatusOK, o, err)
	}
}

func (a *api) setAttributes(w http.ResponseWriter, r *http.Request) {
	var req AttributesRequest
	if err := decode(w, r, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	o, err := a.svc.Objects.SetAttributes(r.Context(), service.Ref{ID: r.PathValue("id")}, req.Set, req.Delete)
	a.reply(w, r, http.StatusOK, o, err)
}

func (a *api) enroll(w http.ResponseWriter, r *http.Request) {
	var req EnrollRequest
	if err := decode(w, r, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	e, err := a.svc.Access.EnrollEndpoint(r.Context(), req.Name, req.Description, []byte(req.CSR))
	a.reply(w, r, http.StatusCreated, e, err)
}

func (a *api) listEndpoints(w http.ResponseWriter, r *http.Request) {
	n, tok, err := page(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	p, err := a.svc.Access.ListEndpoints(r.Context(), n, tok)
	a.reply(w, r, http.StatusOK, p, err)
}

func (a *api) getEndpoint(w http.ResponseWriter, r *http.Request) {
	e, err := a.svc.Access.GetEndpoint(r.Context(), r.PathValue("name"))
	a.reply(w, r, http.StatusOK, e, err)
}

func (a *api) renewEndpoint(w http.ResponseWriter, r *http.Request) {
	var req RenewRequest
	if err := decode(w, r, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	e, err := a.svc.Access.RenewEndpoint(r.Context(), r.PathValue("name"), []byte(req.CSR))
	a.reply(w, r, http.StatusOK, e, err)
}

func (a *api) issueAppRole(w http.ResponseWriter, r *http.Request) {
	var req AppRoleRequest
	if err := decode(w, r, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	var ttl time.Duration
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil {
			a.fail(w, r, fmt.Errorf("%w: ttl %q: want a duration like 24h", service.ErrInvalid, req.TTL))
			return
		}
		ttl = d
	}
	sec, err := a.svc.Access.IssueAppRoleSecret(r.Context(), r.PathValue("name"), ttl, req.Uses)
	a.reply(w, r, http.StatusOK, sec, err)
}

func (a *api) revokeAppRole(w http.ResponseWriter, r *http.Request) {
	n, err := a.svc.Access.RevokeAppRoleSecrets(r.Context(), r.PathValue("name"))
	a.reply(w, r, http.StatusOK, AppRoleRevoked{Revoked: n}, err)
}

func (a *api) revokeEndpoint(w http.ResponseWriter, r *http.Request) {
	e, err := a.svc.Access.RevokeEndpoint(r.Context(), r.PathValue("name"))
	a.reply(w, r, http.StatusOK, e, err)
}

func (a *api) readAudit(w http.ResponseWriter, r *http.Request) {
	from, err := queryUint(r, "from")
	if err != nil {
		a.fail(w, r, err)
		return
	}
	limit, err := queryInt(r, "limit")
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if limit == 0 {
		limit = service.DefaultListLimit
	}
	before, err := queryUint(r, "before")
	if err != nil {
		a.fail(w, r, err)
		return
	}
	var recs []service.AuditRecord
	switch order := r.URL.Query().Get("order"); order {
	case "", "oldest":
		if before != 0 {
			a.fail(w, r, fmt.Errorf("%w: before goes with order=newest (oldest first pages with from)", service.ErrInvalid))
			return
		}
		recs, err = a.svc.AuditRecords(r.Context(), from, limit)
	case "newest":
		if from != 0 {
			a.fail(w, r, fmt.Errorf("%w: from goes with order=oldest (newest first pages with before)", service.ErrInvalid))
			return
		}
		recs, err = a.svc.AuditRecordsNewest(r.Context(), before, limit)
	default:
		a.fail(w, r, fmt.Errorf("%w: order %q: use oldest or newest", service.ErrInvalid, order))
		return
	}
	p := AuditPage{Records: recs}
	if p.Records == nil {
		p.Records = []service.AuditRecord{}
	}
	if len(recs) == limit {
		if r.URL.Query().Get("order") == "newest" {
			if s := recs[len(recs)-1].Seq; s > 1 {
				p.NextBefore = s
			}
		} else {
			p.Next = recs[len(recs)-1].Seq + 1
		}
	}
	a.reply(w, r, http.StatusOK, p, err)
}

func (a *api) verifyAudit(w http.ResponseWriter, r *http.Request) {
	rep, err := a.svc.VerifyAudit(r.Context())
	a.reply(w, r, http.StatusOK, rep, err)
}
