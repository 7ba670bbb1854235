package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/testutil"
)

// TestClusterFollowerCatchUp: a follower killed while the leader takes
// many writes comes back behind. From its restart on, a read on it never
// returns stale data (it goes to the leader until the node has caught up);
// its health says caught_up false until it has applied the leader's commit
// index and true after; cluster status counts lag from the leader's commit
// index. Then a new node joins through a follower (forwarded to the
// leader) and the join names the cluster id.
func TestClusterFollowerCatchUp(t *testing.T) {
	nodes, _ := startCluster(t, 3)
	ctx := context.Background()
	li, leader := leaderOf(t, nodes)
	var f *node
	for i, n := range nodes {
		if i != li {
			f = n
			break
		}
	}
	lc := withToken(t, leader, nodes[0].token)
	if _, err := lc.PutSecret(ctx, "default", "probe", []byte("old")); err != nil {
		t.Fatal(err)
	}
	fc := withToken(t, f, nodes[0].token)
	waitUntil(t, 20*time.Second, func() bool {
		s, err := fc.GetSecret(ctx, "default", "probe", 0)
		return err == nil && string(s.Value) == "old"
	}, "the first value on the follower")
	f.kill9()
	// Far behind: many writes while it is down (each raft entries), the
	// probe last.
	putMany(t, lc, "behind", 300)
	if _, err := lc.PutSecret(ctx, "default", "probe", []byte("new")); err != nil {
		t.Fatal(err)
	}
	lh, err := leader.local().Health(ctx)
	if err != nil || lh.LeaderCommit == 0 {
		t.Fatalf("leader health has no commit index: %+v %v", lh, err)
	}
	want := lh.LeaderCommit

	f.start()
	fc = withToken(t, f, nodes[0].token)
	sawBehind, reads := false, 0
	// Reads are made all along the catch-up: each must be current.
	if err := testutil.Poll(60*time.Second, func() error {
		h, herr := f.local().Health(ctx)
		if herr == nil && h.State == "open" {
			if h.CaughtUp == nil {
				t.Fatalf("health of an open follower has no caught_up: %+v", h)
			}
			if !*h.CaughtUp {
				sawBehind = true
			} else if h.RaftApplied < want {
				t.Fatalf("health says caught up at raft index %d, the leader had committed %d before the restart", h.RaftApplied, want)
			}
		}
		if herr == nil && h.State == "open" {
			s, err := fc.GetSecret(ctx, "default", "probe", 0)
			if err == nil {
				reads++
				if string(s.Value) != "new" {
					t.Fatalf("a read on the restarted follower returned stale data %q (health %+v)", s.Value, h)
				}
			}
			if h.CaughtUp != nil && *h.CaughtUp && reads > 0 {
				return nil
			}
		}
		return fmt.Errorf("health %+v, %v", h, herr)
	}); err != nil {
		t.Fatalf("the restarted follower did not catch up: %v\n%s", err, f.logs)
	}
	t.Logf("restarted follower: %d reads, not caught up seen: %v", reads, sawBehind)
	// Caught up: the reads it serves itself are current too.
	for i := 0; i < 300; i += 37 {
		k := fmt.Sprintf("behind-%d", i)
		s, err := fc.GetSecret(ctx, "default", k, 0)
		if err != nil || string(s.Value) != "v-"+k {
			t.Fatalf("%s on the caught-up follower: %v %q", k, err, s.Value)
		}
	}

	// Cluster status on the follower: lag from the leader's commit index.
	st, err := fc.ClusterStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.LeaderCommit == nil || *st.LeaderCommit < want {
		t.Fatalf("cluster status leader commit %v, want at least %d", st.LeaderCommit, want)
	}
	for _, n := range st.Nodes {
		if !n.Self {
			continue
		}
		if n.Applied == nil || n.Lag == nil || n.CaughtUp == nil || !*n.CaughtUp {
			t.Fatalf("cluster status of this node: %+v", n)
		}
		if *n.Lag != *st.LeaderCommit-min(*st.LeaderCommit, *n.Applied) {
			t.Fatalf("lag %d is not the leader's commit %d less applied %d", *n.Lag, *st.LeaderCommit, *n.Applied)
		}
	}
	out, err := coffer(t, nil, "cluster", "status", "--data-dir", f.dataDir)
	if err != nil || !strings.Contains(out, "CAUGHT UP") || !regexp.MustCompile(`\(this node\).*\byes\b`).MatchString(out) {
		t.Fatalf("cluster status: %v\n%s", err, out)
	}

	// A join sent to a follower is forwarded to the leader; the message
	// names the cluster.
	tok, err := lc.CreateJoinToken(ctx, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	nd := clusterNode(t, filepath.Dir(nodes[0].dataDir), 4, "")
	nd.start()
	t.Cleanup(nd.stop)
	nd.waitState("uninitialized")
	pf := filepath.Join(filepath.Dir(nd.dataDir), "n4.pass")
	os.WriteFile(pf, []byte(testPassphrase+"\n"), 0o600)
	out, err = coffer(t, nil, "cluster", "join", f.url, "--token", tok.Token, "--data-dir", nd.dataDir, "--passphrase-file", pf)
	if err != nil {
		t.Fatalf("join through a follower: %v\n%s", err, out)
	}
	if !strings.Contains(out, "joined cluster "+st.ClusterID+";") || st.ClusterID == "" {
		t.Fatalf("join message does not name the cluster %q:\n%s", st.ClusterID, out)
	}
}
