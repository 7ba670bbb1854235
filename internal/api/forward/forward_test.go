package forward

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/coffer-kms/coffer/internal/tlsutil"
)

// fakeCluster is a node whose leader is known (or not) and whose catch-up
// state a test sets. The zero value is a follower that has not caught up,
// does not know its leader and allows read-only restricted mode.
type fakeCluster struct {
	standalone, self, caughtUp, readOnly, noReadOnly bool
	leaderURL                                        string
	verifyErr                                        error
	commit                                           uint64
	waits                                            *waitLog // WaitApplied's indexes (nil: not recorded)
}

type waitLog struct {
	mu  sync.Mutex
	idx []uint64
}

func (l *waitLog) get() []uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]uint64(nil), l.idx...)
}

func (f *fakeCluster) Clustered() bool { return !f.standalone }
func (f *fakeCluster) LeaderAPI() (string, bool, bool) {
	return f.leaderURL, f.self, f.leaderURL != "" || f.self
}
func (f *fakeCluster) NodeID() string                     { return "n2" }
func (f *fakeCluster) NodeTLS() *tls.Config               { return nil }
func (f *fakeCluster) AllowReadOnly() bool                { return !f.noReadOnly }
func (f *fakeCluster) ReadOnlyRestricted() bool           { return f.readOnly }
func (f *fakeCluster) CaughtUp() bool                     { return f.caughtUp }
func (f *fakeCluster) VerifyLeader(context.Context) error { return f.verifyErr }
func (f *fakeCluster) CommitIndex() uint64                { return f.commit }
func (f *fakeCluster) WaitApplied(_ context.Context, idx uint64) error {
	if f.waits != nil {
		f.waits.mu.Lock()
		defer f.waits.mu.Unlock()
		f.waits.idx = append(f.waits.idx, idx)
	}
	return nil
}

// testRoutes is a route table with one route of each placement, as a
// transport registers them.
func testRoutes() ServeMux {
	m := NewServeMux()
	h := http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("a test router serves nothing") })
	for pattern, f := range map[string]Facts{
		"/api/v1/wallets/":          {Auth: true, Placement: Leader, Audit: "wallets"},
		"/api/v1/objects":           {Auth: true, Placement: Leader, Audit: "objects"},
		"/v1/secret/":               {Auth: true, Placement: Leader, Audit: "vault.mount"},
		"GET /api/v1/sys/status":    {Auth: true, Placement: NodeView, Audit: "status"},
		"GET /api/v1/cluster":       {Auth: true, Placement: NodeView, Audit: "clusterStatus"},
		"GET /api/v1/sys/health":    {Placement: NodeLocal},
		"POST /api/v1/sys/seal":     {Auth: true, Placement: NodeLocal, Audit: "seal"},
		"POST /api/v1/sys/freeze":   {Auth: true, Placement: NodeLocal, Audit: "freeze"},
		"POST /api/v1/audit/verify": {Auth: true, Placement: NodeLocal, Audit: "verifyAudit"},
	} {
		m.Handle(pattern, WithFacts(f, h))
	}
	return m
}

// leaderStub records what reaches the leader and answers 201.
type leaderStub struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []*http.Request
	body []string
}

func newLeader(t *testing.T) *leaderStub {
	l := &leaderStub{}
	l.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		l.mu.Lock()
		l.reqs, l.body = append(l.reqs, r), append(l.body, string(b))
		l.mu.Unlock()
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, "from the leader")
	}))
	t.Cleanup(l.Close)
	return l
}

func (l *leaderStub) got() []*http.Request {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*http.Request(nil), l.reqs...)
}

// served runs req through the middleware with a local handler that answers
// 418, and reports the answer and whether the local handler served it.
func served(t *testing.T, c *fakeCluster, o Options, req *http.Request) (*httptest.ResponseRecorder, bool) {
	t.Helper()
	local := false
	h := Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		local = true
		w.WriteHeader(http.StatusTeapot)
	}), c, o)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec, local
}

func errorBody(t *testing.T, rec *httptest.ResponseRecorder) (code, msg string) {
	t.Helper()
	var body struct {
		Error struct{ Code, Message string }
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("body %q: %v", rec.Body, err)
	}
	return body.Error.Code, body.Error.Message
}

// TestReadsWhileCatchingUp: a follower that has not caught up serves no
// default read itself: with the leader's address unknown it answers 503
// not_caught_up; reads about the node itself are still served; once caught
// up, or without quorum in read-only restricted mode, reads are local.
func TestReadsWhileCatchingUp(t *testing.T) {
	for _, tc := range []struct {
		name     string
		c        fakeCluster
		path     string
		wantCode int
		wantErr  string
	}{
		{"behind, leader address unknown", fakeCluster{}, "/api/v1/wallets/default/secrets/a", 503, "not_caught_up"},
		{"behind, no route", fakeCluster{}, "/api/v1/nothing", 503, "not_caught_up"},
		{"behind, Vault read", fakeCluster{}, "/v1/secret/data/a", 503, ""},
		{"behind, node status", fakeCluster{}, "/api/v1/sys/status", http.StatusTeapot, ""},
		{"behind, cluster status", fakeCluster{}, "/api/v1/cluster", http.StatusTeapot, ""},
		{"behind, health", fakeCluster{}, "/api/v1/sys/health", http.StatusTeapot, ""},
		{"behind, no quorum (read-only restricted mode)", fakeCluster{readOnly: true}, "/api/v1/objects", http.StatusTeapot, ""},
		{"caught up", fakeCluster{caughtUp: true}, "/api/v1/objects", http.StatusTeapot, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.c
			rec, _ := served(t, &c, Options{Routes: testRoutes()}, httptest.NewRequest("GET", tc.path, nil))
			if rec.Code != tc.wantCode {
				t.Fatalf("GET %s: %d, want %d (%s)", tc.path, rec.Code, tc.wantCode, rec.Body)
			}
			if tc.wantErr != "" {
				if code, msg := errorBody(t, rec); code != tc.wantErr || msg == "" {
					t.Fatalf("GET %s: body %s, want code %s with a message", tc.path, rec.Body, tc.wantErr)
				}
			}
		})
	}
	// With the leader's address known, a client asking for no forwarding
	// is sent there (the read is not answered here).
	c := fakeCluster{leaderURL: "https://leader.example:8200"}
	req := httptest.NewRequest("GET", "/api/v1/objects", nil)
	req.Header.Set(HeaderNoForward, "1")
	rec, _ := served(t, &c, Options{Routes: testRoutes()}, req)
	if rec.Code != http.StatusTemporaryRedirect || rec.Header().Get("Location") != "https://leader.example:8200/api/v1/objects" {
		t.Fatalf("behind, no forwarding: %d %q", rec.Code, rec.Header().Get("Location"))
	}
}

// TestFollowerForwardsWrites: a follower sends a write (or a linearizable
// read) to the leader with its own id, passes the leader's answer back,
// and never passes on the trusted headers a client sent itself; a plain
// read of a caught-up follower is served where it arrives.
func TestFollowerForwardsWrites(t *testing.T) {
	leader := newLeader(t)
	c := &fakeCluster{caughtUp: true, leaderURL: leader.URL}
	o := Options{Routes: testRoutes(), IsLocal: func(*http.Request) bool { return false }}

	req := httptest.NewRequest("PUT", "/api/v1/wallets/default/secrets/a?x=1", strings.NewReader(`{"value":"v"}`))
	req.Header.Set(HeaderLocal, "1")
	req.Header.Set(HeaderClientCert, "Zm9yZ2Vk")
	req.Header.Set(HeaderNodeCall, "1")
	rec, local := served(t, c, o, req)
	if local || rec.Code != http.StatusCreated || rec.Body.String() != "from the leader" {
		t.Fatalf("write on a follower: %d %q (served locally: %v), want the leader's 201", rec.Code, rec.Body, local)
	}
	got := leader.got()
	if len(got) != 1 {
		t.Fatalf("the leader got %d requests, want 1", len(got))
	}
	fwd := got[0]
	if fwd.Method != "PUT" || fwd.URL.RequestURI() != "/api/v1/wallets/default/secrets/a?x=1" || leader.body[0] != `{"value":"v"}` {
		t.Errorf("forwarded %s %s %q, want the client's request unchanged", fwd.Method, fwd.URL.RequestURI(), leader.body[0])
	}
	if fwd.Header.Get(HeaderBy) != "n2" {
		t.Errorf("%s = %q, want the follower's id", HeaderBy, fwd.Header.Get(HeaderBy))
	}
	for _, h := range []string{HeaderLocal, HeaderClientCert, HeaderNodeCall} {
		if v := fwd.Header.Get(h); v != "" {
			t.Errorf("the client's own %s: %q reached the leader", h, v)
		}
	}

	// Reads: served here once caught up, unless linearizable.
	rec, local = served(t, c, o, httptest.NewRequest("GET", "/api/v1/objects", nil))
	if !local || rec.Code != http.StatusTeapot {
		t.Errorf("read on a caught-up follower: %d, served locally %v; want local", rec.Code, local)
	}
	req = httptest.NewRequest("GET", "/api/v1/objects", nil)
	req.Header.Set(HeaderConsistency, "linearizable")
	rec, local = served(t, c, o, req)
	if local || rec.Code != http.StatusCreated {
		t.Errorf("linearizable read on a follower: %d, served locally %v; want the leader's answer", rec.Code, local)
	}
	if n := len(leader.got()); n != 2 {
		t.Errorf("the leader got %d requests, want 2 (the write and the linearizable read)", n)
	}

	// A write through the control socket, with a client certificate:
	// the leader learns both from the node.
	cert := &x509.Certificate{Raw: []byte("client-der"), Subject: pkix.Name{CommonName: "db1"}}
	req = httptest.NewRequest("POST", "/api/v1/objects", strings.NewReader(`{}`))
	req.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}}
	o.IsLocal = func(*http.Request) bool { return true }
	if rec, local = served(t, c, o, req); local || rec.Code != http.StatusCreated {
		t.Fatalf("write with a client certificate: %d, served locally %v", rec.Code, local)
	}
	fwd = leader.got()[2]
	if fwd.Header.Get(HeaderClientCert) != base64.StdEncoding.EncodeToString(cert.Raw) || fwd.Header.Get(HeaderLocal) != "1" {
		t.Errorf("forwarded client certificate %q, local %q; want the client's certificate and 1",
			fwd.Header.Get(HeaderClientCert), fwd.Header.Get(HeaderLocal))
	}
}

// TestNodeLocalNeverForwarded: a node-local route is served where it
// arrives, whatever the method, consistency or catch-up state, and on a
// standalone node nothing is forwarded at all.
func TestNodeLocalNeverForwarded(t *testing.T) {
	leader := newLeader(t)
	o := Options{Routes: testRoutes()}
	for _, c := range []fakeCluster{{caughtUp: true, leaderURL: leader.URL}, {leaderURL: leader.URL}, {readOnly: true}} {
		for _, tc := range []struct{ method, path string }{
			{"POST", "/api/v1/sys/seal"}, {"POST", "/api/v1/sys/freeze"}, {"POST", "/api/v1/audit/verify"}, {"GET", "/api/v1/sys/health"},
		} {
			req := httptest.NewRequest(tc.method, tc.path, nil)
			req.Header.Set(HeaderConsistency, "linearizable")
			if rec, local := served(t, &c, o, req); !local || rec.Code != http.StatusTeapot {
				t.Errorf("%s %s on %+v: %d, served locally %v; want local", tc.method, tc.path, c, rec.Code, local)
			}
		}
	}
	standalone := &fakeCluster{standalone: true, leaderURL: leader.URL}
	if rec, local := served(t, standalone, o, httptest.NewRequest("POST", "/api/v1/objects", nil)); !local || rec.Code != http.StatusTeapot {
		t.Errorf("write on a standalone node: %d, served locally %v; want local", rec.Code, local)
	}
	if n := len(leader.got()); n != 0 {
		t.Errorf("the leader got %d requests, want none", n)
	}
}

// TestForwardedNotForwardedAgain: a request that another node forwarded
// here (it comes with a node certificate) is refused not_leader when this
// node does not lead, never sent on: that could loop or lose the caller.
func TestForwardedNotForwardedAgain(t *testing.T) {
	leader := newLeader(t)
	node := &x509.Certificate{Raw: []byte("node-der"), Subject: pkix.Name{CommonName: "n1", OrganizationalUnit: []string{tlsutil.NodeOU}}}
	req := httptest.NewRequest("POST", "/api/v1/objects", strings.NewReader(`{}`))
	req.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{node}}
	req.Header.Set(HeaderBy, "n1")
	rec, local := served(t, &fakeCluster{caughtUp: true, leaderURL: leader.URL}, Options{Routes: testRoutes()}, req)
	if local || rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("forwarded write on a follower: %d, served locally %v; want 503", rec.Code, local)
	}
	if code, msg := errorBody(t, rec); code != "not_leader" || !strings.Contains(msg, "not applied") {
		t.Errorf("forwarded write on a follower: %s %q, want not_leader saying it was not applied", code, msg)
	}
	if n := len(leader.got()); n != 0 {
		t.Errorf("the leader got %d requests, want none", n)
	}
	// On the leader itself the forwarded request is served.
	req.Body = io.NopCloser(strings.NewReader(`{}`))
	if rec, local := served(t, &fakeCluster{caughtUp: true, self: true}, Options{Routes: testRoutes()}, req); !local || rec.Code != http.StatusTeapot {
		t.Errorf("forwarded write on the leader: %d, served locally %v; want local", rec.Code, local)
	}
}

// TestLeaderUnknown: without a leader, a write goes to the local handler
// (the service refuses it in read-only restricted mode) and is sent
// nowhere; a linearizable read, or anything when read-only restricted mode
// is off, is refused with an error that says why.
func TestLeaderUnknown(t *testing.T) {
	o := Options{Routes: testRoutes()}
	c := &fakeCluster{caughtUp: true, readOnly: true}
	if rec, local := served(t, c, o, httptest.NewRequest("POST", "/api/v1/objects", nil)); !local || rec.Code != http.StatusTeapot {
		t.Errorf("write without a leader: %d, served locally %v; want the local handler's refusal", rec.Code, local)
	}
	req := httptest.NewRequest("GET", "/api/v1/objects", nil)
	req.Header.Set(HeaderConsistency, "linearizable")
	rec, local := served(t, c, o, req)
	if code, msg := errorBody(t, rec); local || rec.Code != 503 || code != "read_only_restricted" || !strings.Contains(msg, "no leader") {
		t.Errorf("linearizable read without a leader: %d %s %q (local %v), want 503 read_only_restricted naming the missing leader", rec.Code, code, msg, local)
	}
	if rec.Header().Get("Retry-After") == "" {
		t.Error("no Retry-After on a refusal")
	}
	off := &fakeCluster{caughtUp: true, readOnly: true, noReadOnly: true}
	rec, local = served(t, off, o, httptest.NewRequest("GET", "/api/v1/objects", nil))
	if code, msg := errorBody(t, rec); local || rec.Code != 503 || code != "read_only_restricted" || !strings.Contains(msg, "allow_read_only_restricted_mode") {
		t.Errorf("read with read-only restricted mode off: %d %s %q (local %v), want 503 naming the setting", rec.Code, code, msg, local)
	}
	// The Vault API gets its own error shape.
	rec, _ = served(t, off, o, httptest.NewRequest("GET", "/v1/secret/data/a", nil))
	var vb struct{ Errors []string }
	if json.Unmarshal(rec.Body.Bytes(), &vb); rec.Code != 503 || len(vb.Errors) != 1 || vb.Errors[0] == "" {
		t.Errorf("Vault read with read-only restricted mode off: %d %s, want 503 {\"errors\":[...]}", rec.Code, rec.Body)
	}
}

// TestLinearizableOnLeader: the leader serves a linearizable read only
// once a quorum confirms it still leads.
func TestLinearizableOnLeader(t *testing.T) {
	req := func() *http.Request {
		r := httptest.NewRequest("GET", "/api/v1/objects", nil)
		r.Header.Set(HeaderConsistency, "linearizable")
		return r
	}
	if rec, local := served(t, &fakeCluster{self: true}, Options{}, req()); !local || rec.Code != http.StatusTeapot {
		t.Errorf("confirmed leader: %d, served locally %v", rec.Code, local)
	}
	rec, local := served(t, &fakeCluster{self: true, verifyErr: errors.New("lost quorum")}, Options{}, req())
	if code, msg := errorBody(t, rec); local || rec.Code != 503 || code != "read_only_restricted" || !strings.Contains(msg, "lost quorum") {
		t.Errorf("unconfirmed leader: %d %s %q (local %v), want 503 with the reason", rec.Code, code, msg, local)
	}
}

// TestCaller: a forwarded request's client is trusted from a node
// certificate only; a node calling for itself is the node.
func TestCaller(t *testing.T) {
	node := &x509.Certificate{Raw: []byte("node-der"), Subject: pkix.Name{CommonName: "n1", OrganizationalUnit: []string{tlsutil.NodeOU}}}
	endpoint := &x509.Certificate{Raw: []byte("endpoint-der"), Subject: pkix.Name{CommonName: "db1"}}
	with := func(c *x509.Certificate, h map[string]string) *http.Request {
		r := httptest.NewRequest("GET", "/api/v1/objects", nil)
		r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{c}}
		for k, v := range h {
			r.Header.Set(k, v)
		}
		return r
	}
	forged := map[string]string{HeaderBy: "n1", HeaderClientCert: base64.StdEncoding.EncodeToString([]byte("x")), HeaderLocal: "1", "X-Forwarded-For": "192.0.2.9"}
	if f := Caller(with(endpoint, forged)); string(f.ClientCert) != "endpoint-der" || f.Local || f.Peer != "" || f.ClientAddr != "" {
		t.Errorf("endpoint with forged headers: %+v, want only its own certificate", f)
	}
	f := Caller(with(node, forged))
	if string(f.ClientCert) != "x" || !f.Local || f.Peer != "n1" || f.ClientAddr != "192.0.2.9" || f.Node != "" {
		t.Errorf("forwarding node: %+v", f)
	}
	if f := Caller(with(node, map[string]string{HeaderNodeCall: "1"})); f.Node != "n1" || f.ClientCert != nil {
		t.Errorf("node calling for itself: %+v", f)
	}
	if f := Caller(with(node, nil)); f.Node != "" || f.ClientCert != nil || f.Peer != "n1" {
		t.Errorf("node with neither marker: %+v, want no identity", f)
	}
	if f := Caller(httptest.NewRequest("GET", "/", nil)); f.ClientCert != nil || f.Peer != "" || f.Node != "" {
		t.Errorf("no TLS: %+v", f)
	}
}

// TestReadYourWritesThroughAFollower: the leader puts its commit index on
// its answer to a write a node forwarded; the follower waits until it has
// applied that much before it answers, and the client never sees the
// header. Reads, and writes from clients, carry none.
func TestReadYourWritesThroughAFollower(t *testing.T) {
	node := &x509.Certificate{Raw: []byte("node-der"), Subject: pkix.Name{CommonName: "n2", OrganizationalUnit: []string{tlsutil.NodeOU}}}
	leaderC := &fakeCluster{caughtUp: true, self: true, commit: 42}
	var leaderH http.Handler = Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, "done")
	}), leaderC, Options{Routes: testRoutes()})
	leader := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{node}} // as the node-to-node listener verified it
		leaderH.ServeHTTP(w, r)
	}))
	defer leader.Close()

	// On the leader: a forwarded write is answered with the index, a
	// client's own write and a forwarded read without.
	if rec, _ := served(t, leaderC, Options{Routes: testRoutes()}, httptest.NewRequest("POST", "/api/v1/objects", strings.NewReader(`{}`))); rec.Header().Get(HeaderCommitIndex) != "" {
		t.Errorf("a client's write on the leader carries %s", HeaderCommitIndex)
	}
	// A handler that writes nothing (net/http's 200) still tells; a
	// refused write does not.
	for code, want := range map[int]string{http.StatusCreated: "42", 0: "42", http.StatusBadRequest: ""} {
		h := Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if code != 0 {
				w.WriteHeader(code)
			}
		}), leaderC, Options{Routes: testRoutes()})
		req := httptest.NewRequest("POST", "/api/v1/objects", strings.NewReader(`{}`))
		req.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{node}}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if got := rec.Header().Get(HeaderCommitIndex); got != want {
			t.Errorf("a forwarded write answered %d: %s = %q, want %q", code, HeaderCommitIndex, got, want)
		}
	}

	// On the follower.
	c := &fakeCluster{caughtUp: true, leaderURL: leader.URL, waits: &waitLog{}}
	rec, local := served(t, c, Options{Routes: testRoutes()}, httptest.NewRequest("POST", "/api/v1/objects", strings.NewReader(`{}`)))
	if local || rec.Code != http.StatusCreated || rec.Body.String() != "done" {
		t.Fatalf("write through the follower: %d %q", rec.Code, rec.Body)
	}
	if rec.Header().Get(HeaderCommitIndex) != "" {
		t.Errorf("the client sees %s", HeaderCommitIndex)
	}
	if waited := c.waits.get(); len(waited) != 1 || waited[0] != 42 {
		t.Fatalf("the follower waited for %v before answering, want [42]", waited)
	}
	req := httptest.NewRequest("GET", "/api/v1/objects", nil)
	req.Header.Set(HeaderConsistency, "linearizable")
	if rec, local := served(t, c, Options{Routes: testRoutes()}, req); local || rec.Code != http.StatusCreated {
		t.Fatalf("linearizable read through the follower: %d", rec.Code)
	}
	if waited := c.waits.get(); len(waited) != 1 {
		t.Errorf("a read waited too: %v", waited)
	}
}
