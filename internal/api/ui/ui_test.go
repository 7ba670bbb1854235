package ui

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/coffer-kms/coffer/internal/api/rest"
	"github.com/coffer-kms/coffer/internal/service"
	"github.com/coffer-kms/coffer/internal/service/servicetest"
)

const hostile = `<script>alert("x")</script>`

// jsonData is the data of a page as the API would answer it: decoded with
// numbers kept, as call does.
func jsonData(t *testing.T, s string) map[string]any {
	t.Helper()
	d := json.NewDecoder(strings.NewReader(s))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestConsoleTemplatesRenderEmptyAndFull renders every page with no data and with
// every field filled by a hostile name, which must come out escaped.
func TestConsoleTemplatesRenderEmptyAndFull(t *testing.T) {
	u := &UI{opts: Options{Runbooks: "https://example.invalid/"}, tmpl: parseTemplates()}
	h := strings.ReplaceAll(hostile, `"`, `\"`)
	obj := `{"id":"` + h + `","wallet":"` + h + `","name":"` + h + `","type":"symmetric_key","state":"active","attributes":{"` + h + `":"` + h + `"},"versions":[{"version":1,"created":"2026-01-01T00:00:00Z"}],"latest_version":1,"grants":{"` + h + `":"read"},"roles":["` + h + `"],"description":"` + h + `"}`
	full := jsonData(t, `{
	 "status":{"state":"`+h+`","backup":{"frozen":true},"keystore_generation":2,"auto_open":true,"alerts":[{"code":"`+h+`","component":"`+h+`","message":"`+h+`","runbook":"docs/runbooks/disk-full.md"}],"warnings":[{"code":"W","message":"`+h+`"}],"journal":{"mirror":{"in_sync":false,"behind":3}},
	   "disks":[{"what":"data","path":"`+h+`","total_bytes":1000,"free_bytes":500,"used_percent":50,"level":"ok"},{"what":"journal","path":"/j","total_bytes":1000,"free_bytes":150,"used_percent":85,"level":"warning"},{"what":"mirror","path":"/m","total_bytes":1000,"free_bytes":10,"used_percent":99,"level":"error"},{"what":"destination:`+h+`","path":"/d","level":"unknown","error":"`+h+`"}]},
	 "cluster":{"role":"read-only","leader":"`+h+`","failover_threshold":"3s","nodes":[{"id":"`+h+`","voter":true,"leader":true,"reachable":true,"lag":3},{"id":"n2","voter":true,"reachable":false}]},
	 "destinations":[{"name":"`+h+`","location":"`+h+`","archiving":true,"archive_paused":true,"pending_segments":4,"archive_error":"`+h+`","usage":{"used_percent":96.5,"level":"error"}},{"name":"b","usage":{"used_percent":81,"level":"warning"},"drills":{"last_success":{"time":"2026-01-01T00:00:00Z","result":"OK"},"estimated_restore_seconds":90.4}}],
	 "last":{"`+h+`":{"id":"`+h+`","kind":"full","finished":"2026-01-01T00:00:00Z"}},
	 "wallets":[`+obj+`], "objects":[`+obj+`], "object":`+obj+`, "endpoints":[{"name":"`+h+`","state":"active"}],
	 "users":[{"name":"`+h+`","roles":["key_admin"]}], "roles":["system_admin","key_admin"],
	 "material":{"`+h+`":"`+h+`"},
	 "schedules":[{"name":"`+h+`","destination":"`+h+`","type":"cron","cron":"`+h+`","state":"ACTIVE","verify":true,"mode":"auto"},{"name":"p","kind":"verify","type":"once","state":"PAUSED","last_run":"2026-01-01T00:00:00Z","last_result":"`+h+`"},{"name":"d","type":"once","state":"DONE"}],
	 "catalog":[{"id":"`+h+`","destination":"`+h+`","kind":"full","status":"done","size":1234567,"first_index":1,"last_index":9,"verified":{"time":"2026-01-02T00:00:00Z","result":"FAILED","reason":"`+h+`"},"estimated_restore_seconds":61},{"id":"b2","kind":"incremental","status":"done"}],
	 "catalogFor":"`+h+`",
	 "preview":{"from":"`+h+`","object":`+obj+`,"restored_versions":[1]}, "choice":{"destination":"`+h+`","time":"`+h+`"},
	 "verified":[{"id":"`+h+`","result":"OK","reason":"`+h+`"}],
	 "recovery":{"set":true,"generation":1}, "current":{"id":"`+h+`","destination":"`+h+`"},
	 "running":{"id":"`+h+`","kind":"full","destination":"`+h+`","bytes_written":10}, "id":"`+h+`",
	 "points":[{"name":"`+h+`","index":5,"time":"2026-01-01T00:00:00Z"}], "command":"`+h+`", "from":"`+h+`",
	 "token":{"token":"`+h+`"}, "records":[{"seq":1,"actor":"`+h+`","operation":"`+h+`","objects":["`+h+`"],"result":"ok"}],
	 "report":{"records":1}, "next":3,
	 "actions":["rotate","destroy"]}`)
	full["query"] = url.Values{"wallet": {hostile}}
	full["job"] = job{Dest: hostile, File: hostile, Err: hostile, Finished: true, Results: []any{map[string]any{"id": hostile, "result": "OK"}}}
	for name := range u.tmpl {
		for _, data := range []map[string]any{{}, full} {
			for _, s := range []*sess{{}, {Token: "t", CSRF: hostile, User: hostile, Sys: true, Key: true, Aud: true}} {
				w := httptest.NewRecorder()
				p := &page{u: u, w: w, r: httptest.NewRequest("GET", "/ui/", nil), s: s, Data: data, Title: hostile, Flash: hostile, Error: hostile}
				p.render(name)
				body := w.Body.String()
				if w.Code != 200 {
					t.Fatalf("%s: status %d: %s", name, w.Code, body)
				}
				if strings.Contains(body, "<script") {
					t.Fatalf("%s: unescaped script:\n%s", name, body)
				}
				if !strings.Contains(body, "&lt;script&gt;") {
					t.Fatalf("%s: the hostile title is not shown escaped", name)
				}
				if name == "monitor" && len(data) > 0 && s.Token != "" && !strings.Contains(body, "<summary>Solution</summary>") {
					t.Fatalf("monitor: the alert's runbook steps are not shown:\n%s", body)
				}
				if name == "backups" && len(data) > 0 && s.Token != "" && (!strings.Contains(body, "1m30s") || !strings.Contains(body, "unknown (no drill)")) {
					t.Fatalf("backups: the estimated restore time of a drilled destination and of one never drilled are not shown:\n%s", body)
				}
				if name == "backups" && len(data) > 0 && s.Token != "" && (!strings.Contains(body, `<span class="err">FAILED</span> 2026-01-02T00:00:00Z`) ||
					!strings.Contains(body, "not verified") || !strings.Contains(body, "1m1s") || !strings.Contains(body, "1.2 MiB")) {
					t.Fatalf("backups: the catalog does not show verification, estimated restore time and size:\n%s", body)
				}
				if name == "monitor" && len(data) > 0 && s.Token != "" {
					for _, want := range []string{`<span class="ok">50.0 %</span>`, `<span class="warn">85.0 %</span>`, `<span class="err">99.0 %</span>`, `data-what="mirror"`, "500 B of 1000 B", "unknown</span> (&lt;script&gt;"} {
						if !strings.Contains(body, want) {
							t.Fatalf("monitor: disk use lacks %q:\n%s", want, body)
						}
					}
				}
				if name == "object" && len(data) > 0 && s.Sys && (!strings.Contains(body, `id="restore-confirm"`) || !strings.Contains(body, `<span class="ok">comes back</span>`)) {
					t.Fatalf("object: the restore preview is not shown with its confirmation:\n%s", body)
				}
				if strings.Contains(body, "<no value>") {
					t.Fatalf("%s: <no value> in the page", name)
				}
				checkLabels(t, name, body)
			}
		}
	}
}

var (
	controlRe = regexp.MustCompile(`(?s)<(input|select|textarea)\b[^>]*>`)
	labelRe   = regexp.MustCompile(`(?s)<label\b.*?</label>`)
)

// checkLabels: every visible form control sits inside a <label>.
func checkLabels(t *testing.T, name, body string) {
	t.Helper()
	inLabels := 0
	for _, l := range labelRe.FindAllString(body, -1) {
		inLabels += len(controlRe.FindAllString(l, -1))
	}
	visible := 0
	for _, c := range controlRe.FindAllString(body, -1) {
		if !strings.Contains(c, `type="hidden"`) {
			visible++
		}
	}
	if visible != inLabels {
		t.Fatalf("%s: %d visible form controls, %d inside a label", name, visible, inLabels)
	}
}

// console is a console on a real service and its REST API, over TLS.
type console struct {
	t   *testing.T
	srv *httptest.Server
	svc *service.Service
}

func newConsole(t *testing.T) *console {
	svc, _ := servicetest.NewOpen(t)
	api := rest.Handler(svc, rest.Options{})
	u := New(svc, Options{})
	mux := http.NewServeMux()
	mux.Handle(Prefix, u)
	mux.Handle("/", api)
	u.SetAPI(mux)
	srv := httptest.NewTLSServer(mux)
	t.Cleanup(srv.Close)
	for name, roles := range map[string][]service.Role{"alice": service.AllRoles, "bob": {service.RoleKeyAdmin}} {
		if _, err := svc.Access.CreateUser(servicetest.Root(), name, "password-"+name, roles); err != nil {
			t.Fatal(err)
		}
	}
	return &console{t: t, srv: srv, svc: svc}
}

// browser is a client with a cookie jar that does not follow redirects.
func (c *console) browser() *http.Client {
	jar, _ := cookiejar.New(nil)
	cl := *c.srv.Client() // a copy: each browser has its own jar
	cl.Jar = jar
	cl.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &cl
}

var csrfRe = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func (c *console) get(cl *http.Client, path string) (*http.Response, string) {
	c.t.Helper()
	resp, err := cl.Get(c.srv.URL + path)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func (c *console) post(cl *http.Client, path string, form url.Values) (*http.Response, string) {
	c.t.Helper()
	resp, err := cl.PostForm(c.srv.URL+path, form)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// login signs in and returns the CSRF token of the session.
func (c *console) login(cl *http.Client, user, pass string) (*http.Response, string) {
	c.t.Helper()
	_, body := c.get(cl, "/ui/login")
	m := csrfRe.FindStringSubmatch(body)
	if m == nil {
		c.t.Fatalf("no CSRF token on the login page:\n%s", body)
	}
	resp, body := c.post(cl, "/ui/login", url.Values{"csrf": {m[1]}, "username": {user}, "password": {pass}})
	if resp.StatusCode != http.StatusSeeOther {
		return resp, body
	}
	_, body = c.get(cl, "/ui/")
	m = csrfRe.FindStringSubmatch(body)
	if m == nil {
		c.t.Fatalf("no CSRF token on the home page:\n%s", body)
	}
	return resp, m[1]
}

func TestConsoleSignInHeadersAndCookie(t *testing.T) {
	c := newConsole(t)
	cl := c.browser()
	resp, _ := c.get(cl, "/ui/keys")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/login" {
		t.Fatalf("signed out: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, body := c.login(cl, "alice", "wrong")
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "sign-in failed") {
		t.Fatalf("wrong password: %d\n%s", resp.StatusCode, body)
	}
	resp, _ = c.login(cl, "alice", "password-alice")
	var sc *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == sessionCookie {
			sc = ck
		}
	}
	if sc == nil || !sc.Secure || !sc.HttpOnly || sc.SameSite != http.SameSiteStrictMode || sc.Path != "/ui/" {
		t.Fatalf("session cookie %+v", sc)
	}
	resp, body = c.get(cl, "/ui/")
	if resp.StatusCode != 200 || !strings.Contains(body, `id="state"`) {
		t.Fatalf("home: %d\n%s", resp.StatusCode, body)
	}
	csp := resp.Header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "default-src 'none'") || strings.Contains(csp, "unsafe-inline") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Fatalf("CSP %q", csp)
	}
	if resp.Header.Get("X-Frame-Options") != "DENY" || resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("headers %v", resp.Header)
	}
	if strings.Contains(body, "<script") {
		t.Fatal("a page has a script")
	}
}

func TestConsoleFormsNeedCSRFAndRoles(t *testing.T) {
	c := newConsole(t)
	cl := c.browser()
	_, csrf := c.login(cl, "alice", "password-alice")
	// Without the token: refused, nothing created.
	resp, _ := c.post(cl, "/ui/keys", url.Values{"action": {"create-wallet"}, "name": {"w1"}})
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("no CSRF token: %d", resp.StatusCode)
	}
	wrong := "0" + csrf[1:]
	if wrong == csrf {
		wrong = "1" + csrf[1:]
	}
	resp, _ = c.post(cl, "/ui/keys", url.Values{"csrf": {wrong}, "action": {"create-wallet"}, "name": {"w1"}})
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("wrong CSRF token: %d", resp.StatusCode)
	}
	if _, err := c.svc.Access.GetWallet(servicetest.Root(), "w1"); err == nil {
		t.Fatal("wallet created without a CSRF token")
	}
	if !audited(t, c.svc, "uiCSRF", "user:alice") {
		t.Fatal("the refused form is not audited")
	}
	if resp, _ := c.get(cl, "/ui/no-such-page"); resp.StatusCode != http.StatusNotFound || !audited(t, c.svc, "uiNotFound", "user:alice") {
		t.Fatalf("an unknown page: %d, or not audited", resp.StatusCode)
	}
	resp, body := c.post(cl, "/ui/keys", url.Values{"csrf": {csrf}, "action": {"create-wallet"}, "name": {"w1"}})
	if resp.StatusCode != 200 || !strings.Contains(body, "Wallet w1 created") {
		t.Fatalf("create wallet: %d\n%s", resp.StatusCode, body)
	}
	// A hostile object name is shown escaped.
	resp, body = c.post(cl, "/ui/keys", url.Values{"csrf": {csrf}, "action": {"create-object"}, "wallet": {"w1"}, "name": {hostile}, "type": {"symmetric_key"}})
	if resp.StatusCode == 200 {
		if strings.Contains(body, "<script") || !strings.Contains(body, "&lt;script&gt;") {
			t.Fatalf("hostile name not escaped:\n%s", body)
		}
	}
	// bob (key_admin only) is offered no backup form and is refused when
	// he posts it anyway.
	bob := c.browser()
	_, bcsrf := c.login(bob, "bob", "password-bob")
	_, body = c.get(bob, "/ui/backups")
	if strings.Contains(body, "Back up now") {
		t.Fatal("bob is offered a backup")
	}
	resp, _ = c.post(bob, "/ui/backups", url.Values{"csrf": {bcsrf}, "action": {"run"}, "destination": {"LOCAL"}})
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("bob forcing a backup: %d", resp.StatusCode)
	}
	if !audited(t, c.svc, "uiForbidden", "user:bob") {
		t.Fatal("the refused backup form is not audited")
	}
	resp, _ = c.post(bob, "/ui/users", url.Values{"csrf": {bcsrf}, "action": {"create"}, "name": {"eve"}, "password": {"password-eve"}})
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("bob creating a user: %d", resp.StatusCode)
	}
	// Logout ends the API session too.
	resp, body = c.post(cl, "/ui/logout", url.Values{"csrf": {csrf}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("logout: %d %s", resp.StatusCode, body)
	}
	resp, _ = c.get(cl, "/ui/keys")
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("after logout: %d", resp.StatusCode)
	}
}

// audited reports whether the audit log has a record of op by actor.
func audited(t *testing.T, svc *service.Service, op, actor string) bool {
	t.Helper()
	recs, err := svc.AuditRecords(servicetest.Root(), 1, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.Operation == op && r.Actor == actor {
			return true
		}
	}
	return false
}

func TestConsoleRunbookSections(t *testing.T) {
	rb, ok := runbook("docs/runbooks/disk-full.md")
	if !ok || rb.Title == "" || rb.Cause == "" || rb.Steps == "" || strings.Contains(rb.Steps, "## How to verify") {
		t.Fatalf("disk-full runbook: %v %+v", ok, rb)
	}
	for _, p := range []string{"docs/runbooks/no-such.md", "../../go.mod", "docs/runbooks/../README.md", ""} {
		if _, ok := runbook(p); ok && p != "docs/runbooks/../README.md" {
			t.Errorf("runbook %q found", p)
		}
	}
}

// A form's CSRF token depends only on the session: a page loaded before a
// restart of the server (a new console) or from another node still posts,
// and another session's token is refused.
func TestConsoleCSRFSurvivesARestart(t *testing.T) {
	c := newConsole(t)
	cl := c.browser()
	_, token := c.login(cl, "alice", "password-alice")
	bob := c.browser()
	_, bobToken := c.login(bob, "bob", "password-bob")

	// The same service behind a second console (what a restarted process
	// or another node builds); cookies are per host, so the browser sends
	// its session to it too.
	u := New(c.svc, Options{})
	mux := http.NewServeMux()
	mux.Handle(Prefix, u)
	mux.Handle("/", rest.Handler(c.svc, rest.Options{}))
	u.SetAPI(mux)
	srv := httptest.NewTLSServer(mux)
	defer srv.Close()
	restarted := &console{t: t, srv: srv, svc: c.svc}

	if resp, _ := restarted.post(cl, "/ui/keys", url.Values{"csrf": {bobToken}, "action": {"create-wallet"}, "name": {"w-other"}}); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("another session's CSRF token: %d", resp.StatusCode)
	}
	resp, body := restarted.post(cl, "/ui/keys", url.Values{"csrf": {token}, "action": {"create-wallet"}, "name": {"w-after"}})
	if resp.StatusCode != 200 || !strings.Contains(body, "Wallet w-after created") {
		t.Fatalf("a form from before the restart: %d\n%s", resp.StatusCode, body)
	}
}
