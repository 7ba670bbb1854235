package e2e

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

// TestEveryHTTPRequestIsAudited: on the real server, a path the router
// redirects to its clean form ("..", "//") and an unknown path are audited
// ("unrouted", with status and reason); a REST, a Vault request and a
// metrics scrape get no extra record.
func TestEveryHTTPRequestIsAudited(t *testing.T) {
	n := initialisedNode(t, filepath.Join(t.TempDir(), "data"), "")
	api := newRawAPI(t, n)
	api.hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	root := n.token
	type record struct {
		Seq       uint64 `json:"seq"`
		Operation string `json:"operation"`
		Status    int    `json:"status"`
		Result    string `json:"result"`
		Error     string `json:"error"`
		Actor     string `json:"actor"`
	}
	var list struct{ Records []record }
	count := func() int {
		api.call(root, "GET", "/api/v1/audit?limit=1000", ``, 200, &list)
		return len(list.Records)
	}
	before := count()
	api.call(root, "GET", "/api/v1/wallets/../sys/status", ``, 307, nil)
	api.call(root, "DELETE", "//api/v1/wallets/x", ``, 307, nil)
	api.call(root, "GET", "/no/such/path", ``, 404, nil)
	api.call("", "GET", "/metrics", ``, 200, nil)
	api.call(root, "GET", "/v1/sys/health", ``, 200, nil)
	api.call(root, "GET", "/v1/sys/mounts", ``, 200, nil)
	count()
	// The first record after "before" is that audit read; the read that
	// lists them is written after its answer.
	got := list.Records[before+1:]
	var ops []string
	for _, r := range got {
		ops = append(ops, r.Operation)
	}
	if strings.Join(ops, " ") != "unrouted unrouted unrouted vault.sys.mounts.list" {
		t.Fatalf("records after the requests: %v (%+v)", ops, got)
	}
	for i, want := range []struct {
		status  int
		result  string
		mention string
	}{{307, "redirected", `GET "/api/v1/wallets/../sys/status"`}, {307, "redirected", `DELETE "//api/v1/wallets/x"`}, {404, "not_found", `"/no/such/path"`}} {
		if r := got[i]; r.Status != want.status || r.Result != want.result || !strings.Contains(r.Error, want.mention) || r.Actor != "root" {
			t.Errorf("record %d: %+v, want %d %s by root mentioning %s", i, r, want.status, want.result, want.mention)
		}
	}
}
