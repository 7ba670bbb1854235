package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/client"
	"github.com/coffer-kms/coffer/internal/journal"
	"github.com/coffer-kms/coffer/internal/testserver/linearize"
	"github.com/coffer-kms/coffer/internal/testserver/netproxy"
	"github.com/coffer-kms/coffer/internal/testutil"
)

// proxiedCluster is a cluster whose nodes reach each other only through
// one fault-injection proxy per node (partitions cut links by source IP).
type proxiedCluster struct {
	nodes   []*node
	proxies []*netproxy.Proxy
	ips     []string
	token   string
}

func startProxiedCluster(t *testing.T, n int) *proxiedCluster {
	t.Helper()
	base := t.TempDir()
	pc := &proxiedCluster{}
	for i := 1; i <= n; i++ {
		ip := fmt.Sprintf("127.0.0.%d", i+20)
		bind := freeAddr(t, ip)
		p, err := netproxy.New("127.0.0.1:0", bind)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		nd := newNode(t, filepath.Join(base, fmt.Sprintf("n%d", i)), fmt.Sprintf(`cluster:
  listen: %s
  advertise: %s
  failover_threshold: %s
backup:
  check_interval: 1h
`, bind, p.Addr(), failoverThreshold))
		pc.nodes, pc.proxies, pc.ips = append(pc.nodes, nd), append(pc.proxies, p), append(pc.ips, ip)
	}
	first := pc.nodes[0]
	first.start()
	t.Cleanup(first.stop)
	first.initialise()
	pc.token = first.token
	c0 := first.https()
	for _, nd := range pc.nodes[1:] {
		tok, err := c0.CreateJoinToken(context.Background(), 10*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		nd.token = first.token
		joinNode(t, nd, first.url, tok.Token)
	}
	waitVoters(t, c0, n)
	return pc
}

// isolate cuts node i off from every other node, both ways.
func (pc *proxiedCluster) isolate(i int) {
	pc.proxies[i].BlockAll()
	for j, p := range pc.proxies {
		if j != i {
			p.Block(pc.ips[i])
		}
	}
}

func (pc *proxiedCluster) heal() {
	for _, p := range pc.proxies {
		p.UnblockAll()
	}
}

func (pc *proxiedCluster) client(t *testing.T, linear bool) *client.Client {
	t.Helper()
	var urls []string
	for _, n := range pc.nodes {
		urls = append(urls, n.url)
	}
	c, err := client.New(client.Config{Addresses: urls, CACert: pc.nodes[0].caFile, Token: pc.token, Timeout: 4 * time.Second, Linearizable: linear})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// recordGet reads key for the linearizability checker: a value, not found,
// or (any error) an unknown outcome.
func recordGet(ctx context.Context, rec *linearize.Recorder, cl int, c *client.Client, key string) {
	id := rec.Begin(cl, linearize.Get(key))
	s, err := c.GetSecret(ctx, "default", key, 0)
	var e *client.Error
	switch {
	case err == nil:
		rec.End(id, linearize.Value(string(s.Value)))
	case errors.As(err, &e) && e.Status == 404:
		rec.End(id, linearize.NotFound())
	default:
		rec.End(id, linearize.Unknown())
	}
}

// outcome classifies a write's error for the linearizability checker.
func outcome(err error) linearize.Output {
	var e *client.Error
	switch {
	case err == nil:
		return linearize.Ack()
	case errors.As(err, &e) && e.Status == 503 && (e.Code == "read_only_restricted" || e.Code == "not_leader"):
		return linearize.Failed() // refused before the log: certainly not applied
	}
	return linearize.Unknown()
}

// TestClusterPartitionLinearizable: clients write and read (linearizable)
// a few keys on a 3-node cluster while its leader is cut off by a
// partition and later a follower is killed with -9; the minority node goes
// read-only restricted and still serves plain reads, the majority keeps
// writing, all nodes converge after healing, and porcupine finds the
// recorded history linearizable.
func TestClusterPartitionLinearizable(t *testing.T) {
	pc := startProxiedCluster(t, 3)
	ctx := context.Background()
	rec := linearize.NewRecorder()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var writesOK sync.Map
	for cl := 0; cl < 4; cl++ {
		wg.Add(1)
		go func(cl int) {
			defer wg.Done()
			c := pc.client(t, true)
			rng := rand.New(rand.NewPCG(uint64(cl), 7))
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprintf("lin-%d", rng.IntN(6))
				if rng.IntN(2) == 0 {
					v := fmt.Sprintf("c%d-%d", cl, i)
					id := rec.Begin(cl, linearize.Put(key, v))
					_, err := c.PutSecret(ctx, "default", key, []byte(v))
					rec.End(id, outcome(err))
					if err == nil {
						writesOK.Store(time.Now().UnixNano(), true)
					}
				} else {
					recordGet(ctx, rec, cl, c, key)
				}
			}
		}(cl)
	}
	time.Sleep(time.Second) // load in the history before the first fault
	li, leader := leaderOf(t, pc.nodes)
	rec.Note("fault", "isolate the leader "+leader.dataDir)
	pc.isolate(li)
	cut := time.Now()
	// The isolated node loses its leadership and goes read-only; the
	// majority elects a leader and keeps writing.
	waitUntil(t, 4*failoverThreshold+5*time.Second, func() bool {
		h, err := leader.local().Health(ctx)
		return err == nil && h.Role == "read-only"
	}, "read-only restricted mode on the isolated old leader")
	if _, err := withToken(t, leader, pc.token).GetSecret(ctx, "default", "lin-0", 0); err != nil && !client.IsCode(err, "not_found") {
		t.Fatalf("plain read on the minority: %v", err)
	}
	waitUntil(t, 10*time.Second, func() bool {
		ok := false
		writesOK.Range(func(k, _ any) bool {
			if time.Unix(0, k.(int64)).After(cut.Add(failoverThreshold)) {
				ok = true
				return false
			}
			return true
		})
		return ok
	}, "writes on the majority during the partition")
	rec.Note("fault", "heal")
	pc.heal()
	time.Sleep(2 * time.Second) // load in the history after the heal
	// kill -9 a follower and bring it back.
	fi := (li + 1) % 3
	if i, _ := leaderOf(t, pc.nodes); i == fi {
		fi = (fi + 1) % 3
	}
	rec.Note("fault", "kill -9 "+pc.nodes[fi].dataDir)
	pc.nodes[fi].kill9()
	time.Sleep(2 * time.Second) // load while the follower is down
	pc.nodes[fi].start()
	pc.nodes[fi].waitState("open")
	time.Sleep(2 * time.Second) // load after it is back
	close(stop)
	wg.Wait()

	ok, info, err := rec.Check(2 * time.Minute)
	if err != nil || !ok {
		rec.Visualize(filepath.Join(t.TempDir(), "history.html"))
		t.Fatalf("history of %d operations is not linearizable: %v\n%s", rec.Len(), err, info)
	}
	t.Logf("%d operations, linearizable", rec.Len())

	// Convergence: every node holds the same value of every key.
	want := map[string]string{}
	lc := pc.client(t, true)
	for k := 0; k < 6; k++ {
		key := fmt.Sprintf("lin-%d", k)
		if s, err := lc.GetSecret(ctx, "default", key, 0); err == nil {
			want[key] = string(s.Value)
		}
	}
	for _, nd := range pc.nodes {
		c := withToken(t, nd, pc.token)
		waitUntil(t, 20*time.Second, func() bool {
			for k, v := range want {
				s, err := c.GetSecret(ctx, "default", k, 0)
				if err != nil || string(s.Value) != v {
					return false
				}
			}
			return true
		}, "convergence on "+nd.dataDir)
	}
}

// TestClusterSwitchoverUnderLoad: leadership moves to another node while
// clients write; no request fails, and the new leader is the one asked for.
func TestClusterSwitchoverUnderLoad(t *testing.T) {
	nodes, all := startCluster(t, 3)
	ctx := context.Background()
	_, leader := leaderOf(t, nodes)
	var target *node
	for _, n := range nodes {
		if n != leader {
			target = n
			break
		}
	}
	targetID, _ := nodeIDOf(t, target)
	stop := make(chan struct{})
	errs := make(chan error, 100)
	var wg sync.WaitGroup
	var n int64
	var mu sync.Mutex
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := all.PutSecret(ctx, "default", fmt.Sprintf("sw-%d-%d", w, i), []byte("v")); err != nil {
					errs <- err
					return
				}
				mu.Lock()
				n++
				mu.Unlock()
			}
		}(w)
	}
	time.Sleep(time.Second) // load before the switchover
	out, err := coffer(t, nil, "cluster", "switchover", "--to", targetID, "--data-dir", leader.dataDir)
	if err != nil {
		t.Fatalf("switchover: %v\n%s", err, out)
	}
	time.Sleep(time.Second) // load after the switchover
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("a write failed during the switchover: %v", err)
	}
	if _, nl := leaderOf(t, nodes); nl != target {
		t.Fatalf("leader is %s, asked for %s", nl.dataDir, target.dataDir)
	}
	t.Logf("%d writes, none failed", n)
}

func nodeIDOf(t *testing.T, n *node) (string, error) {
	t.Helper()
	st, err := n.local().ClusterStatus(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range st.Nodes {
		if x.Self {
			return x.ID, nil
		}
	}
	t.Fatal("no self in cluster status")
	return "", nil
}

var _ = net.Listen

// TestClusterBackupsFollowTheLeader: schedules and archiving run on the
// leader only; after the leader is killed the new leader continues them,
// and the archive restores without a gap across the change of leader.
func TestClusterBackupsFollowTheLeader(t *testing.T) {
	nodes, all := startCluster(t, 3, "backup:\n  check_interval: 1s\n")
	ctx := context.Background()
	nas := t.TempDir()
	if _, err := all.SetRecoveryPassphrase(ctx, "", "e2e-recovery-passphrase"); err != nil {
		t.Fatal(err)
	}
	if _, err := all.AddDestination(ctx, client.DestinationConfig{Name: "nas", Kind: "dir", Path: nas, Archiving: true}); err != nil {
		t.Fatal(err)
	}
	// One shared mirror disk: each node mirrors into its own directory.
	disk2 := t.TempDir()
	if _, err := all.AddDestination(ctx, client.DestinationConfig{Name: "disk2", Kind: "dir", Path: disk2, Mirror: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := all.AddSchedule(ctx, client.ScheduleConfig{Name: "often", Destination: "nas", Type: "periodic", Every: "1m", Mode: "full"}); err != nil {
		t.Fatal(err)
	}
	_, leader := leaderOf(t, nodes)
	leaderID, _ := nodeIDOf(t, leader)
	waitUntil(t, 30*time.Second, func() bool {
		recs, _ := all.ListBackups(ctx, "nas")
		for _, r := range recs {
			if r.Kind == "full" && r.Status == "DONE" {
				if r.Node != leaderID {
					t.Fatalf("backup taken by %s, the leader is %s", r.Node, leaderID)
				}
				return true
			}
		}
		return false
	}, "the scheduled full backup on the leader")
	putMany(t, all, "before", 20)
	// Shipping segments encrypts each to the recovery passphrase (scrypt):
	// on a loaded machine that takes longer than the 5 s requests do.
	slow := longClient(t, nodes)
	if err := slow.ArchiveJournal(ctx); err != nil {
		t.Fatal(err)
	}
	lst0, err := withToken(t, leader, leader.token).Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 20*time.Second, func() bool {
		dirs, _ := filepath.Glob(filepath.Join(disk2, "mirror", "*"))
		if len(dirs) != 3 {
			return false
		}
		for _, d := range dirs {
			rep, err := journal.Verify(d, nil)
			if err != nil || rep.LastIndex+5 < lst0.AppliedIndex {
				return false
			}
		}
		return true
	}, "three per-node mirror directories, each a whole journal")

	leader.kill9()
	time.Sleep(failoverThreshold + time.Second) // past the failover threshold of real processes (no injectable clock)
	after := putMany(t, all, "after", 20)
	_, nl := leaderOf(t, nodes)
	lst, err := withToken(t, nl, nl.token).Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := slow.ArchiveJournal(ctx); err != nil {
		t.Fatalf("archive on the new leader: %v", err)
	}
	newID, _ := nodeIDOf(t, nl)
	// The whole history restores from the archive: the old leader's full and
	// segments, then the new leader's segments, without a gap.
	rp := filepath.Join(t.TempDir(), "rp")
	ks := filepath.Join(t.TempDir(), "ks")
	os.WriteFile(rp, []byte("e2e-recovery-passphrase\n"), 0o600)
	os.WriteFile(ks, []byte("restored-passphrase\n"), 0o600)
	out, err := coffer(t, nil, "restore", "--from", nas, "--data-dir", filepath.Join(t.TempDir(), "restored"),
		"--recovery-passphrase-file", rp, "--passphrase-file", ks, "--format", "json")
	if err != nil {
		t.Fatalf("restore across the failover: %v\n%s", err, out)
	}
	var sum struct {
		Index uint64 `json:"index"`
	}
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &sum); err != nil || sum.Index < lst.AppliedIndex {
		t.Fatalf("restored to index %d, the new leader had written up to %d: %v\n%s", sum.Index, lst.AppliedIndex, err, out)
	}
	recs, _ := all.ListBackups(ctx, "nas")
	for _, r := range recs {
		if r.Node != leaderID && r.Node != newID {
			t.Fatalf("backup %s taken by %s, neither leader", r.ID, r.Node)
		}
	}
	if len(after) != 20 {
		t.Fatal("writes after the failover")
	}
}

// TestClusterBackupCutByLeaderChange: a scheduled backup running on the
// leader when it dies is marked FAILED by the new leader, and its schedule
// is ACTIVE again (it runs at its next time, on the new leader).
func TestClusterBackupCutByLeaderChange(t *testing.T) {
	t.Setenv("COFFER_TEST_BACKUP_PAUSE", "60s") // every backup holds before saving
	nodes, all := startCluster(t, 3, "backup:\n  check_interval: 1s\n")
	ctx := context.Background()
	if _, err := all.SetRecoveryPassphrase(ctx, "", "e2e-recovery-passphrase"); err != nil {
		t.Fatal(err)
	}
	if _, err := all.AddDestination(ctx, client.DestinationConfig{Name: "nas", Kind: "dir", Path: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	if _, err := all.AddSchedule(ctx, client.ScheduleConfig{Name: "hourly", Destination: "nas", Type: "periodic", Every: "1h", Mode: "full"}); err != nil {
		t.Fatal(err)
	}
	var running client.BackupRecord
	waitUntil(t, 30*time.Second, func() bool {
		recs, _ := all.ListBackups(ctx, "nas")
		for _, r := range recs {
			if r.Status == "RUNNING" {
				running = r
				return true
			}
		}
		return false
	}, "the scheduled backup running on the leader")
	_, leader := leaderOf(t, nodes)
	leader.kill9()
	waitUntil(t, 30*time.Second, func() bool {
		recs, _ := all.ListBackups(ctx, "nas")
		for _, r := range recs {
			if r.ID == running.ID {
				return r.Status == "FAILED" && strings.Contains(r.Reason, "interrupted")
			}
		}
		return false
	}, "the cut backup marked FAILED by the new leader")
	// The new leader resets the schedule in a command of its own, after the
	// record (and the node asked may apply it a moment later): wait for it.
	testutil.WaitFor(t, 30*time.Second, "the schedule reset by the new leader", func() error {
		var last client.Schedule
		scheds, _ := all.ListSchedules(ctx)
		for _, sc := range scheds {
			if sc.Name == "hourly" {
				last = sc
			}
		}
		if last.State == "ACTIVE" && strings.Contains(last.LastResult, "interrupted") && last.Next != nil {
			return nil
		}
		return fmt.Errorf("schedule %+v", last)
	})
}
