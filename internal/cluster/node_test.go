package cluster

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/coffer-kms/coffer/internal/testutil"
	"github.com/coffer-kms/coffer/internal/tlsutil"
)

// listFSM records the commands it applies; Apply answers how many it holds.
type listFSM struct {
	mu   sync.Mutex
	cmds []string
}

func (f *listFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	if l.Type != raft.LogCommand {
		return nil
	}
	f.cmds = append(f.cmds, string(l.Data))
	return len(f.cmds)
}

func (f *listFSM) ApplyBatch(logs []*raft.Log) []any {
	out := make([]any, len(logs))
	for i, l := range logs {
		out[i] = f.Apply(l)
	}
	return out
}

func (f *listFSM) Snapshot() (raft.FSMSnapshot, error) { return nopSnapshot{}, nil }
func (f *listFSM) Restore(rc io.ReadCloser) error      { return rc.Close() }

func (f *listFSM) list() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.cmds)
}

type nopSnapshot struct{}

func (nopSnapshot) Persist(s raft.SnapshotSink) error { return s.Close() }
func (nopSnapshot) Release()                          {}

func openNode(t *testing.T, cfg Config) *Node {
	t.Helper()
	n, err := Open(cfg)
	if err != nil {
		t.Fatalf("open node %s: %v", cfg.NodeID, err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func apply(t *testing.T, n *Node, cmd string) any {
	t.Helper()
	res, err := n.Apply(ctxFor(t, 10*time.Second), []byte(cmd))
	if err != nil {
		t.Fatalf("apply %q on %s: %v", cmd, n.cfg.NodeID, err)
	}
	return res
}

// TestStandaloneNodeBootstrapsAndApplies: a fresh node started without join
// makes itself the only voter, leads, applies through its FSM, and after a
// restart replays its log into a fresh FSM and goes on from there.
func TestStandaloneNodeBootstrapsAndApplies(t *testing.T) {
	dir := t.TempDir()
	n := openNode(t, Config{Dir: dir, NodeID: "n1"})
	if st := n.Status(); st.State != "stopped" || st.NodeID != "n1" {
		t.Fatalf("status before start: %+v", st)
	}
	fsm := &listFSM{}
	if err := n.Start(fsm, false); err != nil {
		t.Fatal(err)
	}
	if err := n.Start(fsm, false); err == nil {
		t.Fatal("a second Start of a running node succeeded")
	}
	if err := n.WaitLeader(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if got := apply(t, n, "a"); got != 1 {
		t.Fatalf("apply a answered %v, want the FSM's 1", got)
	}
	if got := apply(t, n, "b"); got != 2 {
		t.Fatalf("apply b answered %v, want 2", got)
	}
	if !n.IsLeader() {
		t.Fatal("a standalone node is not leader")
	}
	if id, addr := n.Leader(); id != "n1" || addr != n.Address() || addr == "" {
		t.Fatalf("leader (%q, %q), want n1 at its own address %q", id, addr, n.Address())
	}
	servers, err := n.Servers()
	if err != nil || len(servers) != 1 || servers[0] != (Server{ID: "n1", Address: n.Address(), Voter: true}) {
		t.Fatalf("servers %+v, %v: want n1 as the only voter", servers, err)
	}
	if !n.IsMember("n1") || n.IsMember("n2") || n.admitsPeer("n2") {
		t.Fatalf("membership: n1 %v, n2 %v, admits n2 %v; want only n1", n.IsMember("n1"), n.IsMember("n2"), n.admitsPeer("n2"))
	}
	st := n.Status()
	if st.State != "Leader" || st.Leader != "n1" || st.Term == 0 || st.CommitIndex < st.LastIndex || st.AppliedIndex == 0 {
		t.Fatalf("status %+v", st)
	}
	if err := n.ReadIndex(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatalf("read index on the only voter: %v", err)
	}
	last, err := n.LastIndex() // the read index's barrier is in the log too
	if err != nil || last <= st.LastIndex {
		t.Fatalf("last index %d, %v after the read index's barrier (was %d)", last, err, st.LastIndex)
	}
	if !n.HasFSMEntries(1, last) {
		t.Fatal("HasFSMEntries finds none in a log holding commands")
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}

	// The log survives; a restart does not bootstrap again and replays it.
	n = openNode(t, Config{Dir: dir, NodeID: "n1"})
	if got, err := n.LastIndex(); err != nil || got != last {
		t.Fatalf("last index after reopening %d, %v; want %d", got, err, last)
	}
	fsm = &listFSM{}
	if err := n.Start(fsm, false); err != nil {
		t.Fatal(err)
	}
	if err := n.WaitLeader(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if got := fsm.list(); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("replayed %q, want [a b]", got)
	}
	if got := apply(t, n, "c"); got != 3 {
		t.Fatalf("apply after the restart answered %v, want 3", got)
	}
}

// TestStoppedNodeFailsClosed: with raft stopped every call that needs it
// says so with ErrStopped, and nobody is a member (a node certificate alone
// must not pass for one); the log store stays readable.
func TestStoppedNodeFailsClosed(t *testing.T) {
	n := openNode(t, Config{Dir: t.TempDir(), NodeID: "n1"})
	if err := n.Start(&listFSM{}, false); err != nil {
		t.Fatal(err)
	}
	if err := n.WaitLeader(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	apply(t, n, "a")
	if !n.IsMember("n1") {
		t.Fatal("n1 is not a member of its own running cluster")
	}
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := n.Stop(); err != nil {
		t.Fatalf("a second Stop: %v", err)
	}
	if n.IsMember("n1") {
		t.Fatal("IsMember is true with raft stopped")
	}
	if n.IsLeader() {
		t.Fatal("a stopped node says it leads")
	}
	if id, addr := n.Leader(); id != "" || addr != "" {
		t.Fatalf("a stopped node knows leader (%q, %q)", id, addr)
	}
	ctx := ctxFor(t, 5*time.Second)
	calls := map[string]error{
		"Apply":        func() error { _, err := n.Apply(ctx, []byte("x")); return err }(),
		"WaitLeader":   n.WaitLeader(ctx),
		"WaitReady":    n.WaitReady(ctx),
		"ReadIndex":    n.ReadIndex(ctx),
		"VerifyLeader": n.VerifyLeader(ctx),
		"Snapshot":     n.Snapshot(),
		"AddVoter":     n.AddVoter(ctx, "n2", "127.0.0.1:1"),
		"AddNonvoter":  n.AddNonvoter(ctx, "n2", "127.0.0.1:1"),
		"Remove":       n.Remove(ctx, "n2"),
		"Transfer":     n.Transfer(ctx, "", ""),
		"Servers":      func() error { _, err := n.Servers(); return err }(),
	}
	for name, err := range calls {
		if !errors.Is(err, ErrStopped) {
			t.Errorf("%s with raft stopped: %v, want ErrStopped", name, err)
		}
	}
	if st := n.Status(); st.State != "stopped" || st.LastIndex == 0 {
		t.Fatalf("status of a stopped node %+v: want stopped with the log's last index", st)
	}
	if !n.LastContact().IsZero() {
		t.Fatal("a stopped node reports a last contact")
	}
}

// TestJoiningNodeAdmitsItsFirstContact: a node started to join has no
// configuration: it is nobody's member (IsMember is false, even for
// itself), yet its raft transport lets in the leader that adds it.
func TestJoiningNodeAdmitsItsFirstContact(t *testing.T) {
	n := openNode(t, Config{Dir: t.TempDir(), NodeID: "n2"})
	if err := n.Start(&listFSM{}, true); err != nil {
		t.Fatal(err)
	}
	if servers, err := n.Servers(); err != nil || len(servers) != 0 {
		t.Fatalf("servers of a joining node %+v, %v: want none", servers, err)
	}
	if n.IsMember("n2") || n.IsMember("n1") {
		t.Fatal("a joining node counts members before it has a configuration")
	}
	if !n.admitsPeer("n1") {
		t.Fatal("a joining node refuses the leader's first contact")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := n.WaitReady(ctx); !errors.Is(err, ErrTimeout) {
		t.Fatalf("WaitReady without a leader: %v, want ErrTimeout", err)
	}
}

// testCA is a cluster CA in a temp dir.
func testCA(t *testing.T) *tlsutil.CA {
	t.Helper()
	dir := t.TempDir()
	if _, err := tlsutil.EnsureGenerated(dir, []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	ca, err := tlsutil.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// nodeTLS is the mutual-TLS configuration of a node id with a fresh key
// and a node certificate from ca; it returns the key's fingerprint too.
func nodeTLS(t *testing.T, ca *tlsutil.CA, id string) (*tls.Config, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := ca.IssueNodeCert(&key.PublicKey, id)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}},
		RootCAs: ca.Pool(), ClientCAs: ca.Pool(), MinVersion: tls.VersionTLS12}, tlsutil.KeyFingerprint(leaf)
}

// tlsNode is a node on a TLS raft transport on 127.0.0.1.
func tlsNode(t *testing.T, ca *tlsutil.CA, id string) (*Node, *listFSM) {
	t.Helper()
	conf, _ := nodeTLS(t, ca, id)
	addr := testutil.FreeAddr(t)
	return openNode(t, Config{Dir: t.TempDir(), NodeID: id, Bind: addr, Advertise: addr, TLS: conf}), &listFSM{}
}

// TestTwoNodesAddAndRemoveAVoter: a leader adds a joining node over mutual
// TLS; the new voter receives the log, knows the leader and its address,
// refuses writes as a follower; once removed it is no member of the
// leader's cluster.
func TestTwoNodesAddAndRemoveAVoter(t *testing.T) {
	ca := testCA(t)
	n1, fsm1 := tlsNode(t, ca, "n1")
	n2, fsm2 := tlsNode(t, ca, "n2")
	if err := n1.Start(fsm1, false); err != nil {
		t.Fatal(err)
	}
	if err := n1.WaitLeader(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	apply(t, n1, "a")
	if err := n2.Start(fsm2, true); err != nil {
		t.Fatal(err)
	}
	if err := n1.AddVoter(ctxFor(t, 30*time.Second), "n2", n2.Address()); err != nil {
		t.Fatalf("add n2: %v", err)
	}
	apply(t, n1, "b")
	testutil.WaitFor(t, 30*time.Second, "n2 to apply the log", func() error {
		if got := fsm2.list(); !slices.Equal(got, []string{"a", "b"}) {
			return fmt.Errorf("n2 applied %q", got)
		}
		return nil
	})
	testutil.WaitFor(t, 30*time.Second, "n2 to know the configuration and the leader", func() error {
		id, addr := n2.Leader()
		if id != "n1" || addr != n1.Address() || !n2.IsMember("n1") || !n2.IsMember("n2") {
			return fmt.Errorf("leader (%q, %q), member n1 %v, n2 %v", id, addr, n2.IsMember("n1"), n2.IsMember("n2"))
		}
		return nil
	})
	servers, err := n1.Servers()
	if err != nil || len(servers) != 2 || !servers[1].Voter || servers[1].ID != "n2" || servers[1].Address != n2.Address() {
		t.Fatalf("leader's servers %+v, %v: want n1 and the voter n2", servers, err)
	}
	if !n1.IsMember("n2") || n1.IsMember("n3") {
		t.Fatal("leader's membership is not {n1, n2}")
	}
	if _, err := n2.Apply(ctxFor(t, 5*time.Second), []byte("x")); !errors.Is(err, ErrNotLeader) || !errors.Is(err, ErrNotApplied) {
		t.Fatalf("apply on the follower: %v, want ErrNotLeader and ErrNotApplied", err)
	}
	if n2.LastContact().IsZero() {
		t.Fatal("the follower never heard from the leader")
	}
	if err := n1.ReadIndex(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatalf("read index with two voters: %v", err)
	}

	if err := n1.Remove(ctxFor(t, 30*time.Second), "n2"); err != nil {
		t.Fatalf("remove n2: %v", err)
	}
	if n1.IsMember("n2") {
		t.Fatal("n2 is still a member after its removal")
	}
	if servers, err := n1.Servers(); err != nil || len(servers) != 1 || servers[0].ID != "n1" {
		t.Fatalf("servers after removing n2 %+v, %v", servers, err)
	}
	// Alone again, the leader commits without n2.
	apply(t, n1, "c")
}

// TestRecoverStandalone: the survivor of a two-voter cluster cannot lead
// alone; after RecoverStandalone it is the only voter and leads. A node
// with no raft history has nothing to recover.
func TestRecoverStandalone(t *testing.T) {
	if err := RecoverStandalone(Config{Dir: t.TempDir(), NodeID: "n1"}); err == nil {
		t.Fatal("RecoverStandalone of an empty raft dir succeeded")
	}
	ca := testCA(t)
	n1, fsm1 := tlsNode(t, ca, "n1")
	n2, fsm2 := tlsNode(t, ca, "n2")
	if err := n1.Start(fsm1, false); err != nil {
		t.Fatal(err)
	}
	if err := n1.WaitLeader(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := n2.Start(fsm2, true); err != nil {
		t.Fatal(err)
	}
	if err := n1.AddVoter(ctxFor(t, 30*time.Second), "n2", n2.Address()); err != nil {
		t.Fatalf("add n2: %v", err)
	}
	apply(t, n1, "a")
	cfg := n1.cfg
	if err := n2.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n1.Close(); err != nil {
		t.Fatal(err)
	}
	if err := RecoverStandalone(Config{Dir: cfg.Dir, NodeID: "n3"}); err == nil {
		t.Fatal("RecoverStandalone for a node id not in the configuration succeeded")
	}
	if err := RecoverStandalone(Config{Dir: cfg.Dir, NodeID: "n1"}); err != nil {
		t.Fatalf("recover n1: %v", err)
	}
	n1 = openNode(t, cfg)
	fsm1 = &listFSM{}
	if err := n1.Start(fsm1, false); err != nil {
		t.Fatal(err)
	}
	if err := n1.WaitLeader(ctxFor(t, 30*time.Second)); err != nil {
		t.Fatalf("the recovered node does not lead alone: %v", err)
	}
	if servers, err := n1.Servers(); err != nil || len(servers) != 1 || servers[0].ID != "n1" {
		t.Fatalf("servers after the recovery %+v, %v", servers, err)
	}
	apply(t, n1, "b")
	if got := fsm1.list(); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("after the recovery the FSM holds %q, want [a b]", got)
	}
}

// TestTransportBindsMembersToTheirKey: the raft listener admits a member
// only with the certificate key the cluster recorded for it; the same
// name on another key (minted by whoever holds the CA key), a stranger's
// node certificate from another CA, and an endpoint certificate are
// refused.
func TestTransportBindsMembersToTheirKey(t *testing.T) {
	ca := testCA(t)
	serverConf, _ := nodeTLS(t, ca, "n1")
	goodConf, goodKey := nodeTLS(t, ca, "n2")
	otherKeyConf, _ := nodeTLS(t, ca, "n2")
	strangerConf, _ := nodeTLS(t, testCA(t), "n2")
	s, err := newTLSStream("127.0.0.1:0", "127.0.0.1:7000", serverConf,
		func(id string) bool { return id == "n2" },
		func(id, key string) bool { return id == "n2" && key == goodKey })
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { s.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := s.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(30 * time.Second))
			if err := c.(*tls.Conn).Handshake(); err == nil {
				c.Write([]byte{1})
			}
			c.Close()
		}
	}()
	addr := s.Listener.Addr().String()
	dial := func(conf *tls.Config) error {
		c := conf.Clone()
		c.InsecureSkipVerify = true // the client side is not under test
		conn, err := tls.Dial("tcp", addr, c)
		if err != nil {
			return err
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(30 * time.Second))
		var b [1]byte
		_, err = conn.Read(b[:])
		return err
	}
	if err := dial(goodConf); err != nil {
		t.Fatalf("the member with its recorded key: %v", err)
	}
	for name, conf := range map[string]*tls.Config{"another key": otherKeyConf, "another CA": strangerConf} {
		if err := dial(conf); err == nil {
			t.Errorf("n2 with %s was let in", name)
		}
	}
}

// TestNewTLSStreamRefusesIncompleteConfig: the raft transport never runs
// without a node certificate and a CA, nor advertises an address peers
// cannot dial.
func TestNewTLSStreamRefusesIncompleteConfig(t *testing.T) {
	ca := testCA(t)
	conf, _ := nodeTLS(t, ca, "n1")
	noCA := conf.Clone()
	noCA.RootCAs, noCA.ClientCAs = nil, nil
	for name, c := range map[string]struct {
		conf      *tls.Config
		advertise string
	}{
		"no TLS":                 {nil, "127.0.0.1:7000"},
		"no certificate":         {&tls.Config{RootCAs: ca.Pool(), ClientCAs: ca.Pool()}, "127.0.0.1:7000"},
		"no CA":                  {noCA, "127.0.0.1:7000"},
		"unspecified advertise":  {conf, "0.0.0.0:7000"},
		"advertise without port": {conf, "127.0.0.1"},
	} {
		s, err := newTLSStream("127.0.0.1:0", c.advertise, c.conf, nil, nil)
		if err == nil {
			s.Close()
			t.Errorf("%s: the transport started", name)
		}
	}
}

// TestVerifyNode: a forwarded request's peer must present a node
// certificate of the cluster CA; raw chains are verified here, an
// endpoint's client certificate from the same CA is not a node's.
func TestVerifyNode(t *testing.T) {
	ca := testCA(t)
	node, _ := nodeTLS(t, ca, "n1")
	stranger, _ := nodeTLS(t, testCA(t), "n1")
	raw := func(c *tls.Config) [][]byte { return c.Certificates[0].Certificate }
	if err := VerifyNode(raw(node), nil, ca.Pool()); err != nil {
		t.Fatalf("node certificate of the CA: %v", err)
	}
	if err := VerifyNode(raw(stranger), nil, ca.Pool()); err == nil {
		t.Fatal("a node certificate of another CA verified")
	}
	if err := VerifyNode(nil, nil, ca.Pool()); err == nil {
		t.Fatal("no certificate verified")
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := x509.ParseCertificateRequest(csrDER)
	endpoint, _, err := ca.IssueClientCert(csr, "ep")
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(endpoint)
	if err := VerifyNode([][]byte{endpoint}, [][]*x509.Certificate{{leaf}}, ca.Pool()); err == nil {
		t.Fatal("an endpoint certificate passed for a node's")
	}
}

// TestSeedStartsAfterTheSeededIndex: a raft dir seeded for a restored state
// starts as a standalone node whose log goes on after the seeded index, in
// a term no lower than the seeded one, without replaying anything into the
// FSM. The seeded snapshot is listed but has no data until one is written.
// Seeding refuses a dir that holds raft data and a zero index or term.
func TestSeedStartsAfterTheSeededIndex(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "raft")
	if err := Seed(dir, "n1", 0, 3); err == nil {
		t.Fatal("Seed at index 0 succeeded")
	}
	if err := Seed(dir, "n1", 100, 3); err != nil {
		t.Fatal(err)
	}
	if err := Seed(dir, "n1", 100, 3); err == nil {
		t.Fatal("Seed over raft data succeeded")
	}
	n := openNode(t, Config{Dir: dir, NodeID: "n1"})
	if idx, err := n.SnapshotIndex(); err != nil || idx != 100 {
		t.Fatalf("snapshot index %d, %v; want 100", idx, err)
	}
	if term, ok := n.TermAt(100); !ok || term != 3 {
		t.Fatalf("term at 100: %d %v; want 3", term, ok)
	}
	if confIndex, data, ok := n.ConfigurationAt(100); !ok || confIndex != 100 || !strings.Contains(string(data), "n1") {
		t.Fatalf("configuration at 100: %d %q %v", confIndex, data, ok)
	}
	if !n.SeedUnwritten() {
		t.Fatal("the seeded snapshot is not reported unwritten")
	}
	if err := n.RestoreLatestSnapshot(&listFSM{}); err == nil {
		t.Fatal("the seeded snapshot, which has no data, was restored")
	}
	fsm := &listFSM{}
	if err := n.Start(fsm, false); err != nil {
		t.Fatal(err)
	}
	if err := n.WaitLeader(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	apply(t, n, "a")
	if got := fsm.list(); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("FSM holds %q, want only the new entry", got)
	}
	if last, err := n.LastIndex(); err != nil || last <= 100 {
		t.Fatalf("last index %d, %v: the log does not go on after the seed", last, err)
	}
	if st := n.Status(); st.Term < 3 {
		t.Fatalf("term %d after the seed at term 3", st.Term)
	}
}

// stateFSM is a listFSM whose snapshot is data; Persist waits for block
// (when set) before writing it. Restore records what it read.
type stateFSM struct {
	listFSM
	data     string
	block    chan struct{}
	restored chan string
}

func (f *stateFSM) Snapshot() (raft.FSMSnapshot, error) { return stateSnap{f.data, f.block}, nil }
func (f *stateFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return err
	}
	f.restored <- string(b)
	return nil
}

type stateSnap struct {
	data  string
	block chan struct{}
}

func (s stateSnap) Persist(sink raft.SnapshotSink) error {
	if s.block != nil {
		<-s.block
	}
	if _, err := io.WriteString(sink, s.data); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}
func (stateSnap) Release() {}

// copyDir copies the files of src into dst: the image a kill -9 leaves on
// disk when nothing is being written.
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		if fi.IsDir() {
			return os.MkdirAll(to, 0o700)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(to, b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestSeededNodeKilledBeforeItsSnapshotIsWritten: a restored node is killed
// after its first start, while the data of the snapshot made at that start
// is still being written. It starts again from what the kill left (the
// seeded snapshot, its log after it), writes its snapshot at that start,
// and a node joining it receives that snapshot and the entries after it.
func TestSeededNodeKilledBeforeItsSnapshotIsWritten(t *testing.T) {
	ca := testCA(t)
	dir := filepath.Join(t.TempDir(), "raft")
	if err := Seed(dir, "n1", 100, 3); err != nil {
		t.Fatal(err)
	}
	conf, _ := nodeTLS(t, ca, "n1")
	addr := testutil.FreeAddr(t)
	n1 := openNode(t, Config{Dir: dir, NodeID: "n1", Bind: addr, Advertise: addr, TLS: conf})
	_, cd, _ := n1.ConfigurationAt(100)
	block := make(chan struct{})
	fsm := &stateFSM{data: "state at 100", block: block}
	if err := n1.SnapshotBeforeStart(fsm, 100, 3, 100, cd); err != nil {
		t.Fatal(err)
	}
	if n1.SeedUnwritten() {
		t.Fatal("the seed is reported unwritten while its snapshot is being written")
	}
	if err := n1.Start(fsm, false); err != nil {
		t.Fatal(err)
	}
	if err := n1.WaitLeader(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	apply(t, n1, "a")
	// The kill: the files as they are while the snapshot's data is not
	// written.
	image := filepath.Join(t.TempDir(), "raft")
	copyDir(t, dir, image)
	close(block)
	if err := n1.Close(); err != nil {
		t.Fatal(err)
	}

	conf, _ = nodeTLS(t, ca, "n1")
	addr = testutil.FreeAddr(t)
	n1 = openNode(t, Config{Dir: image, NodeID: "n1", Bind: addr, Advertise: addr, TLS: conf})
	if idx, err := n1.SnapshotIndex(); err != nil || idx != 100 || !n1.SeedUnwritten() {
		t.Fatalf("after the kill: snapshot %d, %v, seed unwritten %v; want the seed at 100", idx, err, n1.SeedUnwritten())
	}
	last, err := n1.LastIndex()
	if err != nil || last <= 100 {
		t.Fatalf("after the kill: last index %d, %v", last, err)
	}
	term, _ := n1.TermAt(last)
	ci, cd, ok := n1.ConfigurationAt(last)
	if !ok || ci != 100 {
		t.Fatalf("configuration after the kill: %d %v", ci, ok)
	}
	fsm = &stateFSM{data: "state after a"}
	if err := n1.SnapshotBeforeStart(fsm, last, term, ci, cd); err != nil {
		t.Fatal(err)
	}
	if err := n1.Start(fsm, false); err != nil {
		t.Fatal(err)
	}
	if err := n1.WaitLeader(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	apply(t, n1, "b")
	if err := n1.WaitSnapshot(); err != nil {
		t.Fatal(err)
	}
	if idx, _ := n1.SnapshotIndex(); idx != last || n1.SeedUnwritten() {
		t.Fatalf("snapshot at %d (seed unwritten %v), want %d", idx, n1.SeedUnwritten(), last)
	}

	n2, _ := tlsNode(t, ca, "n2")
	fsm2 := &stateFSM{restored: make(chan string, 4)}
	if err := n2.Start(fsm2, true); err != nil {
		t.Fatal(err)
	}
	if err := n1.AddVoter(ctxFor(t, 30*time.Second), "n2", n2.Address()); err != nil {
		t.Fatalf("add n2: %v", err)
	}
	select {
	case got := <-fsm2.restored:
		if got != "state after a" {
			t.Fatalf("n2 restored %q", got)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("n2 was not sent the snapshot")
	}
	apply(t, n1, "c")
	testutil.WaitFor(t, 30*time.Second, "n2 to apply the entries after the snapshot", func() error {
		if got := fsm2.list(); !slices.Contains(got, "c") {
			return fmt.Errorf("n2 applied %q", got)
		}
		return nil
	})
}

// TestSnapshotBeforeStart: a snapshot made while raft is stopped becomes
// the node's latest; raft starts from it and replays only the entries
// after it. It is refused while raft runs and with incomplete arguments.
func TestSnapshotBeforeStart(t *testing.T) {
	dir := t.TempDir()
	n := openNode(t, Config{Dir: dir, NodeID: "n1"})
	if err := n.Start(&listFSM{}, false); err != nil {
		t.Fatal(err)
	}
	if err := n.WaitLeader(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	apply(t, n, "a")
	apply(t, n, "b")
	if err := n.SnapshotBeforeStart(&listFSM{}, 1, 1, 1, nil); err == nil {
		t.Fatal("SnapshotBeforeStart while raft runs succeeded")
	}
	if err := n.Stop(); err != nil {
		t.Fatal(err)
	}
	last, err := n.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	term, ok := n.TermAt(last)
	confIndex, confData, cok := n.ConfigurationAt(last)
	if !ok || !cok {
		t.Fatalf("term at %d: %v, configuration: %v", last, ok, cok)
	}
	if err := n.SnapshotBeforeStart(&listFSM{}, last, term, last+1, confData); err == nil {
		t.Fatal("a snapshot whose configuration entry is after it was accepted")
	}
	if err := n.SnapshotBeforeStart(&listFSM{}, last, term, confIndex, confData); err != nil {
		t.Fatal(err)
	}
	if err := n.WaitSnapshot(); err != nil {
		t.Fatalf("the snapshot's data: %v", err)
	}
	if idx, err := n.SnapshotIndex(); err != nil || idx != last {
		t.Fatalf("snapshot index %d, %v; want %d", idx, err, last)
	}
	fsm := &listFSM{}
	if err := n.Start(fsm, false); err != nil {
		t.Fatal(err)
	}
	if err := n.WaitLeader(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	apply(t, n, "c")
	if got := fsm.list(); !slices.Equal(got, []string{"c"}) {
		t.Fatalf("after a start from the snapshot the FSM got %q, want only the new entry", got)
	}
}

// failOnceFSM is a stateFSM whose first snapshot fails to persist (a full
// or failing disk at the restored node's first start).
type failOnceFSM struct {
	stateFSM
	failed atomic.Bool
}

func (f *failOnceFSM) Snapshot() (raft.FSMSnapshot, error) {
	if f.failed.CompareAndSwap(false, true) {
		return failSnap{}, nil
	}
	return f.stateFSM.Snapshot()
}

type failSnap struct{}

func (failSnap) Persist(sink raft.SnapshotSink) error {
	sink.Cancel()
	return errors.New("disk full (test)")
}
func (failSnap) Release() {}

// TestSeededNodeRewritesAFailedStartSnapshot: the snapshot a restored node
// writes at its first start fails. The node keeps trying through raft's own
// snapshot while it runs, so a node joining it does not go on being refused
// the seeded snapshot, which has no data, until raft's threshold is reached.
func TestSeededNodeRewritesAFailedStartSnapshot(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "raft")
	if err := Seed(dir, "n1", 100, 3); err != nil {
		t.Fatal(err)
	}
	n := openNode(t, Config{Dir: dir, NodeID: "n1", SnapshotRetryDelay: 20 * time.Millisecond})
	_, cd, _ := n.ConfigurationAt(100)
	fsm := &failOnceFSM{stateFSM: stateFSM{data: "restored state"}}
	if err := n.SnapshotBeforeStart(fsm, 100, 3, 100, cd); err != nil {
		t.Fatal(err)
	}
	if err := n.WaitSnapshot(); err == nil {
		t.Fatal("the failing snapshot was written")
	}
	if !n.SeedUnwritten() {
		t.Fatal("after the failed write the seed is not the latest snapshot")
	}
	if err := n.Start(fsm, false); err != nil {
		t.Fatal(err)
	}
	if err := n.WaitLeader(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	apply(t, n, "a")
	testutil.WaitFor(t, 20*time.Second, "a snapshot with data to replace the seed", func() error {
		if n.SeedUnwritten() {
			return errors.New("the seed is still the latest snapshot")
		}
		return nil
	})
	got := &stateFSM{restored: make(chan string, 1)}
	if err := n.RestoreLatestSnapshot(got); err != nil {
		t.Fatalf("open the latest snapshot: %v", err)
	}
	if s := <-got.restored; s != "restored state" {
		t.Fatalf("latest snapshot holds %q", s)
	}
}

type alwaysFailFSM struct{ stateFSM }

func (f *alwaysFailFSM) Snapshot() (raft.FSMSnapshot, error) { return failSnap{}, nil }

// TestSeedRetryIsOneGoroutineOwnedByTheNode: starts of a restored node whose
// snapshot at start fails again and again leave one retry running, not one
// per start, and Close ends it and waits for it.
func TestSeedRetryIsOneGoroutineOwnedByTheNode(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "raft")
	if err := Seed(dir, "n1", 100, 3); err != nil {
		t.Fatal(err)
	}
	n, err := Open(Config{Dir: dir, NodeID: "n1", SnapshotRetryDelay: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	_, cd, _ := n.ConfigurationAt(100)
	fsm := &alwaysFailFSM{stateFSM: stateFSM{data: "restored state"}}
	retries := func() int {
		buf := make([]byte, 1<<20)
		return bytes.Count(buf[:runtime.Stack(buf, true)], []byte("cluster.(*Node).replaceSeed("))
	}
	for range 3 {
		if err := n.SnapshotBeforeStart(fsm, 100, 3, 100, cd); err != nil {
			t.Fatal(err)
		}
		if err := n.WaitSnapshot(); err == nil {
			t.Fatal("the failing snapshot was written")
		}
		if err := n.Start(fsm, false); err != nil {
			t.Fatal(err)
		}
		if err := n.Stop(); err != nil {
			t.Fatal(err)
		}
	}
	if got := retries(); got != 1 {
		t.Fatalf("%d seed retries running after three failed starts; want 1", got)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if got := retries(); got != 0 {
		t.Fatalf("%d seed retries running after Close", got)
	}
}
