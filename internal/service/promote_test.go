package service

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/testutil"
	"github.com/coffer-kms/coffer/internal/tlsutil"
)

// localPeers is Peers between services in this process: each call goes to
// the service registered under the URL, as internal/api/peer would over
// HTTPS. refusePromote makes promotions fail (the leader cannot be
// reached just then); promoteCalls counts them.
type localPeers struct {
	mu            sync.Mutex
	svcs          map[string]*Service
	refusePromote atomic.Bool
	promoteCalls  atomic.Int64
}

func (p *localPeers) get(url string) (*Service, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s := p.svcs[url]; s != nil {
		return s, nil
	}
	return nil, errors.New("no node at " + url)
}

func (p *localPeers) add(url string, s *Service) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.svcs == nil {
		p.svcs = map[string]*Service{}
	}
	p.svcs[url] = s
}

func (p *localPeers) FetchCA(_ context.Context, url string) ([]byte, error) {
	s, err := p.get(url)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(s.cfg.TLSDir, tlsutil.CAFile))
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("no CA certificate")
	}
	return blk.Bytes, nil
}

func (p *localPeers) Join(ctx context.Context, url string, _ *tls.Config, req JoinRequest) (JoinResponse, error) {
	s, err := p.get(url)
	if err != nil {
		return JoinResponse{}, err
	}
	return s.Cluster.AdmitNode(ctx, req)
}

func (p *localPeers) Promote(ctx context.Context, url string, _ *tls.Config, nodeID string) error {
	p.promoteCalls.Add(1)
	if p.refusePromote.Load() {
		return errors.New("the leader cannot be reached (test)")
	}
	s, err := p.get(url)
	if err != nil {
		return err
	}
	return s.Cluster.Promote(WithIdentity(ctx, Identity{Kind: KindNode, Name: nodeID}), nodeID)
}

func (p *localPeers) Health(_ context.Context, url string, _ *tls.Config) (PeerHealth, error) {
	s, err := p.get(url)
	if err != nil {
		return PeerHealth{}, err
	}
	h := PeerHealth{State: s.State()}
	if h.State == StateOpen {
		h.Role, h.AppliedIndex, h.CatchUp = s.Cluster.Role(), s.Cluster.AppliedIndex(), s.Cluster.CatchUpStatus()
	}
	return h, nil
}

// memberSvc is a clustered service at api (registered in p), not yet
// initialised. Its failover threshold is the end-to-end tests' 1.5 s: with
// 300 ms a leader steps down after 50 ms without a majority's answer,
// which a busy machine's scheduling delays reach, and the tests that
// watch one leader's view would see another's.
func memberSvc(t *testing.T, p *localPeers, api string) *Service {
	t.Helper()
	dir := t.TempDir()
	tlsDir := filepath.Join(dir, "tls")
	if _, err := tlsutil.EnsureGenerated(tlsDir, []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	addr := testutil.FreeAddr(t)
	s := newSvcWith(t, testConfig(Config{DataDir: dir, TLSDir: tlsDir, ClusterBind: addr, ClusterAdvertise: addr, APIURL: api,
		Peers: p, FailoverThreshold: 1500 * time.Millisecond, WriteRetryDelay: 100 * time.Millisecond}))
	t.Cleanup(func() { s.Close() }) // #nosec G104 -- cleanup only
	p.add(api, s)
	return s
}

// voter reports whether id is a voter in s's raft configuration.
func voter(s *Service, id string) error {
	servers, err := s.node.Servers()
	if err != nil {
		return err
	}
	for _, sv := range servers {
		if sv.ID == id {
			if sv.Voter {
				return nil
			}
			return errors.New(id + " is a non-voter")
		}
	}
	return errors.New(id + " is not in the configuration")
}

// TestJoinedNodePromotesItselfAfterARestart: a node that joined and was
// sealed (or restarted) before its promotion to voter went through asks
// for it again once it is open and caught up, instead of staying a
// non-voter for good (a third node that never votes leaves a cluster that
// survives no failure).
func TestJoinedNodePromotesItselfAfterARestart(t *testing.T) {
	p := &localPeers{}
	a := memberSvc(t, p, "https://a.test")
	if _, err := a.Init(rootCtx(), local, []byte(pass)); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "a leader", func() error {
		if !a.node.IsLeader() {
			return errors.New("not yet")
		}
		return nil
	})
	a.Cluster.afterOpenClustered(rootCtx()) // records its API URL
	tok, err := a.Cluster.CreateJoinToken(rootCtx(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	b := memberSvc(t, p, "https://b.test")
	p.refusePromote.Store(true)
	if err := b.Cluster.JoinCluster(rootCtx(), local, "https://a.test", tok.Token, []byte(pass)); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 20*time.Second, "a refused promotion", func() error {
		if p.promoteCalls.Load() == 0 {
			return errors.New("no promotion asked yet")
		}
		return nil
	})
	if err := b.Seal(rootCtx()); err != nil {
		t.Fatal(err)
	}
	p.refusePromote.Store(false)
	if err := b.Open(rootCtx(), []byte(pass)); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 20*time.Second, "the joined node a voter", func() error { return voter(a, b.nodeID) })
}

// trioForTest is three services in one process (a initialised, b and c
// joined), every one a voter; it returns them and the leader.
func trioForTest(t *testing.T) (nodes []*Service, p *localPeers, leader func() *Service) {
	t.Helper()
	p = &localPeers{}
	a := memberSvc(t, p, "https://a.test")
	if _, err := a.Init(rootCtx(), local, []byte(pass)); err != nil {
		t.Fatal(err)
	}
	nodes = []*Service{a}
	leader = func() *Service {
		for _, s := range nodes {
			if s.State() == StateOpen && s.node.IsLeader() {
				return s
			}
		}
		return nil
	}
	testutil.WaitFor(t, 10*time.Second, "a leader", func() error {
		if !a.node.IsLeader() {
			return errors.New("not yet")
		}
		return nil
	})
	a.Cluster.afterOpenClustered(rootCtx()) // records its API URL
	for _, api := range []string{"https://b.test", "https://c.test"} {
		var l *Service
		testutil.WaitFor(t, 10*time.Second, "a leader", func() error {
			if l = leader(); l == nil {
				return errors.New("none")
			}
			return nil
		})
		tok, err := l.Cluster.CreateJoinToken(rootCtx(), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		n := memberSvc(t, p, api)
		if err := n.Cluster.JoinCluster(rootCtx(), local, l.cfg.APIURL, tok.Token, []byte(pass)); err != nil {
			t.Fatal(err)
		}
		testutil.WaitFor(t, 20*time.Second, api+" a voter", func() error { return voter(l, n.nodeID) })
		nodes = append(nodes, n)
	}
	return nodes, p, leader
}

// TestFollowerWithAChangedRaftAddressSaysSo: a follower restarted with
// another raft address, in a cluster whose other two keep their leader,
// is never dialled at its new address and stays without a leader; its
// alert names the two addresses and what to do instead of sending the
// operator to look for a lost majority.
func TestFollowerWithAChangedRaftAddressSaysSo(t *testing.T) {
	nodes, p, leader := trioForTest(t)
	var f *Service
	for _, n := range nodes {
		if n != leader() {
			f = n
		}
	}
	cfg := f.cfg
	old := cfg.ClusterAdvertise
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	cfg.ClusterBind = testutil.FreeAddr(t)
	cfg.ClusterAdvertise = cfg.ClusterBind
	f2 := newSvcWith(t, cfg)
	t.Cleanup(func() { f2.Close() }) // #nosec G104 -- cleanup only
	p.add(cfg.APIURL, f2)
	if err := f2.Open(rootCtx(), []byte(pass)); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "an alert naming both raft addresses", func() error {
		for _, a := range f2.Status().Alerts {
			if a.Code == AlertNoQuorum && strings.Contains(a.Message, old) && strings.Contains(a.Message, cfg.ClusterAdvertise) {
				return nil
			}
		}
		return fmt.Errorf("alerts %+v", f2.Status().Alerts)
	})
}

// TestRemoveRefusedWhenItWouldLeaveNoMajority: with one follower down,
// removing the other (a wrong id picked at 3 a.m.) would leave two voters
// of which one answers: no majority, and every write stops until the dead
// node returns. The leader refuses it, names the unreachable node, and
// keeps leading; removing the dead one goes through.
func TestRemoveRefusedWhenItWouldLeaveNoMajority(t *testing.T) {
	nodes, _, leader := trioForTest(t)
	l := leader()
	var others []*Service
	for _, n := range nodes {
		if n != l {
			others = append(others, n)
		}
	}
	dead, healthy := others[0], others[1]
	if err := dead.Seal(rootCtx()); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the leader's heartbeats to the sealed node failing", func() error {
		if _, down := l.node.Unreachable(dead.nodeID); !down {
			return errors.New("not yet")
		}
		return nil
	})
	err := l.Cluster.RemoveNode(rootCtx(), healthy.nodeID)
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), dead.nodeID) {
		t.Fatalf("remove of the healthy follower with the other one down: %v; want a conflict naming %s", err, dead.nodeID)
	}
	if err := voter(l, healthy.nodeID); err != nil || !l.node.IsLeader() {
		t.Fatalf("after the refused removal: %v, leader %v", err, l.node.IsLeader())
	}
	if _, err := l.Objects.PutSecret(rootCtx(), DefaultWallet, "k", []byte("v")); err != nil {
		t.Fatalf("write after the refused removal: %v", err)
	}
	if err := l.Cluster.RemoveNode(rootCtx(), dead.nodeID); err != nil {
		t.Fatalf("remove of the dead follower: %v", err)
	}
}

// TestPromoteRefusedWhenItWouldLeaveNoMajority: promoting a non-voter that
// is down would add a voter that does not answer: with a leader alone, two
// voters of which one answers, and every write stops. The leader refuses.
func TestPromoteRefusedWhenItWouldLeaveNoMajority(t *testing.T) {
	p := &localPeers{}
	a := memberSvc(t, p, "https://a.test")
	if _, err := a.Init(rootCtx(), local, []byte(pass)); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "a leader", func() error {
		if !a.node.IsLeader() {
			return errors.New("not yet")
		}
		return nil
	})
	a.Cluster.afterOpenClustered(rootCtx())
	tok, err := a.Cluster.CreateJoinToken(rootCtx(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	b := memberSvc(t, p, "https://b.test")
	p.refusePromote.Store(true) // b stays a non-voter
	if err := b.Cluster.JoinCluster(rootCtx(), local, "https://a.test", tok.Token, []byte(pass)); err != nil {
		t.Fatal(err)
	}
	if err := b.Seal(rootCtx()); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the leader's heartbeats to the sealed node failing", func() error {
		if _, down := a.node.Unreachable(b.nodeID); !down {
			return errors.New("not yet")
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(rootCtx(), 5*time.Second)
	defer cancel()
	if err := a.Cluster.Promote(ctx, b.nodeID); !errors.Is(err, ErrConflict) {
		t.Fatalf("promotion of a non-voter that is down: %v, want a conflict", err)
	}
	if err := voter(a, b.nodeID); err == nil || !a.node.IsLeader() {
		t.Fatalf("after the refused promotion: b a voter, or a no longer leads (%v)", a.Cluster.Role())
	}
}

// TestCatchingUpWarningWithoutQuorum: a node that opened without a leader
// (its peer down) has not caught up, but in read-only restricted mode it
// serves reads from its own copy: its warning says so, not that its reads
// go to the leader.
func TestCatchingUpWarningWithoutQuorum(t *testing.T) {
	p := &localPeers{}
	a := memberSvc(t, p, "https://a.test")
	if _, err := a.Init(rootCtx(), local, []byte(pass)); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "a leader", func() error {
		if !a.node.IsLeader() {
			return errors.New("not yet")
		}
		return nil
	})
	a.Cluster.afterOpenClustered(rootCtx())
	tok, err := a.Cluster.CreateJoinToken(rootCtx(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	b := memberSvc(t, p, "https://b.test")
	if err := b.Cluster.JoinCluster(rootCtx(), local, "https://a.test", tok.Token, []byte(pass)); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 20*time.Second, "b a voter", func() error { return voter(a, b.nodeID) })
	if err := b.Seal(rootCtx()); err != nil {
		t.Fatal(err)
	}
	if err := a.Seal(rootCtx()); err != nil {
		t.Fatal(err)
	}
	if err := b.Open(rootCtx(), []byte(pass)); err != nil {
		t.Fatal(err)
	}
	if !b.Cluster.ReadOnlyRestricted() || b.Cluster.CaughtUp() {
		t.Fatalf("b alone: role %s, caught up %v", b.Cluster.Role(), b.Cluster.CaughtUp())
	}
	for _, w := range b.Status().Warnings {
		if w.Code == AlertCatchingUp {
			if strings.Contains(w.Message, "sent to the leader") || !strings.Contains(w.Message, "read-only restricted") {
				t.Fatalf("catching-up warning without a leader: %q", w.Message)
			}
			return
		}
	}
	t.Fatal("no catching-up warning")
}

// TestLeaderWarnsOfAnUnreachableMember: with one node of three down the
// cluster survives no further failure; the leader's status carries a
// warning naming the member (so coffer_warnings and coffer status show a
// degraded cluster), and it goes once the member is back.
func TestLeaderWarnsOfAnUnreachableMember(t *testing.T) {
	nodes, _, leader := trioForTest(t)
	l := leader()
	var f *Service
	for _, n := range nodes {
		if n != l {
			f = n
		}
	}
	warned := func() bool {
		for _, w := range l.Status().Warnings {
			if w.Code == AlertMemberUnreachable && strings.Contains(w.Message, f.nodeID) {
				return true
			}
		}
		return false
	}
	if warned() {
		t.Fatal("warning with every member up")
	}
	if err := f.Seal(rootCtx()); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "a warning naming the sealed member", func() error {
		if !warned() {
			return fmt.Errorf("warnings %+v", l.Status().Warnings)
		}
		return nil
	})
	if err := f.Open(rootCtx(), []byte(pass)); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the warning gone", func() error {
		if !l.node.IsLeader() {
			// Another leader starts with a clean view: nothing shown.
			t.Fatal("the leader lost its leadership: the warning's end is not shown")
		}
		if warned() {
			return errors.New("still warned")
		}
		return nil
	})
}

// TestSwitchoverToAnUnreachableNodeIsRefused: a switchover to a voter the
// leader cannot reach is refused at once as a conflict naming it, instead
// of pausing writes for a transfer that times out and answering
// "unavailable", which the runbook says to retry.
func TestSwitchoverToAnUnreachableNodeIsRefused(t *testing.T) {
	nodes, _, leader := trioForTest(t)
	l := leader()
	var f *Service
	for _, n := range nodes {
		if n != l {
			f = n
		}
	}
	if err := f.Seal(rootCtx()); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the leader's heartbeats to the sealed node failing", func() error {
		if _, down := l.node.Unreachable(f.nodeID); !down {
			return errors.New("not yet")
		}
		return nil
	})
	_, err := l.Cluster.Switchover(rootCtx(), f.nodeID)
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), f.nodeID) {
		t.Fatalf("switchover to a sealed voter: %v; want a conflict naming it", err)
	}
	if !l.node.IsLeader() {
		t.Fatal("the leader lost its leadership")
	}
}
