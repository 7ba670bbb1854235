// Package ui is the web console under /ui/: server-rendered html/template
// pages, no JavaScript. Every action is a request to the same API handler
// REST clients use (in process, with the signed-in user's session token),
// so authorisation, forwarding to the leader, throttling and audit are the
// API's. The console only decides which buttons to offer from the user's
// roles; a forced form is refused by the API.
package ui

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/coffer-kms/coffer/internal/service"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Prefix is where the console is served.
const Prefix = "/ui/"

const (
	sessionCookie = "coffer_session"
	loginCookie   = "coffer_login"
	csrfField     = "csrf"
	// apiTimeout bounds one API call the console makes (a backup verify
	// runs longest).
	apiTimeout = 5 * time.Minute
)

// Options configure the console.
type Options struct {
	// API is the server's whole HTTP handler (forwarding, audit, routes):
	// the console's requests go through it like a REST client's.
	API http.Handler
	// IsLocal reports a request from the control socket: the console is
	// for browsers on the HTTPS listener only.
	IsLocal func(*http.Request) bool
	// Runbooks is the base URL runbook paths (docs/runbooks/x.md) are
	// linked under; empty: the project's repository.
	Runbooks string
}

// UI is the console handler.
type UI struct {
	svc  *service.Service
	opts Options
	tmpl map[string]*template.Template

	mu   sync.Mutex
	jobs map[string]*job // running and recent verifications
}

// New builds the console. Set Options.API (SetAPI) before serving.
func New(svc *service.Service, opts Options) *UI {
	if opts.Runbooks == "" {
		opts.Runbooks = "https://github.com/coffer-kms/coffer/blob/main/"
	}
	return &UI{svc: svc, opts: opts, tmpl: parseTemplates(), jobs: map[string]*job{}}
}

// SetAPI sets the handler the console calls (built after the console is
// mounted in it).
func (u *UI) SetAPI(h http.Handler) { u.opts.API = h }

var funcs = template.FuncMap{
	"join": strings.Join,
	"age": func(v any) string {
		s, _ := v.(string)
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return ""
		}
		return time.Since(t).Round(time.Second).String()
	},
	"pct": func(v any) string {
		switch n := v.(type) {
		case json.Number:
			f, _ := n.Float64()
			return fmt.Sprintf("%.1f %%", f)
		}
		return ""
	},
	// level is the CSS class of a disk-use level the API reports: ok,
	// warn (warning: 80 %), err (error: 95 %), or "" (unknown).
	"level": func(v any) string {
		switch fmt.Sprint(v) {
		case "ok":
			return "ok"
		case "warning":
			return "warn"
		case "error":
			return "err"
		}
		return ""
	},
	// bytes shows a byte count ("1.5 GiB").
	"bytes": func(v any) string {
		n, ok := v.(json.Number)
		if !ok {
			return ""
		}
		f, err := n.Float64()
		if err != nil {
			return ""
		}
		units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB"}
		i := 0
		for ; f >= 1024 && i < len(units)-1; i++ {
			f /= 1024
		}
		if i == 0 {
			return fmt.Sprintf("%.0f B", f)
		}
		return fmt.Sprintf("%.1f %s", f, units[i])
	},
	"has": func(list any, v any) bool {
		l, _ := list.([]any)
		for _, x := range l {
			if fmt.Sprint(x) == fmt.Sprint(v) {
				return true
			}
		}
		return false
	},
	// seconds shows a number of seconds as a duration ("1m30s").
	"seconds": func(v any) string {
		n, ok := v.(json.Number)
		if !ok {
			return ""
		}
		f, err := n.Float64()
		if err != nil {
			return ""
		}
		if f > 0 && f < 1 {
			return "under 1s"
		}
		return time.Duration(f * float64(time.Second)).Round(time.Second).String()
	},
	"list":  func(s ...string) []string { return s },
	"list2": func(a, b any) []any { return []any{a, b} },
	"eq":    func(a, b any) bool { return fmt.Sprint(a) == fmt.Sprint(b) },
}

func parseTemplates() map[string]*template.Template {
	base := template.Must(template.New("base.html").Funcs(funcs).ParseFS(templateFS, "templates/base.html"))
	pages, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		panic(err)
	}
	out := map[string]*template.Template{}
	for _, p := range pages {
		name := strings.TrimSuffix(strings.TrimPrefix(p, "templates/"), ".html")
		if name == "base" {
			continue
		}
		out[name] = template.Must(template.Must(base.Clone()).ParseFS(templateFS, p))
	}
	return out
}

// ServeHTTP serves /ui/.
func (u *UI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// The console's own requests are not API routes: the API calls it
	// makes are audited by the API.
	service.MarkAudited(r.Context())
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	if u.opts.IsLocal != nil && u.opts.IsLocal(r) {
		u.refuse(w, r, service.Identity{}, http.StatusNotFound, "not_found", "the console is served on the HTTPS listener")
		return
	}
	path := strings.TrimPrefix(r.URL.Path, "/ui")
	if strings.HasPrefix(path, "/static/") {
		h.Set("Cache-Control", "public, max-age=3600")
		http.StripPrefix("/ui/", http.FileServer(http.FS(staticFS))).ServeHTTP(w, r)
		return
	}
	// Pages may show secrets (tokens, material): never cached.
	h.Set("Cache-Control", "no-store")
	if path == "/login" {
		u.login(w, r)
		return
	}
	s, ok := u.session(r)
	if !ok {
		if r.Method == http.MethodGet {
			http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
			return
		}
		u.refuse(w, r, service.Identity{}, http.StatusUnauthorized, "unauthenticated", "not signed in")
		return
	}
	if r.Method == http.MethodPost {
		if err := r.ParseForm(); err != nil {
			http.Error(w, "bad form", http.StatusBadRequest)
			return
		}
		if !hmac.Equal([]byte(r.PostFormValue(csrfField)), []byte(s.CSRF)) {
			u.refuse(w, r, s.id, http.StatusForbidden, "csrf", "missing or wrong CSRF token")
			return
		}
	} else if r.Method != http.MethodGet && r.Method != http.MethodHead {
		u.refuse(w, r, s.id, http.StatusMethodNotAllowed, "method_not_allowed", "method not allowed")
		return
	}
	p := &page{u: u, w: w, r: r, s: s, Data: map[string]any{}}
	switch path {
	case "/", "":
		p.monitor()
	case "/logout":
		p.logout()
	case "/keys":
		p.keys()
	case "/keys/object":
		p.object()
	case "/endpoints":
		p.endpoints()
	case "/backups":
		p.backups()
	case "/backups/progress":
		p.progress()
	case "/backups/verify":
		p.verifyProgress()
	case "/restore":
		p.restore()
	case "/cluster":
		p.cluster()
	case "/audit":
		p.audit()
	case "/users":
		p.users()
	default:
		u.refuse(w, r, s.id, http.StatusNotFound, "not_found", fmt.Sprintf("no console page %q", r.URL.Path))
	}
}

// sess is the signed-in user.
type sess struct {
	Token string
	CSRF  string
	User  string
	id    service.Identity
	Sys   bool // system_admin
	Key   bool // key_admin
	Aud   bool // audit_manager
}

// csrf is the CSRF token of a session: an HMAC keyed by the session token
// itself. Only a holder of the session token can compute it, the token
// cannot be recovered from it, and every node of a cluster computes the
// same one before and after a restart (sessions are replicated), so a page
// loaded before a restart or from another node still posts.
func csrf(tok string) string {
	m := hmac.New(sha256.New, []byte(tok))
	m.Write([]byte("coffer console csrf v1")) // #nosec G104 -- hash writes never fail
	return hex.EncodeToString(m.Sum(nil))
}

func (u *UI) session(r *http.Request) (*sess, bool) {
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" {
		return nil, false
	}
	id, err := u.svc.Access.Authenticate(c.Value)
	if err != nil || id.Kind == service.KindEndpoint {
		return nil, false
	}
	return &sess{Token: c.Value, CSRF: csrf(c.Value), User: id.Name, id: id,
		Sys: id.Has(service.RoleSystemAdmin), Key: id.Has(service.RoleKeyAdmin), Aud: id.Has(service.RoleAuditManager)}, true
}

// apiResult is an API answer: its status and decoded body.
type apiResult struct {
	Status int
	Body   map[string]any
	Raw    []byte
	Err    string // the API's error message, for status >= 400
}

func (a apiResult) ok() bool { return a.Status < 300 }

// recorder is the response of an in-process API call.
type recorder struct {
	h      http.Header
	status int
	buf    bytes.Buffer
	// line, if set, receives each line of an application/x-ndjson answer
	// (progress) as it is written; read is how far the buffer was read.
	line func(map[string]any)
	read int
}

func (r *recorder) Header() http.Header { return r.h }
func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
}
func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.buf.Write(b)
	if r.line != nil && strings.HasPrefix(r.h.Get("Content-Type"), "application/x-ndjson") {
		for {
			i := bytes.IndexByte(r.buf.Bytes()[r.read:], '\n')
			if i < 0 {
				break
			}
			d := json.NewDecoder(bytes.NewReader(r.buf.Bytes()[r.read : r.read+i]))
			d.UseNumber()
			var m map[string]any
			if d.Decode(&m) == nil {
				r.line(m)
			}
			r.read += i + 1
		}
	}
	return n, err
}

// Flush: the lines are handed over as they are written.
func (r *recorder) Flush() {}

// call makes an API request as the signed-in user (tok) from the browser's
// address, through the server's handler.
func (u *UI) call(r *http.Request, tok, method, path string, body any) apiResult {
	ctx, cancel := context.WithTimeout(r.Context(), apiTimeout)
	defer cancel()
	return u.callWith(ctx, r, tok, method, path, body, &recorder{h: http.Header{}})
}

// callWith is call with the request's context and the response writer given.
func (u *UI) callWith(ctx context.Context, r *http.Request, tok, method, path string, body any, rec *recorder) apiResult {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return apiResult{Status: 500, Err: err.Error()}
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, path, rd)
	if err != nil {
		return apiResult{Status: 500, Err: err.Error()}
	}
	req.RemoteAddr, req.Host, req.TLS = r.RemoteAddr, r.Host, r.TLS
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "coffer-console")
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	u.opts.API.ServeHTTP(rec, req)
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	res := apiResult{Status: rec.status, Raw: rec.buf.Bytes()}
	if rec.buf.Len() > 0 && strings.HasPrefix(rec.h.Get("Content-Type"), "application/json") {
		d := json.NewDecoder(bytes.NewReader(rec.buf.Bytes()))
		d.UseNumber()
		var m map[string]any
		if d.Decode(&m) == nil {
			res.Body = m
		}
	}
	if res.Status >= 400 {
		res.Err = http.StatusText(res.Status)
		if e, ok := res.Body["error"].(map[string]any); ok {
			res.Err = fmt.Sprint(e["message"])
		}
	}
	return res
}

// page is one request to a signed-in page.
type page struct {
	u      *UI
	w      http.ResponseWriter
	r      *http.Request
	s      *sess
	Data   map[string]any
	Flash  string
	Error  string
	status int
	Title  string
	Nav    string
	// Refresh: seconds after which the page reloads itself (meta refresh).
	Refresh int
}

func (p *page) get(path string) map[string]any {
	res := p.u.call(p.r, p.s.Token, "GET", path, nil)
	if !res.ok() {
		if p.Error == "" {
			p.Error = res.Err
		}
		return map[string]any{}
	}
	return res.Body
}

// do runs a state-changing API call and notes its result for the page.
func (p *page) do(method, path string, body any, done string) apiResult {
	res := p.u.call(p.r, p.s.Token, method, path, body)
	if res.ok() {
		p.Flash = done
	} else {
		p.Error, p.status = res.Err, res.Status
	}
	return res
}

func (p *page) form(k string) string { return strings.TrimSpace(p.r.PostFormValue(k)) }
func (p *page) q(k string) string    { return strings.TrimSpace(p.r.URL.Query().Get(k)) }
func (p *page) post() bool           { return p.r.Method == http.MethodPost }

// forbidden answers a form the user's roles do not offer (posted
// anyway): the API would refuse it too, so the console does not call it,
// and audits the refusal as the API would.
func (p *page) forbidden(what string) {
	p.Error, p.status = "forbidden: "+what, http.StatusForbidden
	p.u.audit(p.r, p.s.id, "uiForbidden", http.StatusForbidden, "forbidden", what)
}

// refuse answers a request the console itself refuses, and audits it
// ("ui" and the code: uiCSRF, uiNotFound...). Pages are audited by the API
// calls they make; the sign-in page, the stylesheet and the redirect to
// sign in carry nothing and are not, like the API's health.
func (u *UI) refuse(w http.ResponseWriter, r *http.Request, id service.Identity, status int, code, msg string) {
	op := "ui"
	for _, part := range strings.Split(code, "_") {
		op += strings.ToUpper(part[:1]) + part[1:]
	}
	if code == "csrf" {
		op = "uiCSRF"
	}
	u.audit(r, id, op, status, code, msg)
	http.Error(w, msg, status)
}

// audit records a refusal of the console itself.
func (u *UI) audit(r *http.Request, id service.Identity, op string, status int, code, msg string) {
	u.svc.Audit(&service.Call{Identity: id, Source: r.RemoteAddr, Transport: "ui", Start: time.Now()}, op, status, code, msg)
}

func (p *page) render(name string) {
	t, ok := p.u.tmpl[name]
	if !ok {
		http.Error(p.w, "no template "+name, http.StatusInternalServerError)
		return
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "base.html", p); err != nil {
		http.Error(p.w, "render: "+err.Error(), http.StatusInternalServerError)
		return
	}
	p.w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if p.status != 0 {
		p.w.WriteHeader(p.status)
	}
	p.w.Write(buf.Bytes()) // #nosec G104 -- the client went away; nothing to do
}

// S is the session for templates.
func (p *page) S() *sess { return p.s }

// Runbook is the link of a runbook path.
func (p *page) Runbook(path string) string { return p.u.opts.Runbooks + path }

// RunbookText is the cause and steps of the runbook at path, if known.
func (p *page) RunbookText(path any) *Runbook {
	s, _ := path.(string)
	if rb, ok := runbook(s); ok {
		return &rb
	}
	return nil
}

func esc(s string) string  { return url.PathEscape(s) }
func qesc(s string) string { return url.QueryEscape(s) }
