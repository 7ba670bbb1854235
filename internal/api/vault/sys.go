package vault

import (
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/coffer-kms/coffer/internal/service"
)

// route resolves a request to its operation and the facts of its route
// (the one place they are written for the Vault API). Every path under
// /v1/ that is not sys/health or sys/seal-status needs a token and is
// served by the leader; those two are about this node and not audited.
func (a *api) route(r *http.Request) route {
	p := strings.TrimPrefix(r.URL.Path, "/v1/")
	if p == r.URL.Path {
		return mk("unsupported", leader, unsupportedPath)
	}
	method := r.Method
	if method == http.MethodGet && isListQuery(r) {
		method = "LIST"
	}
	switch {
	case p == "sys/health":
		return quiet(mk("sys.health", nodeLocal, onlyMethods(method, a.health, http.MethodGet, http.MethodHead)))
	case p == "sys/seal-status":
		return quiet(mk("sys.seal-status", nodeLocal, onlyMethods(method, a.sealStatus, http.MethodGet)))
	case p == "sys/mounts":
		return mk("sys.mounts.list", leader, onlyMethods(method, a.listMounts, http.MethodGet))
	case strings.HasPrefix(p, "sys/mounts/"):
		rest := strings.TrimPrefix(p, "sys/mounts/")
		if mount, ok := strings.CutSuffix(rest, "/tune"); ok {
			return mk("sys.mounts.tune", leader, onlyMethods(method, func(q *request) { a.tune(q, mount) }, http.MethodGet))
		}
		rest = strings.TrimSuffix(rest, "/")
		switch method {
		case http.MethodPost, http.MethodPut:
			return mk("sys.mounts.enable", leader, func(q *request) { a.enableMount(q, rest) })
		case http.MethodDelete:
			return mk("sys.mounts.disable", leader, func(q *request) { a.disableMount(q, rest) })
		case http.MethodGet:
			return mk("sys.mounts.read", leader, func(q *request) { a.tune(q, rest) })
		}
		return mk("sys.mounts", leader, unsupportedOperation)
	case p == "auth/token/lookup-self":
		return mk("auth.token.lookup-self", leader, onlyMethods(method, a.lookupSelf, http.MethodGet, http.MethodPost))
	case p == "auth/token/renew-self":
		return mk("auth.token.renew-self", leader, onlyMethods(method, a.renewSelf, http.MethodPost, http.MethodPut))
	case p == "auth/token/revoke-self":
		return mk("auth.token.revoke-self", leader, onlyMethods(method, a.revokeSelf, http.MethodPost, http.MethodPut))
	case p == "auth/approle/login":
		// The role_id / secret_id pair is the credential: no token needed.
		return mk("auth.approle.login", leaderNoToken, onlyMethods(method, a.approleLogin, http.MethodPost, http.MethodPut))
	case p == "auth/cert/login":
		return mk("auth.cert.login", leader, onlyMethods(method, a.certLogin, http.MethodPost, http.MethodPut))
	case p == "sys/leader":
		return quiet(mk("sys.leader", nodeLocal, onlyMethods(method, a.leader, http.MethodGet)))
	case p == "sys/internal/ui/mounts":
		return mk("sys.internal.ui.mounts", leader, onlyMethods(method, a.uiMounts, http.MethodGet))
	case strings.HasPrefix(p, "sys/internal/ui/mounts/"):
		rest := strings.TrimPrefix(p, "sys/internal/ui/mounts/")
		return mk("sys.internal.ui.mounts.read", leader, onlyMethods(method, func(q *request) { a.uiMount(q, rest) }, http.MethodGet))
	case p == "sys/capabilities-self":
		return mk("sys.capabilities-self", leader, onlyMethods(method, a.capabilitiesSelf, http.MethodPost, http.MethodPut))
	case strings.HasPrefix(p, "sys/"), strings.HasPrefix(p, "auth/"):
		return mk("unsupported", leader, unsupportedPath)
	}
	mount, rest, _ := strings.Cut(p, "/")
	// The mount is resolved after authentication: an anonymous caller learns
	// nothing about which mounts exist.
	return mk("mount", leader, func(q *request) { a.serveMount(q, mount, rest, method) })
}

func isListQuery(r *http.Request) bool {
	v := queryValue(r, "list")
	if v == "" {
		return false
	}
	b, _ := strconv.ParseBool(v)
	return b
}

// queryValue is r's query parameter name ("" if none), without parsing an
// empty query.
func queryValue(r *http.Request, name string) string {
	if r.URL.RawQuery == "" {
		return ""
	}
	return r.URL.Query().Get(name)
}

func onlyMethods(method string, h handler, allowed ...string) handler {
	for _, m := range allowed {
		if m == method {
			return h
		}
	}
	return unsupportedOperation
}

func unsupportedPath(q *request) {
	q.failStatus(http.StatusNotFound, "unsupported_path", fmt.Sprintf("1 error occurred:\n\t* unsupported path %q\n\n", q.r.URL.Path))
}

func unsupportedOperation(q *request) {
	q.failStatus(http.StatusMethodNotAllowed, "unsupported_operation", fmt.Sprintf("1 error occurred:\n\t* unsupported operation %s on %q\n\n", q.r.Method, q.r.URL.Path))
}

// serveMount dispatches a request under a declared mount.
func (a *api) serveMount(q *request, mountPath, rest, method string) {
	m, err := a.svc.Objects.ResolveMount(mountPath)
	if err != nil {
		if errors.Is(err, service.ErrNotFound) {
			q.op = "unsupported"
			q.failStatus(http.StatusNotFound, "no_mount", fmt.Sprintf("no handler for route %q: no mount %q is declared", q.r.URL.Path, mountPath))
			return
		}
		q.fail(err)
		return
	}
	switch m.Type {
	case service.MountKV:
		a.serveKV(q, m, rest, method)
	case service.MountTransit:
		a.serveTransit(q, m, rest, method)
	default:
		q.fail(fmt.Errorf("mount %q has unknown type %q", m.Path, m.Type))
	}
}

// healthBody is sys/health's answer.
type healthBody struct {
	Initialized                bool   `json:"initialized"`
	Sealed                     bool   `json:"sealed"`
	Standby                    bool   `json:"standby"`
	PerformanceStandby         bool   `json:"performance_standby"`
	ReplicationPerformanceMode string `json:"replication_performance_mode"`
	ReplicationDRMode          string `json:"replication_dr_mode"`
	ServerTimeUTC              int64  `json:"server_time_utc"`
	Version                    string `json:"version"`
}

// health answers like Vault: 200 open, 503 sealed, 501 not initialised;
// activecode, sealedcode and uninitcode override the codes.
func (a *api) health(q *request) {
	// State only: health is unauthenticated and must stay cheap (no status
	// probes of backup destinations).
	st := a.svc.State()
	b := healthBody{Initialized: st != service.StateUninitialized, Sealed: st != service.StateOpen, ReplicationPerformanceMode: "disabled",
		ReplicationDRMode: "disabled", ServerTimeUTC: time.Now().Unix(), Version: service.Version}
	code, param := http.StatusOK, "activecode"
	switch {
	case !b.Initialized:
		code, param = http.StatusNotImplemented, "uninitcode"
	case b.Sealed:
		code, param = http.StatusServiceUnavailable, "sealedcode"
	case a.svc.Cluster.Role() == "follower":
		b.Standby = true
		code, param = http.StatusTooManyRequests, "standbycode"
	case a.svc.Cluster.Role() == "read-only":
		code, param = http.StatusServiceUnavailable, "sealedcode"
	}
	if v := q.r.URL.Query().Get(param); v != "" {
		c, err := strconv.Atoi(v)
		if err != nil || c < 100 || c > 599 {
			q.failStatus(http.StatusBadRequest, "invalid_request", fmt.Sprintf("%s: want an HTTP status code", param))
			return
		}
		code = c
	}
	if q.r.Method == http.MethodHead {
		q.w.WriteHeader(code)
		return
	}
	writeJSON(q.w, code, b)
}

// sealStatus is sys/seal-status. Coffer's keystore opens with one
// passphrase (or auto-open): threshold and shares are 1.
func (a *api) sealStatus(q *request) {
	st := a.svc.State()
	b := map[string]any{"type": "passphrase", "initialized": st != service.StateUninitialized, "sealed": st != service.StateOpen,
		"t": 1, "n": 1, "progress": 0, "nonce": "", "version": service.Version, "build_date": "", "migration": false,
		"recovery_seal": false, "storage_type": "raft"}
	writeJSON(q.w, http.StatusOK, b)
}

// mountInfo is a mount as sys/mounts and sys/mounts/<path>/tune show it.
func mountInfo(m service.Mount) map[string]any {
	var options map[string]string
	typ := m.Type
	if m.Type == service.MountKV {
		typ, options = "kv", map[string]string{"version": "2", "wallet": m.Wallet}
	} else {
		options = map[string]string{"wallet": m.Wallet}
	}
	return map[string]any{"type": typ, "description": m.Description, "accessor": typ + "_" + m.Path, "local": false, "seal_wrap": false,
		"external_entropy_access": false, "options": options, "plugin_version": "", "running_plugin_version": "", "running_sha256": "",
		"config": map[string]any{"default_lease_ttl": 0, "max_lease_ttl": 0, "force_no_cache": false}}
}

// tune answers sys/mounts/<path>/tune: what MariaDB's plugin checks at
// start-up (a top-level "options":{"version":"2"}). Vault puts the fields
// at the top level and under data; so does Coffer.
func (a *api) tune(q *request, path string) {
	m, err := a.svc.Objects.DescribeMount(q.r.Context(), path)
	if err != nil {
		q.fail(err)
		return
	}
	info := mountInfo(m)
	data := map[string]any{"description": m.Description, "default_lease_ttl": 0, "max_lease_ttl": 0, "force_no_cache": false,
		"options": info["options"], "type": info["type"]}
	out := map[string]any{"request_id": q.reqID, "lease_id": "", "renewable": false, "lease_duration": 0, "data": data,
		"wrap_info": nil, "warnings": nil, "auth": nil}
	for k, v := range data {
		out[k] = v
	}
	writeJSON(q.w, http.StatusOK, out)
}

func (a *api) listMounts(q *request) {
	ms, err := a.svc.Objects.Mounts(q.r.Context())
	if err != nil {
		q.fail(err)
		return
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Path < ms[j].Path })
	data := map[string]any{}
	for _, m := range ms {
		data[m.Path+"/"] = mountInfo(m)
	}
	out := map[string]any{"request_id": q.reqID, "lease_id": "", "renewable": false, "lease_duration": 0, "data": data,
		"wrap_info": nil, "warnings": nil, "auth": nil}
	for k, v := range data {
		out[k] = v
	}
	writeJSON(q.w, http.StatusOK, out)
}

// enableMount is Vault's "secrets enable": {"type":"kv","options":{"version":"2","wallet":"w"}}
// or {"type":"transit","options":{"wallet":"w"}}. The wallet defaults to the mount path.
func (a *api) enableMount(q *request, path string) {
	if err := q.readBody(); err != nil {
		q.fail(err)
		return
	}
	q.take("type", "description", "options", "config", "local", "seal_wrap", "external_entropy_access", "plugin_name", "plugin_version")
	typ, err := stringField(q.body, "type")
	if err != nil {
		q.fail(err)
		return
	}
	desc, err := stringField(q.body, "description")
	if err != nil {
		q.fail(err)
		return
	}
	opts, _, err := stringMapField(q.body, "options")
	if err != nil {
		q.fail(err)
		return
	}
	switch typ {
	case "kv":
		if opts["version"] != "2" {
			q.fail(fmt.Errorf("%w: only KV version 2 is supported: set options.version to \"2\" (or use type kv-v2)", service.ErrInvalid))
			return
		}
		typ = service.MountKV
	case "kv-v2", service.MountTransit:
	default:
		q.fail(fmt.Errorf("%w: mount type %q: use kv (options.version \"2\"), kv-v2 or transit", service.ErrInvalid, typ))
		return
	}
	if _, err := a.svc.Objects.CreateMount(q.r.Context(), service.Mount{Path: path, Type: typ, Wallet: opts["wallet"], Description: desc}); err != nil {
		q.fail(err)
		return
	}
	q.noContent()
}

func (a *api) disableMount(q *request, path string) {
	if err := a.svc.Objects.DeleteMount(q.r.Context(), path); err != nil {
		q.fail(err)
		return
	}
	q.noContent()
}

// lookupSelf describes the caller's token (never the token itself).
func (a *api) lookupSelf(q *request) {
	who, err := a.svc.Access.WhoAmI(q.r.Context())
	if err != nil {
		q.fail(err)
		return
	}
	policies, err := a.policies(q, who)
	if err != nil {
		q.fail(err)
		return
	}
	var expire any
	ttl := 0
	if who.Expires != nil {
		expire = who.Expires.UTC().Format(time.RFC3339)
		ttl = int(time.Until(*who.Expires).Seconds())
	}
	display := who.Kind
	if who.Name != "" {
		display += "-" + who.Name
	}
	q.reply(http.StatusOK, "token", map[string]any{"accessor": a.svc.Access.CallerAccessor(q.r.Context()), "creation_ttl": 0, "display_name": display, "entity_id": "",
		"expire_time": expire, "explicit_max_ttl": 0, "meta": map[string]string{"kind": who.Kind, "name": who.Name},
		"num_uses": 0, "orphan": true, "path": "auth/token/create", "policies": policies, "renewable": false, "ttl": ttl, "type": "service"})
}
