package rest

import (
	"context"
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/coffer-kms/coffer/internal/api/forward"
)

// Routes about this node: the table must keep them where they are.
var (
	nodeLocalRoutes = []string{
		"GET /api/v1/sys/health", "GET /api/v1/cluster/ca", "POST /api/v1/sys/cluster/join", "POST /api/v1/sys/init",
		"POST /api/v1/sys/open", "POST /api/v1/sys/seal", "POST /api/v1/sys/stop", "POST /api/v1/sys/root-token",
		"POST /api/v1/sys/keystore/change-passphrase", "POST /api/v1/sys/keystore/reset-passphrase",
		"POST /api/v1/sys/keystore/enable-auto-open", "POST /api/v1/sys/keystore/disable-auto-open",
		"POST /api/v1/sys/freeze", "POST /api/v1/sys/thaw", "POST /api/v1/sys/journal/rotate", "POST /api/v1/sys/journal/prune",
		"POST /api/v1/audit/verify", "GET /api/v1/sys/debug/goroutines",
	}
	nodeViewRoutes = []string{
		"GET /api/v1/cluster", "GET /api/v1/openapi.json", "GET /api/v1/backup/current", "GET /api/v1/sys/status",
		"GET /api/v1/sys/root-tokens", "GET /api/v1/sys/journal", "GET /api/v1/audit",
	}
	// Polled often: never audited.
	unauditedRoutes = []string{"GET /api/v1/sys/health", "GET /api/v1/cluster/ca", "GET /api/v1/openapi.json"}
)

// TestRouteFacts walks the route table: every route appears once (by
// method and pattern, and by operation id), has its facts set and agrees
// with its documentation, and the node's own routes keep their placement.
func TestRouteFacts(t *testing.T) {
	keys, ops := map[string]bool{}, map[string]bool{}
	for _, rt := range (&api{}).routes() {
		key := rt.Method + " " + rt.Pattern
		if keys[key] || ops[rt.OperationID] {
			t.Errorf("%s (%s) appears twice in the route table", key, rt.OperationID)
		}
		keys[key], ops[rt.OperationID] = true, true
		f := rt.facts
		want := forward.Leader
		switch {
		case slices.Contains(nodeLocalRoutes, key):
			want = forward.NodeLocal
		case slices.Contains(nodeViewRoutes, key):
			want = forward.NodeView
		}
		if f.Placement != want {
			t.Errorf("%s: placement %s, want %s", key, f.Placement, want)
		}
		if f.Placement == forward.NodeView && rt.Method != "GET" {
			t.Errorf("%s: node view is for reads", key)
		}
		if f.Auth != rt.Auth {
			t.Errorf("%s: auth %v, but the document says %v", key, f.Auth, rt.Auth)
		}
		wantAudit := rt.OperationID
		if slices.Contains(unauditedRoutes, key) {
			wantAudit = ""
		}
		if f.Audit != wantAudit || rt.OperationID == "" {
			t.Errorf("%s: audit action %q, want %q", key, f.Audit, wantAudit)
		}
	}
	for _, key := range slices.Concat(nodeLocalRoutes, nodeViewRoutes, unauditedRoutes) {
		if !keys[key] {
			t.Errorf("%s is listed here but not in the route table", key)
		}
	}
}

// follower is a cluster member that is not the leader.
type follower struct {
	leaderURL string
	caughtUp  bool
}

func (f follower) Clustered() bool                    { return true }
func (f follower) LeaderAPI() (string, bool, bool)    { return f.leaderURL, false, true }
func (f follower) NodeID() string                     { return "n2" }
func (f follower) NodeTLS() *tls.Config               { return nil }
func (f follower) AllowReadOnly() bool                { return true }
func (f follower) ReadOnlyRestricted() bool           { return false }
func (f follower) CaughtUp() bool                     { return f.caughtUp }
func (f follower) VerifyLeader(context.Context) error { return nil }
func (f follower) CommitIndex() uint64                { return 0 }
func (f follower) WaitApplied(context.Context, uint64) error {
	return nil
}

// TestRoutesForwarding sends a request for every route of the table to a
// follower whose forwarding reads the facts from the REST handler: a
// node-local route is never forwarded, a write to any other route is, and
// a read is served there once it has caught up (a node-view read even
// before).
func TestRoutesForwarding(t *testing.T) {
	var mu sync.Mutex
	atLeader := map[string]int{}
	leader := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		atLeader[r.Method+" "+r.URL.Path]++
		mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	defer leader.Close()
	routes := Handler(nil, Options{})
	wildcard := regexp.MustCompile(`\{[a-z]+(\.\.\.)?\}`)
	for _, caughtUp := range []bool{true, false} {
		var local string
		h := forward.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			local = r.Method + " " + r.URL.Path
			w.WriteHeader(http.StatusTeapot)
		}), follower{leaderURL: leader.URL, caughtUp: caughtUp}, forward.Options{Routes: routes})
		for _, rt := range (&api{}).routes() {
			path := wildcard.ReplaceAllStringFunc(rt.Pattern, func(w string) string {
				if strings.HasSuffix(w, "...}") {
					return "a/b"
				}
				return "x"
			})
			key := rt.Method + " " + path
			local = ""
			mu.Lock()
			before := atLeader[key]
			mu.Unlock()
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(rt.Method, path, strings.NewReader("{}")))
			mu.Lock()
			forwarded := atLeader[key] > before
			mu.Unlock()
			write := rt.Method != "GET"
			wantLocal := rt.facts.Placement == forward.NodeLocal ||
				!write && (caughtUp || rt.facts.Placement == forward.NodeView)
			switch {
			case wantLocal && (local != key || forwarded || rec.Code != http.StatusTeapot):
				t.Errorf("caught up %v: %s (%s) was not served by the follower (%d, at the leader: %v)", caughtUp, key, rt.facts.Placement, rec.Code, forwarded)
			case !wantLocal && (local != "" || !forwarded || rec.Code != http.StatusAccepted):
				t.Errorf("caught up %v: %s (%s) was not forwarded to the leader (%d, served locally: %v)", caughtUp, key, rt.facts.Placement, rec.Code, local != "")
			}
		}
	}
}
