package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"

	"github.com/coffer-kms/coffer/internal/testutil"
)

// The console tests drive Debian's chromium with chromedp against a real
// coffer server. Every page they visit is kept as a screenshot in
// $COFFER_TEST_OUT/console (default test/e2e/out/console).

// screenshotDir is where the console tests keep their screenshots.
func screenshotDir(t *testing.T) string {
	t.Helper()
	out := os.Getenv("COFFER_TEST_OUT")
	if out == "" {
		out = "out"
	}
	dir, err := filepath.Abs(filepath.Join(out, "console"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// chrome is one headless Chromium and its tab.
type chrome struct {
	t    *testing.T
	ctx  context.Context
	base string // the server's URL
	out  string
}

func newChrome(t *testing.T, base string) *chrome {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		testutil.Unavailable(t, "chromium not installed (apt-get install chromium): %v", err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Flag("no-sandbox", true), // root in CI containers
		chromedp.Flag("ignore-certificate-errors", true),
		chromedp.WindowSize(1280, 800),
	)
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx)
	// The browser lives as long as the context of its first action: the
	// timeout bounds the actions after it.
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 800)); err != nil {
		cancelC()
		cancelA()
		t.Fatalf("start chromium: %v", err)
	}
	tctx, cancelT := context.WithTimeout(ctx, 5*time.Minute)
	t.Cleanup(func() { cancelT(); cancelC(); cancelA() })
	return &chrome{t: t, ctx: tctx, base: base, out: screenshotDir(t)}
}

func (c *chrome) run(actions ...chromedp.Action[chromedp.Void]) {
	c.t.Helper()
	if err := chromedp.Do(c.ctx, actions...); err != nil {
		loc, _ := chromedp.Run(c.ctx, chromedp.Location())
		c.t.Fatalf("browser at %s: %v", loc, err)
	}
}

// value runs an action that answers a value.
func value[T any](c *chrome, a chromedp.Action[T]) T {
	c.t.Helper()
	v, err := chromedp.Run(c.ctx, a)
	if err != nil {
		loc, _ := chromedp.Run(c.ctx, chromedp.Location())
		c.t.Fatalf("browser at %s: %v", loc, err)
	}
	return v
}

// open navigates to a console path and waits for its title.
func (c *chrome) open(path string) {
	c.t.Helper()
	c.run(chromedp.Navigate(c.base+path), chromedp.WaitVisible(chromedp.CSS("h1")))
}

// shot keeps a screenshot of the whole page as name.png.
func (c *chrome) shot(name string) {
	c.t.Helper()
	png := value(c, chromedp.FullScreenshot(100))
	if err := os.WriteFile(filepath.Join(c.out, name+".png"), png, 0o644); err != nil {
		c.t.Fatal(err)
	}
}

func (c *chrome) text(sel string) string {
	c.t.Helper()
	return value(c, chromedp.Text(chromedp.CSS(sel)))
}

func (c *chrome) count(sel string) int {
	c.t.Helper()
	return value(c, chromedp.Evaluate[int](fmt.Sprintf("document.querySelectorAll(%q).length", sel)))
}

// submit fills a form's fields (selector → value) and presses its button.
func (c *chrome) submit(button string, fields ...string) {
	c.t.Helper()
	var acts []chromedp.Action[chromedp.Void]
	for i := 0; i+1 < len(fields); i += 2 {
		acts = append(acts, chromedp.SetValue(chromedp.CSS(fields[i]), fields[i+1]))
	}
	c.run(acts...)
	c.clickAndLoad(button)
}

// clickAndLoad clicks and waits for the next page: the current one is
// marked first, so its own heading does not count.
func (c *chrome) clickAndLoad(button string) {
	c.t.Helper()
	value(c, chromedp.Evaluate[string](`document.body.dataset.stale = "1"`))
	c.run(chromedp.Click(chromedp.CSS(button)), chromedp.WaitVisible(chromedp.CSS("body:not([data-stale]) h1")))
}

// flash submits and expects the page's success message containing want.
func (c *chrome) flash(want string) {
	c.t.Helper()
	if c.count("#error") > 0 {
		c.t.Fatalf("error on the page: %s", c.text("#error"))
	}
	if got := c.text("#flash"); !strings.Contains(got, want) {
		c.t.Fatalf("flash %q, want %q", got, want)
	}
}

func (c *chrome) login(user, pass string) {
	c.t.Helper()
	c.open("/ui/login")
	c.run(chromedp.SendKeys(chromedp.CSS("#username"), user), chromedp.SendKeys(chromedp.CSS("#password"), pass))
	c.clickAndLoad("#signin")
}

// consoleNode is a single node with an administrator (every role) and a
// key administrator, and a recovery passphrase for backups.
func consoleNode(t *testing.T) *node {
	n := initialisedNode(t, filepath.Join(t.TempDir(), "data"), "")
	ctx := context.Background()
	c := n.https()
	if _, err := c.CreateUser(ctx, "admin", "admin-password-1", []string{"system_admin", "key_admin", "audit_manager"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateUser(ctx, "keyop", "keyop-password-1", []string{"key_admin"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SetRecoveryPassphrase(ctx, "", "recovery-passphrase-1"); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestConsole signs in and uses every page of the console in Chromium.
func TestConsole(t *testing.T) {
	n := consoleNode(t)
	b := newChrome(t, n.url)

	// Sign-in: a wrong password is refused, the right one opens the monitor.
	b.login("admin", "not-the-password")
	if got := b.text("#error"); !strings.Contains(got, "sign-in failed") {
		t.Fatalf("wrong password: %q", got)
	}
	b.shot("login-failed")
	b.login("admin", "admin-password-1")
	if got := b.text("#state"); got != "open" {
		t.Fatalf("monitor state %q", got)
	}
	b.shot("monitor")

	// Keys: a wallet, a key, a rotation.
	b.open("/ui/keys")
	b.submit("#create-wallet button", "#wallet-name", "payments")
	b.flash("Wallet payments created")
	b.submit("#create-object button", "#object-wallet", "payments", "#object-name", "tde-master")
	b.flash("Object tde-master created")
	b.shot("keys")
	b.open("/ui/keys?name=tde-master")
	b.clickAndLoad(`#objects a`)
	objURL := value(b, chromedp.Location())
	objPath := strings.TrimPrefix(objURL, n.url)
	b.run(chromedp.Click(chromedp.CSS(`#act-rotate input[name=confirm]`)))
	b.submit(`#act-rotate button`)
	b.flash("Rotate of tde-master: done")
	if rows := b.count("#versions tbody tr"); rows != 2 {
		t.Fatalf("%d versions after a rotation", rows)
	}
	b.shot("object")

	// Endpoints: enrol, and the credentials bundle is downloaded.
	dl := t.TempDir()
	if _, err := chromedp.CallBrowser(b.ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
		Behavior: browser.SetDownloadBehaviorBehaviorAllow, DownloadPath: dl}); err != nil {
		t.Fatal(err)
	}
	b.open("/ui/endpoints")
	b.run(chromedp.SetValue(chromedp.CSS("#endpoint-name"), "db1"), chromedp.Click(chromedp.CSS("#enrol button")))
	testutil.WaitFor(t, 30*time.Second, "the credentials bundle downloaded", func() error {
		b, err := os.ReadFile(filepath.Join(dl, "coffer-endpoint-db1.json"))
		if err != nil || !strings.Contains(string(b), `"token":"cof_`) {
			return fmt.Errorf("bundle: %v", err)
		}
		return nil
	})
	b.open("/ui/endpoints")
	if !strings.Contains(b.text("#endpoints"), "db1") {
		t.Fatal("db1 not listed")
	}
	b.shot("endpoints")

	// A dir destination and a backup followed on its progress page.
	b.open("/ui/backups")
	nas := filepath.Join(t.TempDir(), "nas")
	b.submit("#dest-add", "#dest-name", "nas", "#dest-path", nas)
	b.flash("Destination nas added")
	b.submit("#run-backup", "#run-destination", "nas")
	var states []string
	testutil.WaitFor(t, 2*time.Minute, "the backup done on its progress page", func() error {
		s, err := chromedp.Run(b.ctx, chromedp.Text(chromedp.CSS("#progress-state")))
		if err != nil {
			return err
		}
		if len(states) == 0 || states[len(states)-1] != s {
			states = append(states, s)
		}
		if !strings.HasPrefix(s, "DONE") {
			return fmt.Errorf("progress %q", s)
		}
		return nil
	})
	t.Logf("progress seen: %q", states)
	b.shot("backup-progress")
	b.open("/ui/backups")
	if !strings.Contains(b.text("#catalog"), "DONE") || !strings.Contains(b.text("#catalog"), "not verified") {
		t.Fatalf("catalog: %s", b.text("#catalog"))
	}
	b.clickAndLoad(`#destinations form:has(input[value=nas]) button[value=verify]`)
	testutil.WaitFor(t, 2*time.Minute, "the verification done on its progress page", func() error {
		s, err := chromedp.Run(b.ctx, chromedp.Text(chromedp.CSS("#verify-state")))
		if err != nil || s != "done" {
			return fmt.Errorf("verify %q %v", s, err)
		}
		return nil
	})
	if got := b.text("#verified"); !strings.Contains(got, "OK") {
		t.Fatalf("verify results: %s", got)
	}
	b.shot("verify")
	// A restore drill measures the restore speed; the catalog then shows
	// each backup's verification (result and time) and its estimated
	// restore time.
	b.open("/ui/backups")
	b.clickAndLoad(`#destinations form:has(input[value=nas]) button[value=drill]`)
	b.flash("Restore drill of nas: OK")
	b.open("/ui/backups?destination=nas")
	if got := b.text("#catalog tbody tr:first-child td.verified"); !strings.HasPrefix(got, "OK 20") {
		t.Fatalf("catalog's verified column: %q", got)
	}
	if got := b.text("#catalog tbody tr:first-child td.estimate"); got == "" || strings.HasPrefix(got, "unknown") {
		t.Fatalf("catalog's estimated restore time after a drill: %q", got)
	}
	// A periodic schedule, paused and resumed: its state follows.
	b.run(chromedp.SetValue(chromedp.CSS(`#add-schedule select[name=destination]`), "nas"))
	b.submit(`#add-schedule button[value=add-schedule]`, `#add-schedule input[name=name]`, "nightly", `#add-schedule input[name=every]`, "24h")
	b.flash("Schedule nightly added")
	scheduleState := func() string {
		return b.text(`#schedules tr[data-name="nightly"] td.state`)
	}
	if got := scheduleState(); got != "ACTIVE" {
		t.Fatalf("new schedule's state %q", got)
	}
	b.clickAndLoad(`#schedules tr[data-name="nightly"] button[value=schedule-pause]`)
	b.flash("Schedule nightly paused")
	if got := scheduleState(); got != "PAUSED" {
		t.Fatalf("paused schedule's state %q", got)
	}
	b.shot("backups")
	b.clickAndLoad(`#schedules tr[data-name="nightly"] button[value=schedule-resume]`)
	b.flash("Schedule nightly resumed")
	if got := scheduleState(); got != "ACTIVE" {
		t.Fatalf("resumed schedule's state %q", got)
	}

	// The monitor: disk use of the data dir, the journal dir and the
	// destination, each with its level.
	b.open("/ui/")
	for _, what := range []string{"data", "journal", "destination:nas"} {
		if got := b.text(`#disks tr[data-what="` + what + `"] td.level`); got != "ok" && got != "warning" && got != "error" {
			t.Fatalf("monitor: disk %s level %q", what, got)
		}
	}
	b.shot("monitor")

	// A restore point, then an incremental backup that holds it.
	b.open("/ui/restore")
	b.submit("#create-point button", "#point-name", "before-destroy")
	b.flash("Restore point before-destroy created")
	b.shot("restore")
	b.open("/ui/backups")
	b.submit("#run-backup", "#run-destination", "nas", "#run select[name=mode]", "incremental")
	testutil.WaitFor(t, 2*time.Minute, "the incremental backup done", func() error {
		s, err := chromedp.Run(b.ctx, chromedp.Text(chromedp.CSS("#progress-state")))
		if err != nil || !strings.HasPrefix(s, "DONE") {
			return fmt.Errorf("progress %q %v", s, err)
		}
		return nil
	})

	// Destroy the key, then restore it at object level from the backup.
	for _, act := range []string{"deactivate", "destroy"} {
		b.open(objPath)
		b.run(chromedp.Click(chromedp.CSS(`#act-` + act + ` input[name=confirm]`)))
		b.submit(`#act-` + act + ` button`)
		b.flash("of tde-master: done")
	}
	if got := b.text("#object-state"); got != "destroyed" {
		t.Fatalf("state %q after destroy", got)
	}
	// The preview lists the versions that would come back, and changes
	// nothing; then the confirmation restores them.
	value(b, chromedp.Evaluate[int](`document.querySelector("#restore-point").selectedIndex = 1`))
	b.submit("#restore-preview-button", "#restore-destination", "nas")
	if b.count("#error") > 0 {
		t.Fatalf("preview: %s", b.text("#error"))
	}
	if got := b.text("#preview-versions tbody"); strings.Count(got, "comes back") != 2 {
		t.Fatalf("preview versions: %q", got)
	}
	if got := b.text("#object-state"); got != "destroyed" {
		t.Fatalf("state %q after the preview", got)
	}
	b.shot("object-restore-preview")
	b.clickAndLoad("#restore-confirm-button")
	b.flash("Restored tde-master")
	b.open(objPath)
	if got := b.text("#object-state"); got == "destroyed" {
		t.Fatalf("state %q after the object restore", got)
	}
	if rows := b.count("#versions tbody tr"); rows != 2 {
		t.Fatalf("%d versions after the restore", rows)
	}
	b.shot("object-restored")

	// Cluster (one node), audit with its chain check, users.
	b.open("/ui/cluster")
	if b.count("#members tr.member") != 1 {
		t.Fatal("one member expected")
	}
	b.shot("cluster-single")
	b.open("/ui/audit")
	b.submit("#verify button")
	b.flash("Audit chain verified")
	b.shot("audit")
	b.open("/ui/users")
	b.run(chromedp.Click(chromedp.CSS(`#create-user input[value=audit_manager]`)))
	b.submit("#create-user button", "#user-name", "carol", `#create-user input[name=password]`, "carol-password-1")
	b.flash("User carol created")
	b.shot("users")

	// Phone size: no page is wider than the screen.
	b.run(chromedp.EmulateViewport(390, 844))
	for _, p := range []string{"/ui/", "/ui/keys", objPath, "/ui/endpoints", "/ui/backups", "/ui/restore", "/ui/cluster", "/ui/audit", "/ui/users"} {
		b.open(p)
		if !value(b, chromedp.Evaluate[bool](`document.documentElement.scrollWidth <= window.innerWidth`)) {
			t.Errorf("%s is wider than 390 px", p)
		}
	}
	b.open("/ui/")
	b.shot("monitor-phone")
	b.run(chromedp.EmulateViewport(1280, 800))

	// A key administrator is offered no backup and is refused one.
	b.clickAndLoad(".logout button")
	b.login("keyop", "keyop-password-1")
	b.open("/ui/backups")
	if b.count("#run-backup") != 0 {
		t.Fatal("keyop is offered a backup")
	}
	b.shot("backups-key-admin")
	h := consoleHTTP(t, n)
	csrf := h.login("keyop", "keyop-password-1")
	if code := h.post("/ui/backups", url.Values{"csrf": {csrf}, "action": {"run"}, "destination": {"nas"}}); code != http.StatusForbidden {
		t.Fatalf("keyop posting a backup: %d", code)
	}
	// CSRF: a form without the token is refused.
	if code := h.post("/ui/keys", url.Values{"action": {"create-wallet"}, "name": {"no-token"}}); code != http.StatusForbidden {
		t.Fatalf("form without a CSRF token: %d", code)
	}
	// The security headers.
	resp, err := h.c.Get(n.url + "/ui/login")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || strings.Contains(csp, "unsafe") {
		t.Fatalf("CSP %q", csp)
	}
	if resp.Header.Get("X-Frame-Options") != "DENY" {
		t.Fatal("no X-Frame-Options")
	}
}

// TestConsoleCluster shows a 3-node cluster and switches the leader over
// from the page.
func TestConsoleCluster(t *testing.T) {
	nodes, c := startCluster(t, 3)
	if _, err := c.CreateUser(context.Background(), "admin", "admin-password-1", []string{"system_admin", "key_admin", "audit_manager"}); err != nil {
		t.Fatal(err)
	}
	_, leader := leaderOf(t, nodes)
	b := newChrome(t, leader.url)
	b.login("admin", "admin-password-1")
	b.open("/ui/cluster")
	if got := b.count("#members tr.member"); got != 3 {
		t.Fatalf("%d members", got)
	}
	before := b.text("#leader")
	b.shot("cluster")
	to := value(b, chromedp.Evaluate[string](`document.querySelector("#switchover-to").selectedIndex = 1; document.querySelector("#switchover-to").value`))
	b.submit("#switchover-button")
	b.flash("Switchover done")
	testutil.WaitFor(t, 30*time.Second, "the new leader", func() error {
		st, err := c.ClusterStatus(context.Background())
		if err != nil {
			return err
		}
		if st.Leader == before || st.Leader != to {
			return fmt.Errorf("leader %s (was %s, asked %s)", st.Leader, before, to)
		}
		return nil
	})
	b.open("/ui/cluster")
	b.shot("cluster-after-switchover")
}

// consoleHTTP is a plain HTTP client of the console (cookies, the CA).
type consoleClient struct {
	t   *testing.T
	n   *node
	c   *http.Client
	ctx context.Context
}

func consoleHTTP(t *testing.T, n *node) *consoleClient {
	pem, err := os.ReadFile(n.caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	jar, _ := cookiejar.New(nil)
	return &consoleClient{t: t, n: n, ctx: context.Background(), c: &http.Client{Jar: jar, Timeout: 30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}}
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func (h *consoleClient) page(path string) string {
	h.t.Helper()
	resp, err := h.c.Get(h.n.url + path)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func (h *consoleClient) post(path string, form url.Values) int {
	h.t.Helper()
	resp, err := h.c.PostForm(h.n.url+path, form)
	if err != nil {
		h.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// login signs in and returns the session's CSRF token.
func (h *consoleClient) login(user, pass string) string {
	h.t.Helper()
	m := csrfField.FindStringSubmatch(h.page("/ui/login"))
	if m == nil {
		h.t.Fatal("no CSRF token on the login page")
	}
	h.post("/ui/login", url.Values{"csrf": {m[1]}, "username": {user}, "password": {pass}})
	m = csrfField.FindStringSubmatch(h.page("/ui/"))
	if m == nil {
		h.t.Fatal("not signed in")
	}
	return m[1]
}

// TestConsoleDev: coffer dev prints the console's URL and a first
// administrator's credentials, which sign in.
func TestConsoleDev(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dev")
	cmd := exec.Command(cofferBin, "dev", "--data-dir", dir, "--listen", "127.0.0.1:0")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuf{}
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Signal(syscall.SIGINT); cmd.Wait() })
	re := regexp.MustCompile(`Console: +(https://\S+)/ui/ \(user (\S+), password (\S+)\)`)
	var m []string
	sc := bufio.NewScanner(stdout)
	kill := time.AfterFunc(60*time.Second, func() { cmd.Process.Kill() })
	for m == nil && sc.Scan() {
		m = re.FindStringSubmatch(sc.Text())
	}
	kill.Stop()
	go io.Copy(io.Discard, stdout)
	if m == nil {
		t.Fatalf("coffer dev printed no console line\n%s", logs)
	}
	n := &node{t: t, url: m[1], caFile: filepath.Join(dir, "tls", "ca.crt")}
	h := consoleHTTP(t, n)
	h.login(m[2], m[3])
	if body := h.page("/ui/users"); !strings.Contains(body, "system_admin") {
		t.Fatal("the dev administrator does not see the users page")
	}
}
