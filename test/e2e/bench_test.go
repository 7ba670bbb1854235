package e2e

import (
	"cmp"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// benchJSON is what `coffer bench --format json` prints.
type benchJSON struct {
	Op       string  `json:"op"`
	Ops      int64   `json:"ops"`
	Errors   int64   `json:"errors"`
	P50      float64 `json:"p50_ms"`
	P999     float64 `json:"p999_ms"`
	FirstErr string  `json:"first_error"`
	Ratio    float64 `json:"ratio"`
	Peer     *struct {
		Ops    int64 `json:"ops"`
		Errors int64 `json:"errors"`
	} `json:"peer"`
}

// TestBenchPeerFixed runs `coffer bench` with --peer-fixed against a real
// server for every Vault-compatible operation and KMIP Get: both runs do
// work without errors and the ratio is reported.
func TestBenchPeerFixed(t *testing.T) {
	n := initialisedNode(t, filepath.Join(t.TempDir(), "data"), "kmip:\n  listen: 127.0.0.1:0\n")
	kmipAddr := n.kmipAddr()
	creds := n.enrollKMIP("bench", "default", "manage")
	kmipEnv := []string{"COFFER_ADDR=" + n.url, "COFFER_CACERT=" + filepath.Join(creds, "ca.crt"),
		"COFFER_CLIENT_CERT=" + filepath.Join(creds, "client.crt"), "COFFER_CLIENT_KEY=" + filepath.Join(creds, "client.key")}
	for _, c := range []struct {
		env  []string
		args []string
	}{
		{envOf(n), []string{"--op", "vault-read", "--keys", "3"}},
		{envOf(n), []string{"--op", "vault-write"}},
		{envOf(n), []string{"--op", "transit-encrypt"}},
		{kmipEnv, []string{"--op", "kmip-get", "--kmip-address", kmipAddr}},
	} {
		t.Run(c.args[1], func(t *testing.T) {
			// COFFER_BENCH_DURATION and COFFER_BENCH_CONCURRENCY make it a
			// measurement (the log lines carry the figures).
			dur, conc := cmp.Or(os.Getenv("COFFER_BENCH_DURATION"), "500ms"), cmp.Or(os.Getenv("COFFER_BENCH_CONCURRENCY"), "2")
			args := append([]string{"bench", "--concurrency", conc, "--duration", dur, "--peer-fixed", "--format", "json"}, c.args...)
			out, err := coffer(t, c.env, args...)
			if err != nil {
				t.Fatalf("coffer %v: %v\n%s\nserver log:\n%s", args, err, out, n.logs)
			}
			var r benchJSON
			if err := json.Unmarshal([]byte(out), &r); err != nil {
				t.Fatalf("output %q: %v", out, err)
			}
			if r.Peer == nil {
				t.Fatalf("no peer result: %s", out)
			}
			t.Logf("%s x%s: coffer %d ops, peer %d ops, ratio %.2f, p50 %.2f ms, p99.9 %.2f ms", r.Op, conc, r.Ops, r.Peer.Ops, r.Ratio, r.P50, r.P999)
			if r.Op != c.args[1] || r.Ops == 0 || r.Errors != 0 || r.P50 <= 0 || r.P999 < r.P50 || r.Peer == nil || r.Peer.Ops == 0 || r.Peer.Errors != 0 || r.Ratio <= 0 {
				t.Fatalf("bench result %+v (first error %q)", r, r.FirstErr)
			}
		})
	}
}
