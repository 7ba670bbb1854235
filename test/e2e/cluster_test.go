package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/client"
	"github.com/coffer-kms/coffer/internal/testutil"
)

const failoverThreshold = 1500 * time.Millisecond

// freeAddr returns a free address on ip now.
func freeAddr(t testing.TB, ip string) string {
	t.Helper()
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatalf("listen on %s (Linux routes all of 127/8 to lo): %v", ip, err)
	}
	defer l.Close()
	return l.Addr().String()
}

// clusterNode is a node whose raft transport listens on its own loopback
// IP (127.0.0.<i+10>), so its traffic is recognisable by source address.
func clusterNode(t testing.TB, base string, i int, extra string) *node {
	t.Helper()
	ip := fmt.Sprintf("127.0.0.%d", i+10)
	raft := freeAddr(t, ip)
	if !strings.Contains(extra, "backup:") {
		extra = "backup:\n  check_interval: 1h\n" + extra
	}
	return newNode(t, filepath.Join(base, fmt.Sprintf("n%d", i)), fmt.Sprintf(`cluster:
  listen: %s
  failover_threshold: %s
%s`, raft, failoverThreshold, extra))
}

// joinNode starts n uninitialised and joins it through its control socket.
func joinNode(t testing.TB, n *node, url, token string) {
	t.Helper()
	n.start()
	t.Cleanup(n.stop)
	n.waitState("uninitialized")
	pf := filepath.Join(filepath.Dir(n.dataDir), filepath.Base(n.dataDir)+".pass")
	os.WriteFile(pf, []byte(testPassphrase+"\n"), 0o600)
	out, err := coffer(t, nil, "cluster", "join", url, "--token", token, "--data-dir", n.dataDir, "--passphrase-file", pf)
	if err != nil {
		t.Fatalf("join: %v\n%s\n%s", err, out, n.logs)
	}
	n.waitState("open")
	if err := n.local().SetAutoOpen(context.Background(), true); err != nil {
		t.Fatal(err)
	}
}

// waitVoters waits until c reports want voters and a leader.
func waitVoters(t testing.TB, c *client.Client, want int) client.ClusterStatus {
	t.Helper()
	var st client.ClusterStatus
	testutil.WaitFor(t, 60*time.Second, fmt.Sprintf("%d voters and a leader", want), func() error {
		var err error
		st, err = c.ClusterStatus(context.Background())
		voters := 0
		for _, n := range st.Nodes {
			if n.Voter {
				voters++
			}
		}
		if err == nil && voters == want && st.Leader != "" {
			return nil
		}
		return fmt.Errorf("status %+v, %v", st, err)
	})
	return st
}

// startCluster makes an initialised first node and joins n-1 more; extra
// YAML goes into every node's configuration.
func startCluster(t testing.TB, n int, extra ...string) ([]*node, *client.Client) {
	t.Helper()
	return startClusterWith(t, n, nil, extra...)
}

// startClusterWith is startCluster; beforeInit, if set, sees the first
// node started and not yet initialised.
func startClusterWith(t testing.TB, n int, beforeInit func(*node), extra ...string) ([]*node, *client.Client) {
	t.Helper()
	base := t.TempDir()
	x := strings.Join(extra, "")
	nodes := []*node{clusterNode(t, base, 1, x)}
	nodes[0].start()
	t.Cleanup(nodes[0].stop)
	if beforeInit != nil {
		beforeInit(nodes[0])
	}
	nodes[0].initialise()
	if out, err := coffer(t, nil, "cluster", "init", "--data-dir", nodes[0].dataDir); err != nil || !strings.Contains(out, "leads, raft at ") {
		t.Fatalf("cluster init: %v\n%s", err, out)
	}
	c0 := nodes[0].https()
	tok, err := c0.CreateJoinToken(context.Background(), 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for i := 2; i <= n; i++ {
		nd := clusterNode(t, base, i, x)
		nd.token = nodes[0].token
		if i > 2 {
			// Each token is good for one join.
			tk, err := c0.CreateJoinToken(context.Background(), 10*time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			tok = tk
		}
		joinNode(t, nd, nodes[0].url, tok.Token)
		nodes = append(nodes, nd)
	}
	waitVoters(t, c0, n)
	var urls []string
	for _, nd := range nodes {
		urls = append(urls, nd.url)
	}
	all, err := client.New(client.Config{Addresses: urls, CACert: nodes[0].caFile, Token: nodes[0].token, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return nodes, all
}

// longClient reaches every node with a request timeout fit for slow
// operations (archiving, backups) on a loaded machine.
func longClient(t testing.TB, nodes []*node) *client.Client {
	t.Helper()
	var urls []string
	for _, nd := range nodes {
		urls = append(urls, nd.url)
	}
	c, err := client.New(client.Config{Addresses: urls, CACert: nodes[0].caFile, Token: nodes[0].token, Timeout: 2 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func leaderOf(t *testing.T, nodes []*node) (int, *node) {
	t.Helper()
	for i, n := range nodes {
		if n.cmd.ProcessState != nil {
			continue
		}
		if h, err := n.local().Health(context.Background()); err == nil && h.Role == "leader" {
			return i, n
		}
	}
	t.Fatal("no leader")
	return -1, nil
}

// TestClusterJoinForwardHealth: three nodes form a cluster; a write sent to
// a follower is forwarded and visible everywhere; health answers 200 on the
// leader and 429 on followers; a token is good for one join only.
func TestClusterJoinForwardHealth(t *testing.T) {
	nodes, _ := startCluster(t, 3)
	ctx := context.Background()
	_, leader := leaderOf(t, nodes)
	var follower *node
	for _, n := range nodes {
		if n != leader {
			follower = n
		}
	}
	fc := withToken(t, follower, nodes[0].token)
	if _, err := fc.PutSecret(ctx, "default", "via-follower", []byte("v1")); err != nil {
		t.Fatalf("write on a follower: %v", err)
	}
	// Read your writes: a write answered through a follower is already
	// applied there, so the next read on it sees the write (no waiting).
	for i := range 20 {
		name, val := fmt.Sprintf("ryw-%d", i), fmt.Sprintf("value-%d", i)
		if _, err := fc.PutSecret(ctx, "default", name, []byte(val)); err != nil {
			t.Fatalf("write %d on a follower: %v", i, err)
		}
		if s, err := fc.GetSecret(ctx, "default", name, 0); err != nil || string(s.Value) != val {
			t.Fatalf("read on the follower right after its write %d: %v (value %q)", i, err, s.Value)
		}
	}
	for _, n := range nodes {
		c := withToken(t, n, nodes[0].token)
		waitUntil(t, 10*time.Second, func() bool {
			s, err := c.GetSecret(ctx, "default", "via-follower", 0)
			return err == nil && string(s.Value) == "v1"
		}, "the forwarded write on "+n.dataDir)
		h, err := n.local().Health(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := "follower"
		if n == leader {
			want = "leader"
		}
		if h.Role != want {
			t.Fatalf("%s health role %q, want %q", n.dataDir, h.Role, want)
		}
	}
	if st := httpStatus(t, follower, "/api/v1/sys/health"); st != 429 {
		t.Fatalf("follower health %d, want 429", st)
	}
	if st := httpStatus(t, leader, "/api/v1/sys/health"); st != 200 {
		t.Fatalf("leader health %d, want 200", st)
	}
	if st := httpStatus(t, follower, "/v1/sys/health"); st != 429 {
		t.Fatalf("follower Vault health %d, want 429", st)
	}
	// A client that wants no forwarding gets a redirect to the leader.
	pemCA, _ := os.ReadFile(follower.caFile)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemCA)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequest("PUT", follower.url+"/api/v1/wallets/default/secrets/redirected", strings.NewReader(`{"value":"eA=="}`))
	req.Header.Set("Authorization", "Bearer "+nodes[0].token)
	req.Header.Set("X-Coffer-No-Request-Forwarding", "1")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTemporaryRedirect || !strings.HasPrefix(resp.Header.Get("Location"), leader.url+"/api/v1/wallets/default/secrets/redirected") {
		t.Fatalf("no-forwarding write on a follower: %d %q (leader %s)", resp.StatusCode, resp.Header.Get("Location"), leader.url)
	}
	// A client cannot pose as the forwarding node by having the follower
	// drop its marker (hop-by-hop headers named in Connection).
	preq, _ := http.NewRequest("POST", follower.url+"/api/v1/cluster/promote", strings.NewReader(`{"node_id":"x"}`))
	preq.Header.Set("Connection", "X-Coffer-Forwarded-By, X-Coffer-Node-Call")
	preq.Header.Set("X-Coffer-Node-Call", "1")
	presp, err := hc.Do(preq)
	if err != nil {
		t.Fatal(err)
	}
	presp.Body.Close()
	if presp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("unauthenticated promote through a follower: %d, want 401", presp.StatusCode)
	}
	// Unknown join tokens cost the leader no raft write; after five failures
	// the source is refused outright (429) for a while.
	lh, _ := leader.local().Health(ctx)
	var codes []int
	// From an address of its own: the nodes forward from 127.0.0.1.
	evil := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool},
		DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 77)}}).DialContext}}
	evilKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "n-evil"}}, evilKey)
	body, _ := json.Marshal(map[string]any{"token": "cjt1.bogus.x", "node_id": "n-evil", "raft_address": "127.0.0.99:1", "api_url": "https://127.0.0.99:1", "csr": csr})
	for i := 0; i < 8; i++ {
		jreq, _ := http.NewRequest("POST", leader.url+"/api/v1/cluster/join", bytes.NewReader(body))
		jresp, err := evil.Do(jreq)
		if err != nil {
			t.Fatal(err)
		}
		jresp.Body.Close()
		codes = append(codes, jresp.StatusCode)
	}
	if want := []int{401, 401, 401, 401, 401, 429, 429, 429}; !slices.Equal(codes, want) {
		t.Fatalf("bogus joins answered %v, want %v", codes, want)
	}
	// Through a follower the leader counts the client, not the follower.
	freq, _ := http.NewRequest("POST", follower.url+"/api/v1/cluster/join", bytes.NewReader(body))
	fresp, err := evil.Do(freq)
	if err != nil {
		t.Fatal(err)
	}
	fresp.Body.Close()
	if fresp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("a waiting client's join through a follower: %d, want 429", fresp.StatusCode)
	}
	if lh2, _ := leader.local().Health(ctx); lh2.AppliedIndex != lh.AppliedIndex {
		t.Fatalf("bogus joins moved the applied index from %d to %d", lh.AppliedIndex, lh2.AppliedIndex)
	}
	if out, err := coffer(t, nil, "cluster", "status", "--data-dir", follower.dataDir); err != nil || !strings.Contains(out, "(this node)") || strings.Count(out, "true") < 3 {
		t.Fatalf("cluster status: %v\n%s", err, out)
	}
	// A master key rotation on the leader reaches every node's keystore:
	// a follower restarted afterwards opens (auto-open) and serves.
	gen, err := fc.RotateMasterKey(ctx)
	if err != nil {
		t.Fatalf("rotate the master key through a follower: %v", err)
	}
	if _, err := fc.PutSecret(ctx, "default", "after-rotation", []byte("v2")); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 30*time.Second, func() bool {
		st, err := follower.local().Status(ctx)
		return err == nil && st.KeystoreGeneration == gen
	}, "the follower's keystore to take the new master key generation")
	follower.kill9()
	follower.start()
	follower.waitState("open")
	fc = withToken(t, follower, nodes[0].token)
	waitUntil(t, 10*time.Second, func() bool {
		s, err := fc.GetSecret(ctx, "default", "after-rotation", 0)
		return err == nil && string(s.Value) == "v2"
	}, "a restarted follower after a master key rotation")
}

func withToken(t *testing.T, n *node, tok string) *client.Client {
	t.Helper()
	c, err := client.New(client.Config{Addresses: []string{n.url}, CACert: n.caFile, Token: tok, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func waitUntil(t *testing.T, d time.Duration, ok func() bool, what string) {
	t.Helper()
	testutil.WaitFor(t, d, what, func() error {
		if !ok() {
			return testutil.ErrNotYet
		}
		return nil
	})
}

func httpStatus(t *testing.T, n *node, path string) int {
	t.Helper()
	pem, err := os.ReadFile(n.caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := hc.Get(n.url + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestClusterLeaderKill: kill -9 of the leader under write load; writes
// resume within the failover threshold plus 2 s, and every acknowledged
// write is on every node, the killed one too once it is back.
func TestClusterLeaderKill(t *testing.T) {
	nodes, all := startCluster(t, 3)
	ctx := context.Background()
	var (
		mu      sync.Mutex
		acked   = map[string]string{}
		lastOK  time.Time
		longest time.Duration
	)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			k := fmt.Sprintf("load-%d", i)
			_, err := all.PutSecret(ctx, "default", k, []byte("v-"+k))
			now := time.Now()
			mu.Lock()
			if err == nil {
				acked[k] = "v-" + k
				if !lastOK.IsZero() && now.Sub(lastOK) > longest {
					longest = now.Sub(lastOK)
				}
				lastOK = now
			}
			mu.Unlock()
			if err != nil {
				time.Sleep(20 * time.Millisecond) // a pause before retrying a refused write
			}
		}
	}()
	time.Sleep(time.Second) // load before the kill (real processes: no injectable clock)
	li, leader := leaderOf(t, nodes)
	leader.kill9()
	time.Sleep(failoverThreshold + 3*time.Second) // load through the failover, whose gap is measured
	close(stop)
	<-done
	mu.Lock()
	gap, n := longest, len(acked)
	mu.Unlock()
	if n < 10 {
		t.Fatalf("only %d writes acknowledged", n)
	}
	if gap > failoverThreshold+2*time.Second {
		t.Fatalf("writes stopped for %s after the leader was killed (threshold %s + 2s)", gap, failoverThreshold)
	}
	t.Logf("%d writes acknowledged; longest gap %s", n, gap)
	// The killed node comes back (auto-open) and catches up.
	leader.start()
	leader.waitState("open")
	for i, nd := range nodes {
		c := withToken(t, nd, nodes[0].token)
		waitUntil(t, 30*time.Second, func() bool {
			for k, v := range acked {
				s, err := c.GetSecret(ctx, "default", k, 0)
				if err != nil || string(s.Value) != v {
					return false
				}
			}
			return true
		}, fmt.Sprintf("every acknowledged write on node %d (killed: %v)", i, i == li))
	}
}

// TestTwoNodePairReadOnly: the survivor of a two-node pair goes into
// read-only restricted mode (reads served, writes 503 read_only_restricted)
// and leaves it when its peer returns; after the operator confirms the peer
// is gone, recover --force-standalone makes it a leader alone.
func TestTwoNodePairReadOnly(t *testing.T) {
	nodes, _ := startCluster(t, 2)
	ctx := context.Background()
	c0 := withToken(t, nodes[0], nodes[0].token)
	if _, err := c0.PutSecret(ctx, "default", "k", []byte("before")); err != nil {
		t.Fatal(err)
	}
	_, leader := leaderOf(t, nodes)
	survivor := nodes[0]
	if survivor == leader {
		survivor = nodes[1]
	}
	sc := withToken(t, survivor, nodes[0].token)
	// Served by the survivor itself: until it has caught up since it
	// opened, its reads go to the leader.
	waitUntil(t, 10*time.Second, func() bool {
		h, err := survivor.local().Health(ctx)
		if err != nil || h.CaughtUp == nil || !*h.CaughtUp {
			return false
		}
		s, err := sc.GetSecret(ctx, "default", "k", 0)
		return err == nil && string(s.Value) == "before"
	}, "replication to the survivor")
	leader.kill9()
	waitUntil(t, 4*failoverThreshold+5*time.Second, func() bool {
		h, err := survivor.local().Health(ctx)
		return err == nil && h.Role == "read-only"
	}, "read-only restricted mode on the survivor")
	if st := httpStatus(t, survivor, "/api/v1/sys/health"); st != 503 {
		t.Fatalf("survivor health %d, want 503", st)
	}
	if s, err := sc.GetSecret(ctx, "default", "k", 0); err != nil || string(s.Value) != "before" {
		t.Fatalf("read in read-only restricted mode: %v", err)
	}
	_, err := sc.PutSecret(ctx, "default", "k", []byte("during"))
	if !client.IsCode(err, "read_only_restricted") || !strings.Contains(err.Error(), "read-only restricted mode") {
		t.Fatalf("write in read-only restricted mode: %v", err)
	}
	// A master key rotation there is refused and changes no keystore.
	if _, err := sc.RotateMasterKey(ctx); err == nil {
		t.Fatal("master key rotation without quorum succeeded")
	}
	if st, err := survivor.local().Status(ctx); err != nil || st.KeystoreGeneration != 1 {
		t.Fatalf("keystore generation after a refused rotation: %d %v", st.KeystoreGeneration, err)
	}
	// Its status says so: not writable, with the no-quorum alert.
	if st, err := survivor.local().Status(ctx); err != nil || st.Writable || !hasAlert(st, "no_quorum") {
		t.Fatalf("survivor status without quorum: writable %v, alerts %+v, %v", st.Writable, st.Alerts, err)
	}
	// The peer returns: the pair has quorum again.
	leader.start()
	leader.waitState("open")
	waitUntil(t, 20*time.Second, func() bool {
		_, err := sc.PutSecret(ctx, "default", "k", []byte("after"))
		return err == nil
	}, "writes after the peer returned")
	if st, err := survivor.local().Status(ctx); err != nil || !st.Writable || hasAlert(st, "no_quorum") {
		t.Fatalf("survivor status with quorum back: writable %v, alerts %+v, %v", st.Writable, st.Alerts, err)
	}
	// The peer is gone for good: the operator makes the survivor standalone.
	leader.kill9()
	survivor.stop()
	if out, err := coffer(t, nil, "cluster", "recover", "--data-dir", survivor.dataDir); err == nil || !strings.Contains(out, "--force-standalone") {
		t.Fatalf("recover without confirmation: %v\n%s", err, out)
	}
	if out, err := coffer(t, nil, "cluster", "recover", "--force-standalone", "--data-dir", survivor.dataDir); err != nil {
		t.Fatalf("recover: %v\n%s", err, out)
	}
	survivor.start()
	survivor.waitState("open")
	sc = withToken(t, survivor, nodes[0].token)
	waitUntil(t, 20*time.Second, func() bool {
		_, err := sc.PutSecret(ctx, "default", "k", []byte("standalone"))
		return err == nil
	}, "writes on the recovered survivor")
	if s, err := sc.GetSecret(ctx, "default", "k", 0); err != nil || string(s.Value) != "standalone" {
		t.Fatalf("after recovery: %v", err)
	}
}

// TestClusterReplaceNode: a follower dies for good; it is removed and a
// fresh node joins in its place, catching up from a snapshot by itself.
func TestClusterReplaceNode(t *testing.T) {
	nodes, all := startCluster(t, 3)
	ctx := context.Background()
	acked := putMany(t, all, "before", 30)
	li, leader := leaderOf(t, nodes)
	dead := nodes[(li+1)%3]
	deadID, _ := nodeIDOf(t, dead)
	dead.kill9()
	if out, err := coffer(t, nil, "cluster", "remove", deadID, "--data-dir", leader.dataDir); err != nil || !strings.Contains(out, "removed") {
		t.Fatalf("remove: %v\n%s", err, out)
	}
	tok, err := withToken(t, leader, nodes[0].token).CreateJoinToken(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	fresh := clusterNode(t, filepath.Dir(nodes[0].dataDir), 9, "")
	fresh.token = nodes[0].token
	joinNode(t, fresh, leader.url, tok.Token)
	st := waitVoters(t, withToken(t, leader, nodes[0].token), 3)
	for _, n := range st.Nodes {
		if n.ID == deadID {
			t.Fatalf("the removed node is still a member: %+v", st)
		}
	}
	fc := withToken(t, fresh, nodes[0].token)
	waitUntil(t, 20*time.Second, func() bool {
		for k, v := range acked {
			s, err := fc.GetSecret(ctx, "default", k, 0)
			if err != nil || string(s.Value) != v {
				return false
			}
		}
		return true
	}, "the replacement node catching up")
	if _, err := fc.PutSecret(ctx, "default", "after-replace", []byte("x")); err != nil {
		t.Fatalf("write through the replacement: %v", err)
	}
	// The used token does not admit another node.
	other := clusterNode(t, filepath.Dir(nodes[0].dataDir), 8, "")
	other.start()
	t.Cleanup(other.stop)
	other.waitState("uninitialized")
	pf := filepath.Join(t.TempDir(), "pass")
	os.WriteFile(pf, []byte(testPassphrase+"\n"), 0o600)
	if out, err := coffer(t, nil, "cluster", "join", leader.url, "--token", tok.Token, "--data-dir", other.dataDir, "--passphrase-file", pf); err == nil || !strings.Contains(out, "already used") {
		t.Fatalf("a second join with the same token: %v\n%s", err, out)
	}
}

// TestClusterPassphraseChange: a keystore passphrase change on the leader
// reaches every node without anyone re-entering anything; on a follower
// it is refused with the reason.
func TestClusterPassphraseChange(t *testing.T) {
	nodes, _ := startCluster(t, 2)
	ctx := context.Background()
	_, leader := leaderOf(t, nodes)
	follower := nodes[0]
	if follower == leader {
		follower = nodes[1]
	}
	if err := follower.local().ChangePassphrase(ctx, testPassphrase, "new-cluster-passphrase"); err == nil || !strings.Contains(err.Error(), "leader") {
		t.Fatalf("passphrase change on a follower: %v", err)
	}
	if err := leader.local().ChangePassphrase(ctx, testPassphrase, "new-cluster-passphrase"); err != nil {
		t.Fatal(err)
	}
	// The follower re-seals its keystore within a few seconds: after a seal
	// it opens with the new passphrase only.
	waitUntil(t, 15*time.Second, func() bool {
		return strings.Contains(follower.logs.String(), "keystore re-sealed under the passphrase changed on the leader")
	}, "the follower taking the new passphrase")
	if err := follower.local().Seal(ctx); err != nil {
		t.Fatal(err)
	}
	if err := follower.local().Open(ctx, testPassphrase); err == nil {
		t.Fatal("the old passphrase still opens the follower")
	}
	if err := follower.local().Open(ctx, "new-cluster-passphrase"); err != nil {
		t.Fatalf("the new passphrase on the follower: %v", err)
	}
	// Auto-open was rebuilt too: a restart opens by itself.
	follower.kill9()
	follower.start()
	follower.waitState("open")
}

// hasAlert reports whether the status carries an alert with code.
func hasAlert(st client.Status, code string) bool {
	for _, a := range st.Alerts {
		if a.Code == code {
			return true
		}
	}
	return false
}
