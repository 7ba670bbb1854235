// Package rest is Coffer's native JSON API under /api/v1: decode, authorise,
// call the service, encode. It holds no domain logic.
package rest

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/coffer-kms/coffer/internal/api/forward"
	"github.com/coffer-kms/coffer/internal/api/openapi"
	"github.com/coffer-kms/coffer/internal/jsonwire"
	"github.com/coffer-kms/coffer/internal/service"
)

// MaxBody is the largest request body accepted.
const MaxBody = 1 << 20

// Stopper stops the server in a mode (smart, fast, immediate).
type Stopper func(mode string) error

// Options for the handler.
type Options struct {
	Logger  *slog.Logger
	Stop    Stopper
	Metrics Observer
}

type ctxKey int

const localKey ctxKey = 1

// WithLocal marks a request context as coming from the local control socket,
// whose access is guarded by the data dir's file permissions.
func WithLocal(ctx context.Context) context.Context { return context.WithValue(ctx, localKey, true) }

func isLocal(r *http.Request) bool { v, _ := r.Context().Value(localKey).(bool); return v }

// IsLocal reports whether r came through the control socket.
func IsLocal(r *http.Request) bool { return isLocal(r) }

type api struct {
	svc     *service.Service
	log     *slog.Logger
	stop    Stopper
	metrics Observer
	doc     []byte
}

// Observer receives one call per finished request (metrics).
type Observer interface {
	ObserveRequest(transport, route, method string, code int, d time.Duration)
}

// Handler returns the /api/v1 routes, which tell their facts.
func Handler(svc *service.Service, opts Options) forward.RoutedHandler {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	a := &api{svc: svc, log: opts.Logger, stop: opts.Stop, metrics: opts.Metrics, doc: OpenAPIDocument}
	mux := forward.NewServeMux()
	for _, rt := range a.routes() {
		mux.Handle(rt.Method+" "+rt.Pattern, forward.WithFacts(rt.facts, a.wrap(rt)))
	}
	// No route: answered here, or by the leader for what would be a write.
	notFound := route{Route: openapi.Route{Pattern: "/api/v1/", OperationID: "notFound"},
		facts: forward.Facts{Placement: forward.Leader, Audit: "notFound"},
		h: func(w http.ResponseWriter, r *http.Request) {
			writeErr(w, http.StatusNotFound, "not_found", fmt.Sprintf("no route %s %s", r.Method, r.URL.Path))
		}}
	mux.Handle("/api/v1/", forward.WithFacts(notFound.facts, a.wrap(notFound)))
	return mux
}

// statusWriter remembers the status and error code of a response.
type statusWriter struct {
	http.ResponseWriter
	status int
	code   string
	msg    string
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// FlushError flushes and reports the error of the writer beneath
// (http.ResponseController takes it before Flush, which has none to give).
func (w *statusWriter) FlushError() error {
	return http.NewResponseController(w.ResponseWriter).Flush()
}

type errNoter interface{ noteError(code, msg string) }

func (w *statusWriter) noteError(code, msg string) { w.code, w.msg = code, msg }

// wrap authenticates, runs the handler, then audits and measures the request.
func (a *api) wrap(rt route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		call := a.newCall(r, start)
		// Audited below, or deliberately not (no audit action): AuditEvery adds
		// nothing for this request.
		service.MarkAudited(r.Context())
		ctx := service.WithCall(r.Context(), call)
		r = r.WithContext(ctx)
		switch id, err := a.identify(r); {
		case err == nil:
			call.Identity = id
			a.serve(rt, sw, r)
		case rt.facts.Auth:
			a.fail(sw, r, err)
		default:
			a.serve(rt, sw, r)
		}
		status := sw.status
		if status == 0 {
			status = http.StatusOK
		}
		d := time.Since(start)
		method := metricMethod(r.Method)
		// Checked first: the arguments (boxed values, the actor string)
		// cost allocations on every request even when debug logging is off.
		if a.log.Enabled(r.Context(), slog.LevelDebug) {
			a.log.Debug("request", "transport", call.Transport, "method", method, "route", rt.Pattern, "path", r.URL.Path,
				"status", status, "actor", call.Identity.Actor(), "source", call.Source, "latency", d)
		}
		if a.metrics != nil {
			a.metrics.ObserveRequest(call.Transport, rt.Pattern, method, status, d)
		}
		if rt.facts.Audit == "" {
			return
		}
		code := "ok"
		if status >= 400 {
			code = sw.code
		}
		a.svc.Audit(call, rt.facts.Audit, status, code, sw.msg)
	})
}

// serve runs the route's handler, unless the request carries a query
// parameter the route does not declare (rt.Query, the OpenAPI document's
// list): a typo such as ?wallets= on a list would otherwise be ignored and
// list everything. No route (Method "") answers 404 whatever its query.
// The unaudited routes (health, the cluster CA, the OpenAPI document) are
// read-only probes and documents: they answer whatever query a load
// balancer's or a monitoring tool's probe adds (a cache-buster, Vault's
// ?standbyok=true), since a 400 there would mark a working node down.
func (a *api) serve(rt route, w http.ResponseWriter, r *http.Request) {
	if r.URL.RawQuery != "" && rt.Method != "" && rt.facts.Audit != "" {
		if name, ok := unknownQueryParam(r.URL.Query(), rt.Query); !ok {
			a.fail(w, r, fmt.Errorf("%w: unknown query parameter %q; %s", service.ErrInvalid, name, takesParams(rt.Query)))
			return
		}
	}
	rt.h(w, r)
}

// unknownQueryParam returns the first (in name order) parameter of q that
// declared does not list, and false; or true when there is none.
func unknownQueryParam(q url.Values, declared []openapi.Param) (string, bool) {
	first := ""
	for name := range q {
		if (first == "" || name < first) && !slices.ContainsFunc(declared, func(p openapi.Param) bool { return p.Name == name }) {
			first = name
		}
	}
	return first, first == ""
}

// takesParams names the query parameters a route takes.
func takesParams(declared []openapi.Param) string {
	if len(declared) == 0 {
		return "this route takes no query parameters"
	}
	names := make([]string, len(declared))
	for i, p := range declared {
		names[i] = p.Name
	}
	return "this route takes " + strings.Join(names, ", ")
}

// newCall is the service call of a request: its transport and source.
func (a *api) newCall(r *http.Request, start time.Time) *service.Call {
	call := &service.Call{Source: r.RemoteAddr, Transport: "rest", Start: start}
	if isLocal(r) {
		call.Transport, call.Source = "socket", "local"
	} else if f := forward.Caller(r); f.ClientAddr != "" && a.svc.Cluster.IsMember(f.Peer, f.PeerKey) {
		// Forwarded by a member: the client is who it forwarded for
		// (audit, login throttling and join limiting count the client).
		call.Source = net.JoinHostPort(f.ClientAddr, "0") + " via " + f.Peer
	}
	return call
}

// AuditEvery wraps the server's whole HTTP handler (inside leader
// forwarding, which the leader audits): a request that no transport
// accounted for with service.MarkAudited (the mux redirected a path with
// ".." or "//" to its clean form, no route matched outside /api/v1 and /v1,
// a node-only route refused its caller) gets an audit record "unrouted"
// with its status and the reason, never the body or the query string.
func AuditEvery(svc *service.Service, next http.Handler) http.Handler {
	a := &api{svc: svc}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ctx, seen := service.WithAuditMark(r.Context())
		r = r.WithContext(ctx)
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		if seen.Load() {
			return
		}
		status := sw.status
		if status == 0 {
			status = http.StatusOK
		}
		call := a.newCall(r, start)
		if id, err := a.identify(r); err == nil {
			call.Identity = id
		}
		method := metricMethod(r.Method)
		var result, reason string
		switch {
		case status >= 300 && status < 400:
			result = "redirected"
			reason = fmt.Sprintf("%s %q is not a clean path (\".\", \"..\", \"//\" or a missing slash): redirected to its clean form, nothing served", method, r.URL.Path)
		case status == http.StatusNotFound:
			result, reason = "not_found", fmt.Sprintf("no route %s %q", method, r.URL.Path)
		case status < 300:
			result, reason = "ok", ""
		default:
			result = sw.code
			if result == "" {
				result = strings.ToLower(strings.ReplaceAll(http.StatusText(status), " ", "_"))
			}
			reason = fmt.Sprintf("%s %q refused: %s", method, r.URL.Path, http.StatusText(status))
		}
		svc.Audit(call, "unrouted", status, result, reason)
	})
}

// metricMethod bounds the method label: any method outside the standard
// set is "other", so that no client can mint series or bloat a log line.
func metricMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions:
		return m
	}
	return "other"
}

// identify resolves the caller: the local socket is root; otherwise a bearer
// token and/or an enrolled client certificate. When both are sent they must
// name the same endpoint: a certificate never lends its trust to another
// identity's token.
func (a *api) identify(r *http.Request) (service.Identity, error) {
	if isLocal(r) {
		return service.LocalRoot(), nil
	}
	from := forward.Caller(r)
	return a.svc.Access.Identify(service.Presented{Token: bearer(r), ClientCert: from.ClientCert, Peer: from.Peer, PeerKey: from.PeerKey,
		Node: from.Node != "", Local: from.Local, Hint: "a token (Authorization: Bearer ...)"})
}

// errorTable maps service errors to HTTP status and a stable code. First match wins.
var errorTable = []struct {
	err    error
	status int
	code   string
}{
	{service.ErrWrongPassphrase, http.StatusBadRequest, "wrong_passphrase"},
	{service.ErrPassphraseLength, http.StatusBadRequest, "invalid_passphrase"},
	{service.ErrMachineMismatch, http.StatusConflict, "auto_open_wrong_machine"},
	{service.ErrAutoOpenDisabled, http.StatusConflict, "auto_open_disabled"},
	{service.ErrAutoOpenStale, http.StatusConflict, "auto_open_stale"},
	{service.ErrKeystoreDamaged, http.StatusServiceUnavailable, "keystore_damaged"},
	{service.ErrReadOnly, http.StatusServiceUnavailable, "read_only_restricted"},
	{service.ErrNotLeaderNow, http.StatusServiceUnavailable, "not_leader"},
	{service.ErrOutcomeUnknown, http.StatusServiceUnavailable, "outcome_unknown"},
	{service.ErrUnauthenticated, http.StatusUnauthorized, "unauthenticated"},
	{service.ErrForbidden, http.StatusForbidden, "forbidden"},
	{service.ErrThrottled, http.StatusTooManyRequests, "throttled"},
	{service.ErrInvalid, http.StatusBadRequest, "invalid_request"},
	{service.ErrState, http.StatusConflict, "invalid_state"},
	{service.ErrGone, http.StatusGone, "destroyed"},
	{service.ErrNotFound, http.StatusNotFound, "not_found"},
	{service.ErrConflict, http.StatusConflict, "conflict"},
	{service.ErrTampered, http.StatusConflict, "audit_tampered"},
	{service.ErrAlreadyInit, http.StatusConflict, "already_initialized"},
	{service.ErrAlreadyOpen, http.StatusConflict, "already_open"},
	{service.ErrUninitialized, http.StatusNotImplemented, "uninitialized"},
	{service.ErrSealed, http.StatusServiceUnavailable, "sealed"},
	{service.ErrWriteUnavailable, http.StatusServiceUnavailable, "writes_unavailable"},
	{service.ErrStopping, http.StatusServiceUnavailable, "stopping"},
	{service.ErrUnavailable, http.StatusServiceUnavailable, "unavailable"},
}

func (a *api) fail(w http.ResponseWriter, r *http.Request, err error) {
	status, code, msg := a.classify(r, err)
	writeErr(w, status, code, msg)
}

// classify maps err through the error table to a status, code and the
// message the client gets. An unexpected error's text may name files,
// peers or internals: the client gets an id to quote, the log gets the
// detail.
func (a *api) classify(r *http.Request, err error) (status int, code, msg string) {
	for _, e := range errorTable {
		if errors.Is(err, e.err) {
			return e.status, e.code, err.Error()
		}
	}
	if r.Context().Err() != nil && errors.Is(err, context.Canceled) {
		// The request was cancelled (a fast stop cancels those in
		// progress) and the call gave up for that reason.
		return http.StatusServiceUnavailable, "canceled", "the request was cancelled before it finished: the server is stopping, or the client went away"
	}
	id := newErrorID()
	a.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "error_id", id, "error", err)
	return http.StatusInternalServerError, "internal", InternalMessage(id)
}

// InternalMessage is what a client is told of an unexpected error.
func InternalMessage(id string) string {
	return "internal error; the server log has the details under error_id " + id
}

// newErrorID is a random id that ties a 500 answer to its log line.
func newErrorID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// reply writes v with status, or the error.
func (a *api) reply(w http.ResponseWriter, r *http.Request, status int, v any, err error) {
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, status, v)
}

// ErrorBody is the one error shape of the API.
type ErrorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func writeErr(w http.ResponseWriter, status int, code, msg string) {
	if n, ok := w.(errNoter); ok {
		n.noteError(code, msg)
	}
	var b ErrorBody
	b.Error.Code, b.Error.Message = code, msg
	writeJSON(w, status, b)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	sendJSON(w, status, v) // #nosec G104 -- the API's response types always encode, so an error is a failed write: the client has gone; nothing to tell it
}

// sendJSON is writeJSON for a handler that must know whether the answer
// was written.
func sendJSON(w http.ResponseWriter, status int, v any) error {
	if o, ok := v.(service.Object); ok {
		bp := objectBufs.Get().(*[]byte)
		defer func() {
			if cap(*bp) <= maxPooledObjectBuf {
				objectBufs.Put(bp)
			}
		}()
		if b, ok := appendObjectJSON((*bp)[:0], &o); ok {
			*bp = append(b, '\n')
			jsonwire.SetHeaders(w.Header())
			w.WriteHeader(status)
			_, err := w.Write(*bp)
			return err
		}
	}
	jsonwire.SetHeaders(w.Header())
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(v)
}

// decode reads a JSON body strictly: size-limited, unknown fields refused,
// one value only.
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	r.Body = http.MaxBytesReader(w, r.Body, MaxBody)
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fmt.Errorf("%w: body larger than %d bytes", service.ErrInvalid, MaxBody)
		}
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("%w: empty body, expected a JSON object", service.ErrInvalid)
		}
		var b64 base64.CorruptInputError
		if errors.As(err, &b64) {
			// encoding/json names neither the field nor the encoding.
			return fmt.Errorf("%w: malformed JSON body: a binary field (such as \"value\") is not standard base64 with padding: %v", service.ErrInvalid, err)
		}
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return fmt.Errorf("%w: malformed JSON body: %q: got %s, want %s", service.ErrInvalid, te.Field, article(te.Value), jsonKind(te.Type))
		}
		return fmt.Errorf("%w: malformed JSON body: %v", service.ErrInvalid, err)
	}
	// dec.More is false for a stray "}" or "]": look at what follows.
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: trailing data after the JSON object", service.ErrInvalid)
	}
	return nil
}

// article is a JSON kind as encoding/json names it ("number", "array")
// with its article.
func article(kind string) string {
	if kind == "array" || kind == "object" {
		return "an " + kind
	}
	return "a " + kind
}

// jsonKind names, in JSON's words, what a field of Go type t takes.
func jsonKind(t reflect.Type) string {
	if t == nil {
		return "another type"
	}
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == reflect.TypeFor[time.Time]() {
		return "an RFC 3339 time string"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return "a base64 string"
		}
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	}
	return "another type"
}

func bearer(r *http.Request) string {
	if h := r.Header.Get("Authorization"); strings.HasPrefix(h, "Bearer ") {
		return strings.TrimSpace(strings.TrimPrefix(h, "Bearer "))
	}
	return r.Header.Get("X-Coffer-Token")
}

// Health answers like Vault's sys/health: 200 open (the leader, or a
// standalone node), 429 a standby (follower), 503 sealed or without quorum
// (read-only restricted mode), 501 uninitialised.
type Health struct {
	Initialized  bool   `json:"initialized"`
	Sealed       bool   `json:"sealed"`
	State        string `json:"state"`
	Version      string `json:"version"`
	ClusterID    string `json:"cluster_id,omitempty"`
	Role         string `json:"role,omitempty" doc:"standalone, leader, follower or read-only"`
	AppliedIndex uint64 `json:"applied_index,omitempty"`
	// CaughtUp: this node has applied, since it opened, what the leader
	// had committed; until then its default reads go to the leader.
	CaughtUp *bool `json:"caught_up,omitempty" doc:"false on a follower still catching up since it opened (its reads go to the leader)"`
	// LeaderCommit: the leader's commit index as this node knows it (the
	// leader's own on the leader); RaftApplied: the raft index applied here.
	LeaderCommit uint64 `json:"leader_commit_index,omitempty"`
	RaftApplied  uint64 `json:"raft_applied_index,omitempty"`
}

func (a *api) health(w http.ResponseWriter, r *http.Request) {
	st := a.svc.State()
	h := Health{Initialized: st != service.StateUninitialized, Sealed: st != service.StateOpen, State: st, Version: service.Version}
	code := http.StatusOK
	switch st {
	case service.StateUninitialized:
		code = http.StatusNotImplemented
	case service.StateSealed:
		code = http.StatusServiceUnavailable
	default:
		h.Role, h.AppliedIndex = a.svc.Cluster.Role(), a.svc.Cluster.AppliedIndex()
		cu := a.svc.Cluster.CatchUpStatus()
		h.CaughtUp, h.LeaderCommit, h.RaftApplied = &cu.CaughtUp, cu.LeaderCommit, cu.RaftApplied
		switch h.Role {
		case "follower":
			code = http.StatusTooManyRequests // a standby, as Vault answers: load balancers route to the leader
		case "read-only":
			code = http.StatusServiceUnavailable
		}
	}
	writeJSON(w, code, h)
}

// secret copies a passphrase from its decoded JSON string into a byte
// slice the handler clears when done (defer clear). The string itself
// cannot be cleared: Go strings are immutable (docs/security.md, "Memory").
func secret(s string) []byte { return []byte(s) }

// PassphraseRequest is the body of init and open.
type PassphraseRequest struct {
	Passphrase string `json:"passphrase"`
	Auto       bool   `json:"auto,omitempty"` // open only: use keystore.aks (needs a system administrator)
}

// InitResponse carries the root token, shown once.
type InitResponse struct {
	RootToken string `json:"root_token"`
}

func (a *api) init(w http.ResponseWriter, r *http.Request) {
	var req PassphraseRequest
	if err := decode(w, r, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	id := service.Identity{Name: "anonymous"}
	if isLocal(r) {
		id = service.LocalRoot()
	}
	pass := secret(req.Passphrase)
	defer clear(pass)
	tok, err := a.svc.Init(r.Context(), id, pass)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, InitResponse{RootToken: tok})
}

// optionalDuration parses an optional Go duration field of a request
// ("": zero).
func optionalDuration(field, v string) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%w: %s %q: a Go duration such as 30m or 8h", service.ErrInvalid, field, v)
	}
	return d, nil
}

// RootTokenRequest asks for a root token; the body is optional.
type RootTokenRequest struct {
	TTL string `json:"ttl,omitempty" doc:"Go duration, 1m to 8760h; empty: the token does not expire"`
}

// RootTokenList lists root tokens.
type RootTokenList struct {
	Tokens []service.RootTokenInfo `json:"tokens"`
}

func (a *api) listRootTokens(w http.ResponseWriter, r *http.Request) {
	toks, err := a.svc.Access.ListRootTokens(r.Context())
	a.reply(w, r, http.StatusOK, RootTokenList{Tokens: toks}, err)
}

func (a *api) revokeRootToken(w http.ResponseWriter, r *http.Request) {
	acc, err := a.svc.Access.RevokeRootToken(r.Context(), r.PathValue("accessor"))
	a.reply(w, r, http.StatusOK, map[string]string{"revoked": acc}, err)
}

func (a *api) rootToken(w http.ResponseWriter, r *http.Request) {
	var req RootTokenRequest
	if err := decodeOptional(w, r, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	ttl, err := optionalDuration("ttl", req.TTL)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	id := service.CallFrom(r.Context()).Identity
	tok, err := a.svc.CreateRootToken(r.Context(), id, ttl)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, InitResponse{RootToken: tok})
}

func (a *api) open(w http.ResponseWriter, r *http.Request) {
	var req PassphraseRequest
	if err := decode(w, r, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	var err error
	if req.Auto {
		err = a.svc.OpenAuto(r.Context())
	} else {
		pass := secret(req.Passphrase)
		defer clear(pass)
		err = a.svc.Open(r.Context(), pass)
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, a.svc.Status())
}

func (a *api) seal(w http.ResponseWriter, r *http.Request) {
	if err := a.svc.Seal(r.Context()); err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, a.svc.Status())
}

func (a *api) status(w http.ResponseWriter, r *http.Request) {
	st, err := a.svc.StatusFor(r.Context())
	a.reply(w, r, http.StatusOK, st, err)
}

// StopRequest selects a stop mode.
type StopRequest struct {
	Mode string `json:"mode"`
}

func (a *api) stopServer(w http.ResponseWriter, r *http.Request) {
	if err := a.svc.Authorize(r.Context(), service.RoleSystemAdmin, "stopping the server"); err != nil {
		a.fail(w, r, err)
		return
	}
	var req StopRequest
	if err := decode(w, r, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	switch req.Mode {
	case "", "smart", "fast", "immediate":
	default:
		a.fail(w, r, fmt.Errorf("%w: stop mode %q: use smart, fast or immediate", service.ErrInvalid, req.Mode))
		return
	}
	if req.Mode == "" {
		req.Mode = "smart"
	}
	if a.stop == nil {
		a.fail(w, r, fmt.Errorf("%w: this server cannot be stopped over the API", service.ErrUnavailable))
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"mode": req.Mode, "pid": strconv.Itoa(a.svc.Status().PID)})
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	go a.stop(req.Mode)
}

// GenerationResponse reports a key generation.
type GenerationResponse struct {
	Generation uint32 `json:"generation"`
}

func (a *api) rotateMasterKey(w http.ResponseWriter, r *http.Request) {
	gen, err := a.svc.RotateMasterKey(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, GenerationResponse{Generation: gen})
}

func (a *api) rotateDataKey(w http.ResponseWriter, r *http.Request) {
	id, err := a.svc.RotateDataKey(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, GenerationResponse{Generation: id})
}

// ChangePassphraseRequest is the body of change-passphrase.
type ChangePassphraseRequest struct {
	Old string `json:"old_passphrase"`
	New string `json:"new_passphrase"`
}

func (a *api) changePassphrase(w http.ResponseWriter, r *http.Request) {
	var req ChangePassphraseRequest
	if err := decode(w, r, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	old, nw := secret(req.Old), secret(req.New)
	defer clear(old)
	defer clear(nw)
	if err := a.svc.ChangePassphrase(r.Context(), old, nw); err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]bool{"changed": true})
}

// ResetPassphraseRequest is the body of reset-passphrase.
type ResetPassphraseRequest struct {
	New string `json:"new_passphrase"`
}

func (a *api) resetPassphrase(w http.ResponseWriter, r *http.Request) {
	id := service.CallFrom(r.Context()).Identity
	var req ResetPassphraseRequest
	if err := decode(w, r, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	nw := secret(req.New)
	defer clear(nw)
	if err := a.svc.ResetPassphrase(r.Context(), id, nw); err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]bool{"reset": true})
}

func (a *api) enableAutoOpen(w http.ResponseWriter, r *http.Request) {
	if err := a.svc.EnableAutoOpen(r.Context()); err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]bool{"auto_open": true})
}

func (a *api) disableAutoOpen(w http.ResponseWriter, r *http.Request) {
	if err := a.svc.DisableAutoOpen(r.Context()); err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]bool{"auto_open": false})
}

func (a *api) journalList(w http.ResponseWriter, r *http.Request) {
	segs, err := a.svc.JournalSegments(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := make([]Segment, 0, len(segs))
	for _, sg := range segs {
		out = append(out, segmentOf(sg))
	}
	writeJSON(w, http.StatusOK, JournalList{Segments: out})
}

// JournalArchived answers an archive-now request.
type JournalArchived struct {
	Archived bool   `json:"archived"`
	Note     string `json:"note,omitempty" doc:"archiving destinations skipped because their archiving is paused"`
}

func (a *api) journalArchive(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("progress") != "ndjson" {
		note, err := a.svc.Backups.ArchiveNowNote(r.Context(), nil)
		a.reply(w, r, http.StatusOK, JournalArchived{Archived: true, Note: note}, err)
		return
	}
	// Progress as each destination starts and after each segment shipped,
	// then {"archived":true}.
	st := a.ndjson(w, r)
	note, err := a.svc.Backups.ArchiveNowNote(r.Context(), func(p service.ArchiveProgress) { st.progress(p) })
	st.finish(JournalArchived{Archived: true, Note: note}, err)
}

// JournalPruneRequest asks for a journal prune; the body is optional.
type JournalPruneRequest struct {
	DryRun bool `json:"dry_run,omitempty"`
}

// JournalPruned answers a prune: the floor, what holds it, and the
// segments removed (or that would be, with dry_run).
type JournalPruned struct {
	Floor        uint64    `json:"floor"`
	Holder       string    `json:"holder,omitempty"`
	KeepSegments int       `json:"keep_segments"`
	DryRun       bool      `json:"dry_run,omitempty"`
	Removed      []Segment `json:"removed"`
	Kept         int       `json:"kept"`
}

func (a *api) journalPrune(w http.ResponseWriter, r *http.Request) {
	var req JournalPruneRequest
	if err := decodeOptional(w, r, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	p, err := a.svc.Backups.PruneJournal(r.Context(), req.DryRun)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := JournalPruned{Floor: p.Floor, Holder: p.Holder, KeepSegments: p.Keep, DryRun: p.DryRun, Removed: make([]Segment, 0, len(p.Removed)), Kept: p.Kept}
	for _, sg := range p.Removed {
		out.Removed = append(out.Removed, segmentOf(sg))
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *api) journalRotate(w http.ResponseWriter, r *http.Request) {
	seg, err := a.svc.RotateJournal(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, JournalRotated{Closed: segmentOf(seg)})
}
