package service

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/state"
	"github.com/coffer-kms/coffer/internal/testutil"
	"github.com/coffer-kms/coffer/internal/tlsutil"
)

// unreachablePeers is a Peers whose every node is unreachable.
type unreachablePeers struct{}

var errUnreachable = errors.New("unreachable (test)")

func (unreachablePeers) FetchCA(context.Context, string) ([]byte, error) { return nil, errUnreachable }
func (unreachablePeers) Join(context.Context, string, *tls.Config, JoinRequest) (JoinResponse, error) {
	return JoinResponse{}, errUnreachable
}
func (unreachablePeers) Promote(context.Context, string, *tls.Config, string) error {
	return errUnreachable
}
func (unreachablePeers) Health(context.Context, string, *tls.Config) (PeerHealth, error) {
	return PeerHealth{}, errUnreachable
}

// clusteredSvc is an open clustered node, the only voter of its cluster,
// on a real raft transport.
func clusteredSvc(t *testing.T, opts ...func(*Config)) *Service {
	t.Helper()
	dir := t.TempDir()
	tlsDir := filepath.Join(dir, "tls")
	if _, err := tlsutil.EnsureGenerated(tlsDir, []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	addr := testutil.FreeAddr(t)
	cfg := Config{DataDir: dir, TLSDir: tlsDir, ClusterBind: addr, ClusterAdvertise: addr,
		Peers: unreachablePeers{}, FailoverThreshold: 300 * time.Millisecond, WriteRetryDelay: 100 * time.Millisecond}
	for _, o := range opts {
		o(&cfg)
	}
	s := newSvcWith(t, testConfig(cfg))
	t.Cleanup(func() { s.Close() }) // #nosec G104 -- cleanup only
	if _, err := s.Init(rootCtx(), local, []byte(pass)); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestStatusNotWritableWithoutQuorum: a node in read-only restricted mode
// (one voter of two, the other gone) refuses every write, and its status
// says so: not writable, with an alert naming the lost quorum and its
// runbook, as the metrics (coffer_writable, coffer_alerts) read it.
func TestStatusNotWritableWithoutQuorum(t *testing.T) {
	s := clusteredSvc(t)
	if st := s.Status(); !st.Writable || len(st.Alerts) != 0 {
		t.Fatalf("status of the leader alone: writable %v, alerts %+v", st.Writable, st.Alerts)
	}
	loseQuorum(t, s)
	if _, err := s.Objects.PutSecret(rootCtx(), DefaultWallet, "k", []byte("v")); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("write without quorum: %v, want read-only restricted", err)
	}
	st := s.Status()
	var found *Alert
	for i, a := range st.Alerts {
		if a.Code == AlertNoQuorum {
			found = &st.Alerts[i]
		}
	}
	if st.Writable || found == nil {
		t.Fatalf("status without quorum: writable %v, alerts %+v; want not writable and a %s alert", st.Writable, st.Alerts, AlertNoQuorum)
	}
	if found.Component != "cluster" || found.Runbook == "" || found.Since.IsZero() {
		t.Fatalf("no-quorum alert %+v: want component cluster, a runbook and a time", *found)
	}
}

// loseQuorum gives s a second voter that never answers (one node of two
// is no majority) and waits for read-only restricted mode.
func loseQuorum(t *testing.T, s *Service) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = s.node.AddVoter(ctx, "node-gone", "127.0.0.1:1") // #nosec G104 -- it may or may not be confirmed before the leader steps down
	testutil.WaitFor(t, 10*time.Second, "read-only restricted mode", func() error {
		if !s.Cluster.ReadOnlyRestricted() {
			return errors.New("role " + s.Cluster.Role())
		}
		return nil
	})
}

// TestForwardToRefusesReadsWithoutQuorumWhenNotAllowed: with
// cluster.allow_read_only_restricted_mode false, a node without quorum
// refuses reads on the transports that ask ForwardTo (KMIP) as the HTTP
// forwarding refuses them, instead of serving them from its copy; with the
// mode allowed, the read is served here.
func TestForwardToRefusesReadsWithoutQuorumWhenNotAllowed(t *testing.T) {
	for _, allow := range []bool{true, false} {
		s := clusteredSvc(t, func(c *Config) { c.NoReadOnlyMode = !allow })
		loseQuorum(t, s)
		for _, write := range []bool{false, true} {
			url, fwd, err := s.Cluster.ForwardTo(write)
			if fwd || url != "" {
				t.Fatalf("allowed %v, write %v: forwarded to %q without a leader", allow, write, url)
			}
			switch {
			case !allow && !errors.Is(err, ErrReadOnly):
				t.Errorf("read-only mode not allowed, write %v: ForwardTo %v, want read-only restricted", write, err)
			case allow && err != nil:
				t.Errorf("read-only mode allowed, write %v: ForwardTo %v, want served here (the service refuses writes)", write, err)
			}
		}
	}
}

// TestJoinCutByLostLeadershipIsNotATokenRefusal: a join whose token use is
// cut by the leader losing its quorum is not answered as a refused token
// (unauthenticated, which a joining node does not retry and which sends
// the operator for a new token): the answer says what happened.
func TestJoinCutByLostLeadershipIsNotATokenRefusal(t *testing.T) {
	s := clusteredSvc(t, func(c *Config) { c.FailoverThreshold = 3 * time.Second })
	testutil.WaitFor(t, 10*time.Second, "leadership", func() error {
		if !s.node.IsLeader() {
			return errors.New("not the leader yet")
		}
		return nil
	})
	tok, err := s.Cluster.CreateJoinToken(rootCtx(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "node-new"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	// A second voter that never answers: the leader can commit nothing
	// more and steps down within its lease.
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.node.AddVoter(ctx, "node-gone", "127.0.0.1:1") // #nosec G104 -- never confirmed: the leader steps down
	}()
	testutil.WaitFor(t, 5*time.Second, "the second voter in the configuration", func() error {
		if sv, _ := s.node.Servers(); len(sv) != 2 {
			return errors.New("not yet")
		}
		return nil
	})
	_, err = s.Cluster.AdmitNode(rootCtx(), JoinRequest{Token: tok.Token, NodeID: "node-new", RaftAddr: "127.0.0.1:2", APIURL: "https://127.0.0.1:3", CSR: csr})
	if err == nil {
		t.Fatal("join admitted by a leader without quorum")
	}
	if errors.Is(err, ErrUnauthenticated) || !(errors.Is(err, ErrOutcomeUnknown) || errors.Is(err, ErrReadOnly) || errors.Is(err, ErrNotLeaderNow) || errors.Is(err, ErrUnavailable)) {
		t.Fatalf("join cut by the lost leadership: %v; want outcome unknown or unavailable, not a refused token", err)
	}
}

// TestPromoteNeedsARaftMember: promoting a node that has a record but is
// not in the raft configuration (a join that failed after its record was
// written, or a removal cut short) is refused and adds no voter: a voter
// that never runs would take the majority away.
func TestPromoteNeedsARaftMember(t *testing.T) {
	s := clusteredSvc(t)
	testutil.WaitFor(t, 10*time.Second, "leadership", func() error {
		if !s.node.IsLeader() {
			return errors.New("not the leader yet")
		}
		return nil
	})
	if _, err := s.applyOpen(rootCtx(), state.TypeNodePut, state.Node{ID: "node-stale", RaftAddr: "127.0.0.1:1", APIURL: "https://127.0.0.1:2"}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(rootCtx(), 3*time.Second)
	defer cancel()
	if err := s.Cluster.Promote(ctx, "node-stale"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("promote of a node outside the raft configuration: %v, want not found", err)
	}
	if sv, err := s.node.Servers(); err != nil || len(sv) != 1 {
		t.Fatalf("raft configuration after the refused promotion: %+v, %v", sv, err)
	}
}

// TestRemovedNodeStatusSaysRemoved: a node that knows it was removed from
// the cluster (its raft configuration no longer names it) is not told to
// wait for a majority: its no-quorum alert says it was removed.
func TestRemovedNodeStatusSaysRemoved(t *testing.T) {
	s := clusteredSvc(t)
	testutil.WaitFor(t, 10*time.Second, "leadership", func() error {
		if !s.node.IsLeader() {
			return errors.New("not the leader yet")
		}
		return nil
	})
	if _, err := s.applyOpen(rootCtx(), state.TypeNodePut, state.Node{ID: "node-other", RaftAddr: "127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	// The configuration as the cluster leaves it for a removed node: the
	// others, without this one.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_ = s.node.AddVoter(ctx, "node-other", "127.0.0.1:1") // #nosec G104 -- the configuration is what matters
	_ = s.node.Remove(ctx, s.nodeID)                      // #nosec G104 -- the leader steps down as it removes itself
	testutil.WaitFor(t, 10*time.Second, "read-only restricted mode", func() error {
		if !s.Cluster.ReadOnlyRestricted() {
			return errors.New("role " + s.Cluster.Role())
		}
		return nil
	})
	st := s.Status()
	for _, a := range st.Alerts {
		if a.Code == AlertNoQuorum {
			if !strings.Contains(a.Message, "removed") {
				t.Fatalf("no-quorum alert of a removed node: %q; want it to say the node was removed", a.Message)
			}
			return
		}
	}
	t.Fatalf("no no-quorum alert on the removed node: %+v", st.Alerts)
}

// healthPeers answers every health read with h.
type healthPeers struct {
	unreachablePeers
	h PeerHealth
}

func (p healthPeers) Health(context.Context, string, *tls.Config) (PeerHealth, error) {
	return p.h, nil
}

// TestClusterStatusShowsASealedMember: a member that answers its health
// sealed (restarted without auto-open) is shown reachable and sealed, not
// as unreachable: the runbooks send an unreachable node to be replaced,
// while a sealed one only needs coffer keystore open.
func TestClusterStatusShowsASealedMember(t *testing.T) {
	s := clusteredSvc(t, func(c *Config) { c.Peers = healthPeers{h: PeerHealth{State: StateSealed}} })
	testutil.WaitFor(t, 10*time.Second, "leadership", func() error {
		if !s.node.IsLeader() {
			return errors.New("not the leader yet")
		}
		return nil
	})
	if _, err := s.applyOpen(rootCtx(), state.TypeNodePut, state.Node{ID: "node-sealed", RaftAddr: "127.0.0.1:1", APIURL: "https://127.0.0.1:2"}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := s.node.AddNonvoter(ctx, "node-sealed", "127.0.0.1:1"); err != nil {
		t.Fatal(err)
	}
	st, err := s.Cluster.ClusterStatus(rootCtx())
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range st.Nodes {
		switch {
		case n.ID == "node-sealed" && (!n.Reachable || n.State != StateSealed || n.Applied != nil):
			t.Fatalf("sealed member: %+v; want reachable, state sealed, no applied index", n)
		case n.Self && n.State != StateOpen:
			t.Fatalf("this node: %+v; want state open", n)
		}
	}
}

// TestJoinSentToASealedNodeSaysSealed: a join sent to a member whose
// keystore is sealed is refused as sealed (it takes no part in the
// cluster), not as a node that does not know the leader yet.
func TestJoinSentToASealedNodeSaysSealed(t *testing.T) {
	s := clusteredSvc(t)
	tok, err := s.Cluster.CreateJoinToken(rootCtx(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Seal(rootCtx()); err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "node-new"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Cluster.AdmitNode(rootCtx(), JoinRequest{Token: tok.Token, NodeID: "node-new", RaftAddr: "127.0.0.1:2", APIURL: "https://127.0.0.1:3", CSR: csr})
	if !errors.Is(err, ErrSealed) {
		t.Fatalf("join sent to a sealed node: %v, want sealed", err)
	}
}
