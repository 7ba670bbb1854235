// Package vault is Coffer's Vault-compatible subset under /v1: sys/health,
// sys/seal-status, sys/mounts, auth/token/lookup-self, KV v2 and Transit, with
// Vault's JSON envelopes, error shape and status codes, so that Vault
// clients (MariaDB's hashicorp_key_management plugin, the Go API client,
// the vault CLI) work unchanged. Like the native REST transport it only
// decodes, identifies the caller, calls the service and encodes: every
// permission check and every cryptographic operation is in the service.
//
// A mount is declared with POST /v1/sys/mounts/<path> (Vault's "secrets
// enable") and names the wallet it serves; see docs/reference/vault.md.
package vault

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coffer-kms/coffer/internal/api/forward"
	"github.com/coffer-kms/coffer/internal/jsonwire"
	"github.com/coffer-kms/coffer/internal/service"
)

// MaxBody is the largest request body accepted (a 1000-item Transit batch
// of 64 KiB plaintexts does not fit; Vault's own default is 32 MiB).
const MaxBody = 4 << 20

// Observer receives one call per finished request (metrics). The route is
// the operation name, a bounded set.
type Observer interface {
	ObserveRequest(transport, route, method string, code int, d time.Duration)
}

// Options for the handler.
type Options struct {
	Logger  *slog.Logger
	Metrics Observer
}

type api struct {
	svc     *service.Service
	log     *slog.Logger
	metrics Observer
}

// Handler serves /v1/ and tells its routes' facts.
func Handler(svc *service.Service, opts Options) forward.RoutedHandler {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &api{svc: svc, log: opts.Logger, metrics: opts.Metrics}
}

// request is one request being served.
type request struct {
	a     *api
	w     *recorder
	r     *http.Request
	call  *service.Call
	op    string // operation name (audit, metrics)
	reqID string
	body  map[string]json.RawMessage
	// warnings collects ignored body fields, reported as Vault does.
	warnings []string
}

// served is what ServeHTTP allocates for a request.
type served struct {
	q    request
	rec  recorder
	call service.Call
}

// recorder remembers the status and error of a response.
type recorder struct {
	http.ResponseWriter
	status int
	code   string
	msg    string
}

func (w *recorder) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

// handler is one route's function.
type handler func(q *request)

// route is what a path and method resolve to.
type route struct {
	op    string
	facts forward.Facts
	h     handler
}

// The facts of Vault routes: a token needed and served by the leader, or
// about this node and served where it arrives.
var (
	leader    = forward.Facts{Auth: true, Placement: forward.Leader}
	nodeLocal = forward.Facts{Auth: false, Placement: forward.NodeLocal}
	// leaderNoToken: a login, whose body is the credential.
	leaderNoToken = forward.Facts{Auth: false, Placement: forward.Leader}
)

// mk is a route whose audit action is "vault." and its operation (a mount's
// handler names the operation once the mount's type is known).
func mk(op string, f forward.Facts, h handler) route {
	f.Audit = auditAction(op)
	return route{op: op, facts: f, h: h}
}

// actions maps operation names to their audit actions ("vault." + op),
// so that routing a request builds no string. The operations are a small
// fixed set; the cache stops growing at maxActions all the same.
var (
	actions    sync.Map
	actionsLen atomic.Int32
)

const maxActions = 256

func auditAction(op string) string {
	if a, ok := actions.Load(op); ok {
		return a.(string)
	}
	a := "vault." + op
	if actionsLen.Load() < maxActions {
		if _, loaded := actions.LoadOrStore(op, a); !loaded {
			actionsLen.Add(1)
		}
	}
	return a
}

// quiet is rt without audit records (polled often: health, seal status).
func quiet(rt route) route { rt.facts.Audit = ""; return rt }

// RouteFacts is the facts of the route r is for (forward.Router).
func (a *api) RouteFacts(r *http.Request) (forward.Facts, bool) { return a.route(r).facts, true }

func (a *api) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	// The request, its recorder and its call in one allocation.
	s := &served{rec: recorder{ResponseWriter: w}, call: service.Call{Source: r.RemoteAddr, Transport: "vault", Start: start}}
	rec, call, q := &s.rec, &s.call, &s.q
	service.MarkAudited(r.Context()) // audited below, or deliberately not (no audit action)
	if !service.AttachCall(r.Context(), call) {
		r = r.WithContext(service.WithCall(r.Context(), call))
	}
	*q = request{a: a, w: rec, r: r, call: call, reqID: newRequestID()}
	rt := a.route(r)
	q.op = rt.op
	refused := refusedHeaders(r)
	switch id, err := a.identify(r); {
	case refused != nil:
		if err == nil {
			call.Identity = id
		}
		q.fail(refused)
	case err == nil:
		call.Identity = id
		rt.h(q)
	case rt.facts.Auth:
		q.fail(err)
	default:
		rt.h(q)
	}
	status := rec.status
	if status == 0 {
		status = http.StatusOK
	}
	d := time.Since(start)
	method := metricMethod(r.Method)
	// Checked first: the arguments (boxed values, the actor string) cost
	// allocations on every request even when debug logging is off.
	if a.log.Enabled(r.Context(), slog.LevelDebug) {
		a.log.Debug("request", "transport", "vault", "method", method, "route", q.op, "path", r.URL.Path,
			"status", status, "actor", call.Identity.Actor(), "source", call.Source, "latency", d)
	}
	if a.metrics != nil {
		a.metrics.ObserveRequest("vault", q.op, method, status, d)
	}
	if rt.facts.Audit == "" {
		return
	}
	code := "ok"
	if status >= 400 {
		code = rec.code
	}
	action := rt.facts.Audit
	if q.op != rt.op {
		// A mount's handler names the operation once the mount's type is known.
		action = auditAction(q.op)
	}
	a.svc.Audit(call, action, status, code, rec.msg)
}

func metricMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, "LIST":
		return m
	}
	return "other"
}

func newRequestID() string {
	var b [16]byte
	rand.Read(b[:])
	var h [36]byte
	hex.Encode(h[0:8], b[0:4])
	hex.Encode(h[9:13], b[4:6])
	hex.Encode(h[14:18], b[6:8])
	hex.Encode(h[19:23], b[8:10])
	hex.Encode(h[24:], b[10:])
	h[8], h[13], h[18], h[23] = '-', '-', '-', '-'
	return string(h[:])
}

// refusedHeaders refuses what a Vault client asks for and Coffer does not
// have: response wrapping (the client expects a one-time wrapping token in
// place of the answer, and may print or pass on what it gets) and a
// namespace other than the root one (the client expects that namespace's
// own mounts). A wrap TTL of zero asks for no wrapping (Vault wraps only
// for a TTL other than zero) and is served.
// The headers are looked up by their canonical keys (no allocation).
func refusedHeaders(r *http.Request) error {
	if v := r.Header["X-Vault-Wrap-Ttl"]; len(v) > 0 {
		if d, ok := parseDuration(v[0]); !ok || d != 0 {
			return fmt.Errorf("%w: X-Vault-Wrap-TTL: Coffer does not wrap responses; send the request without it", service.ErrInvalid)
		}
	}
	if v := r.Header["X-Vault-Namespace"]; len(v) > 0 {
		if ns := strings.Trim(v[0], "/ "); ns != "" && ns != "root" {
			return fmt.Errorf("%w: X-Vault-Namespace %q: Coffer has no namespaces; send the request without it", service.ErrInvalid, ns)
		}
	}
	return nil
}

// token returns the Vault token of a request: X-Vault-Token, else
// Authorization: Bearer.
func token(r *http.Request) string {
	if t := r.Header.Get("X-Vault-Token"); t != "" {
		return strings.TrimSpace(t)
	}
	if h := r.Header.Get("Authorization"); strings.HasPrefix(h, "Bearer ") {
		return strings.TrimSpace(strings.TrimPrefix(h, "Bearer "))
	}
	return ""
}

// identify resolves the caller from the token and/or an enrolled client
// certificate, as the native API does: when both are sent they must name
// the same endpoint.
func (a *api) identify(r *http.Request) (service.Identity, error) {
	from := forward.Caller(r)
	// Vault's API has no control-socket root and no node identity: a node
	// peer only forwards a client's token or certificate.
	return a.svc.Access.Identify(service.Presented{Token: token(r), ClientCert: from.ClientCert, Peer: from.Peer, PeerKey: from.PeerKey,
		Hint: "a token in X-Vault-Token (or Authorization: Bearer)"})
}

// errorTable maps service errors to Vault's status codes. First match wins.
// Vault answers 403 "permission denied" for a missing or invalid token too,
// and has no 409: conflicts and lifecycle refusals are 400.
var errorTable = []struct {
	err    error
	status int
	code   string
}{
	{service.ErrUnauthenticated, http.StatusForbidden, "unauthenticated"},
	{service.ErrForbidden, http.StatusForbidden, "forbidden"},
	{service.ErrThrottled, http.StatusTooManyRequests, "throttled"},
	{service.ErrInvalid, http.StatusBadRequest, "invalid_request"},
	{service.ErrState, http.StatusBadRequest, "invalid_state"},
	{service.ErrGone, http.StatusNotFound, "destroyed"},
	{service.ErrNotFound, http.StatusNotFound, "not_found"},
	{service.ErrConflict, http.StatusBadRequest, "conflict"},
	{service.ErrUninitialized, http.StatusServiceUnavailable, "uninitialized"},
	{service.ErrSealed, http.StatusServiceUnavailable, "sealed"},
	{service.ErrReadOnly, http.StatusServiceUnavailable, "read_only_restricted"},
	{service.ErrNotLeaderNow, http.StatusServiceUnavailable, "not_leader"},
	{service.ErrOutcomeUnknown, http.StatusServiceUnavailable, "outcome_unknown"},
	{service.ErrWriteUnavailable, http.StatusServiceUnavailable, "writes_unavailable"},
	{service.ErrStopping, http.StatusServiceUnavailable, "stopping"},
	{service.ErrUnavailable, http.StatusServiceUnavailable, "unavailable"},
}

// classify maps err through the table.
func classify(err error) (status int, code string) {
	for _, e := range errorTable {
		if errors.Is(err, e.err) {
			return e.status, e.code
		}
	}
	return http.StatusInternalServerError, "internal"
}

// errorBody is Vault's error shape.
type errorBody struct {
	Errors []string `json:"errors"`
}

// fail answers err in Vault's error shape. A not-found is {"errors":[]},
// which MariaDB's plugin and Vault clients read as "no such secret".
func (q *request) fail(err error) {
	status, code := classify(err)
	msg := err.Error()
	q.w.code, q.w.msg = code, msg
	body := errorBody{Errors: []string{msg}}
	switch status {
	case http.StatusNotFound:
		body.Errors = []string{}
	case http.StatusForbidden:
		// Vault clients look for "permission denied"; the service's own
		// message often starts with it already (ErrForbidden's text).
		if !strings.HasPrefix(msg, "permission denied") {
			msg = "permission denied: " + msg
		}
		body.Errors = []string{msg}
	case http.StatusInternalServerError:
		// The detail stays in the log, under the request id the client gets.
		q.a.log.Error("request failed", "method", q.r.Method, "path", q.r.URL.Path, "request_id", q.reqID, "error", err)
		msg = "internal error; the server log has the details under request_id " + q.reqID
		q.w.msg = msg
		body.Errors = []string{msg}
	}
	writeJSON(q.w, status, body)
}

// failStatus answers a transport-level error (unsupported path or method).
func (q *request) failStatus(status int, code, msg string) {
	q.w.code, q.w.msg = code, msg
	writeJSON(q.w, status, errorBody{Errors: []string{msg}})
}

// envelope is Vault's response shape.
type envelope struct {
	RequestID     string   `json:"request_id"`
	LeaseID       string   `json:"lease_id"`
	Renewable     bool     `json:"renewable"`
	LeaseDuration int      `json:"lease_duration"`
	Data          any      `json:"data"`
	WrapInfo      any      `json:"wrap_info"`
	Warnings      []string `json:"warnings"`
	Auth          any      `json:"auth"`
	MountType     string   `json:"mount_type,omitempty"`
}

// reply answers data in the envelope.
func (q *request) reply(status int, mountType string, data any) {
	writeJSON(q.w, status, envelope{RequestID: q.reqID, Data: data, Warnings: q.warningsOrNil(), MountType: mountType})
}

func (q *request) warningsOrNil() []string {
	if len(q.warnings) == 0 {
		return nil
	}
	return q.warnings
}

// noContent answers 204, as Vault does for writes without a response.
func (q *request) noContent() { q.w.WriteHeader(http.StatusNoContent) }

func writeJSON(w http.ResponseWriter, status int, v any) {
	jsonwire.SetHeaders(w.Header())
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v) // #nosec G104 -- the API's response types always encode, so an error is a failed write: the client has gone; nothing to tell it
}

// readBody reads the JSON object body (empty is an empty object). Fields a
// handler does not take are reported as warnings, like Vault does.
func (q *request) readBody() error {
	q.body = map[string]json.RawMessage{}
	b, err := io.ReadAll(http.MaxBytesReader(q.w, q.r.Body, MaxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fmt.Errorf("%w: body larger than %d bytes", service.ErrInvalid, MaxBody)
		}
		return fmt.Errorf("%w: reading the body: %v", service.ErrInvalid, err)
	}
	return parseBody(b, q.body)
}

// parseBody decodes b, a JSON object or nothing, into into.
func parseBody(b []byte, into map[string]json.RawMessage) error {
	if len(bytes.TrimSpace(b)) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&into); err != nil {
		return fmt.Errorf("%w: malformed JSON body: %v", service.ErrInvalid, err)
	}
	// dec.More is not enough: it is false for a stray "}" or "]".
	if len(bytes.TrimSpace(b[dec.InputOffset():])) > 0 {
		return fmt.Errorf("%w: trailing data after the JSON object", service.ErrInvalid)
	}
	if bytes.Equal(bytes.TrimSpace(b), []byte("null")) {
		return nil // Vault's clients send null for "no data" (vault write -f)
	}
	if into == nil {
		return fmt.Errorf("%w: the body must be a JSON object", service.ErrInvalid)
	}
	return nil
}

// take checks that the body has only the given fields; the others become a warning.
func (q *request) take(fields ...string) {
	var extra []string
	for k := range q.body {
		found := false
		for _, f := range fields {
			if k == f {
				found = true
			}
		}
		if !found {
			extra = append(extra, k)
		}
	}
	if len(extra) > 0 {
		q.warnings = append(q.warnings, fmt.Sprintf("Endpoint ignored these unrecognized parameters: %v", extra))
	}
}
