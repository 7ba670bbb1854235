package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/client"
	"github.com/coffer-kms/coffer/internal/testutil"
)

// BenchmarkFailover measures how long writes stop when the leader of a
// 3-node cluster dies: each iteration kills -9 the leader while four
// clients write through every node's address, takes the time from the
// kill to the first acknowledged write sent after it, restarts the killed
// node and waits until it has caught up. Reported: failover-p50-ms,
// failover-p90-ms, failover-max-ms, and threshold-ms (the configured
// cluster.failover_threshold). scripts/failover-bench.sh runs it 20 times.
func BenchmarkFailover(b *testing.B) {
	bc := startBenchCluster(b, 3)
	ctx := context.Background()
	acks := &ackLog{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			c := bc.client(b)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				start := time.Now()
				_, err := c.PutSecret(ctx, "default", fmt.Sprintf("fo-%d-%d", w, i%50), []byte("v"))
				if err == nil {
					acks.add(start, time.Now())
				} else {
					time.Sleep(10 * time.Millisecond) // a pause before retrying a refused write, as a client would
				}
			}
		}(w)
	}
	defer func() { close(stop); wg.Wait() }()
	if _, ok := acks.waitAfter(time.Now(), 20*time.Second); !ok {
		b.Fatal("no write acknowledged on the new cluster")
	}
	var times []time.Duration
	b.ResetTimer()
	for it := 0; it < b.N; it++ {
		li, leader := bc.waitLeader(b, 20*time.Second)
		killed := time.Now()
		leader.kill9()
		d, ok := acks.waitAfter(killed, failoverThreshold+20*time.Second)
		if !ok {
			b.Fatalf("iteration %d: no write acknowledged within %s of killing the leader", it, failoverThreshold+20*time.Second)
		}
		times = append(times, d)
		leader.start()
		leader.waitState("open")
		bc.waitCaughtUp(b, li, 30*time.Second)
	}
	b.StopTimer()
	p50, p90, mx := durStats(times)
	b.ReportMetric(ms(p50), "failover-p50-ms")
	b.ReportMetric(ms(p90), "failover-p90-ms")
	b.ReportMetric(ms(mx), "failover-max-ms")
	b.ReportMetric(ms(failoverThreshold), "threshold-ms")
	sorted := slices.Clone(times)
	slices.Sort(sorted)
	var parts []string
	for _, d := range sorted {
		parts = append(parts, fmt.Sprintf("%.0f", ms(d)))
	}
	// One line only: go test cuts a benchmark's log after a few lines.
	b.Logf("failover times (ms, sorted, %d kills, threshold %s): %s", len(times), failoverThreshold, strings.Join(parts, " "))
}

// pinAPIPort rewrites a node's configuration so that it listens again on
// the API port it was given at its first start (listen: 127.0.0.1:0): the
// cluster records each node's API URL (forwarding goes to it), and clients
// know the nodes by their URLs, so a restarted node must keep its address.
func pinAPIPort(tb testing.TB, config, url string) {
	tb.Helper()
	b, err := os.ReadFile(config)
	if err != nil {
		tb.Fatal(err)
	}
	host := strings.TrimPrefix(url, "https://")
	s := strings.Replace(string(b), "\nlisten: 127.0.0.1:0\n", "\nlisten: "+host+"\n", 1)
	if s == string(b) {
		tb.Fatalf("%s: no listen: 127.0.0.1:0 to pin", config)
	}
	if err := os.WriteFile(config, []byte(s), 0o600); err != nil {
		tb.Fatal(err)
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// ackLog records acknowledged writes (when sent, when acknowledged) from
// several client goroutines.
type ackLog struct {
	mu   sync.Mutex
	acks []ackEvent
}

type ackEvent struct{ start, end time.Time }

func (l *ackLog) add(start, end time.Time) {
	l.mu.Lock()
	l.acks = append(l.acks, ackEvent{start, end})
	l.mu.Unlock()
}

// firstAfter is how long after t the first write sent at or after t was
// acknowledged (a write sent before t proves nothing about the cluster
// after t).
func (l *ackLog) firstAfter(t time.Time) (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var first time.Time
	for _, a := range l.acks {
		if !a.start.Before(t) && (first.IsZero() || a.end.Before(first)) {
			first = a.end
		}
	}
	return first.Sub(t), !first.IsZero()
}

// waitAfter waits up to d for firstAfter(t).
func (l *ackLog) waitAfter(t time.Time, d time.Duration) (time.Duration, bool) {
	var dur time.Duration
	err := testutil.Poll(d, func() error {
		var ok bool
		if dur, ok = l.firstAfter(t); !ok {
			return testutil.ErrNotYet
		}
		return nil
	})
	return dur, err == nil
}

// durStats returns the nearest-rank median, 90th percentile and maximum.
func durStats(ds []time.Duration) (p50, p90, mx time.Duration) {
	if len(ds) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := func(p float64) time.Duration {
		i := int(p*float64(len(s))+0.999999) - 1
		return s[max(0, min(i, len(s)-1))]
	}
	return rank(0.5), rank(0.9), s[len(s)-1]
}

// benchNode is one coffer server process for a testing.TB.
type benchCluster struct {
	nodes []*node
	token string
}

// startBenchCluster is startCluster with each node's API port kept across
// restarts (followers forward to the leader's recorded address).
func startBenchCluster(tb testing.TB, n int) *benchCluster {
	tb.Helper()
	nodes, _ := startCluster(tb, n)
	for _, nd := range nodes {
		pinAPIPort(tb, nd.config, nd.url)
	}
	return &benchCluster{nodes: nodes, token: nodes[0].token}
}

// client is a client that knows every node (it fails over between them).
func (bc *benchCluster) client(tb testing.TB) *client.Client {
	var urls []string
	for _, n := range bc.nodes {
		urls = append(urls, n.url)
	}
	c, err := client.New(client.Config{Addresses: urls, CACert: bc.nodes[0].caFile, Token: bc.token, Timeout: 4 * time.Second})
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// waitLeader waits until a running node reports itself leader.
func (bc *benchCluster) waitLeader(tb testing.TB, d time.Duration) (int, *node) {
	tb.Helper()
	li := -1
	testutil.WaitFor(tb, d, "a leader", func() error {
		for i, n := range bc.nodes {
			if !n.running() {
				continue
			}
			if h, err := n.local().Health(context.Background()); err == nil && h.Role == "leader" {
				li = i
				return nil
			}
		}
		return errors.New("no node is leader")
	})
	return li, bc.nodes[li]
}

// waitCaughtUp waits until node i follows a leader and has applied what
// the leader had applied when the wait began.
func (bc *benchCluster) waitCaughtUp(tb testing.TB, i int, d time.Duration) {
	tb.Helper()
	_, leader := bc.waitLeader(tb, d)
	lh, err := leader.local().Health(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	testutil.WaitFor(tb, d, fmt.Sprintf("node %d to catch up", i+1), func() error {
		h, err := bc.nodes[i].local().Health(context.Background())
		if err == nil && (h.Role == "follower" || h.Role == "leader") && h.AppliedIndex >= lh.AppliedIndex {
			return nil
		}
		return fmt.Errorf("health %+v, %v; leader applied %d", h, err, lh.AppliedIndex)
	})
}
