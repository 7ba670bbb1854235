package forward

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

// fakeCluster is a follower whose leader is known (or not) and whose
// catch-up state a test sets.
type fakeCluster struct {
	caughtUp, readOnly bool
	leaderURL          string
}

func (f *fakeCluster) Clustered() bool { return true }
func (f *fakeCluster) LeaderAPI() (string, bool, bool) {
	return f.leaderURL, false, f.leaderURL != ""
}
func (f *fakeCluster) NodeID() string                     { return "n2" }
func (f *fakeCluster) NodeTLS() *tls.Config               { return nil }
func (f *fakeCluster) AllowReadOnly() bool                { return true }
func (f *fakeCluster) ReadOnlyRestricted() bool           { return f.readOnly }
func (f *fakeCluster) CaughtUp() bool                     { return f.caughtUp }
func (f *fakeCluster) VerifyLeader(context.Context) error { return nil }

// TestReadsWhileCatchingUp: a follower that has not caught up serves no
// default read itself: with the leader's address unknown it answers 503
// not_caught_up; reads about the node itself are still served; once caught
// up, or without quorum in read-only restricted mode, reads are local.
func TestReadsWhileCatchingUp(t *testing.T) {
	local := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) })
	for _, tc := range []struct {
		name     string
		c        fakeCluster
		path     string
		wantCode int
		wantErr  string
	}{
		{"behind, leader address unknown", fakeCluster{}, "/api/v1/wallets/default/secrets/a", 503, "not_caught_up"},
		{"behind, Vault read", fakeCluster{}, "/v1/secret/data/a", 503, ""},
		{"behind, node status", fakeCluster{}, "/api/v1/sys/status", http.StatusTeapot, ""},
		{"behind, cluster status", fakeCluster{}, "/api/v1/cluster", http.StatusTeapot, ""},
		{"behind, health", fakeCluster{}, "/api/v1/sys/health", http.StatusTeapot, ""},
		{"behind, no quorum (read-only restricted mode)", fakeCluster{readOnly: true}, "/api/v1/objects", http.StatusTeapot, ""},
		{"caught up", fakeCluster{caughtUp: true}, "/api/v1/objects", http.StatusTeapot, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.c
			rec := httptest.NewRecorder()
			Handler(local, &c, Options{}).ServeHTTP(rec, httptest.NewRequest("GET", tc.path, nil))
			if rec.Code != tc.wantCode {
				t.Fatalf("GET %s: %d, want %d (%s)", tc.path, rec.Code, tc.wantCode, rec.Body)
			}
			if tc.wantErr != "" {
				var body struct {
					Error struct{ Code, Message string }
				}
				json.Unmarshal(rec.Body.Bytes(), &body)
				if body.Error.Code != tc.wantErr || body.Error.Message == "" {
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
	rec := httptest.NewRecorder()
	Handler(local, &c, Options{}).ServeHTTP(rec, req)
	if rec.Code != http.StatusTemporaryRedirect || rec.Header().Get("Location") != "https://leader.example:8200/api/v1/objects" {
		t.Fatalf("behind, no forwarding: %d %q", rec.Code, rec.Header().Get("Location"))
	}
}
