// Package cluster runs hashicorp/raft for Coffer: a standalone node is one
// voter, a cluster three (or a two-node pair). Every
// mutation is a raft log entry; Apply returns only after the entry is
// committed (fsynced in the raft log) and applied by the FSM.
package cluster

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"

	"github.com/coffer-kms/coffer/internal/fsutil"
)

// Errors.
var (
	ErrNotLeader = errors.New("this node is not the leader")
	// ErrNotApplied: the entry was refused before it entered the log (not
	// the leader when submitted, or a leadership transfer in progress):
	// it was certainly not applied, and may be sent again.
	ErrNotApplied = errors.New("refused before the log: not applied")
	ErrStopped    = errors.New("cluster is not running")
	ErrTimeout    = errors.New("timed out waiting for the cluster")

	// ErrUnconfirmed: the entry was submitted but its result never came
	// back (leadership lost while committing it, raft stopped while it was
	// in flight): a majority may hold it and apply it, or not.
	ErrUnconfirmed = errors.New("submitted, result unknown")
)

// Config of a node.
type Config struct {
	Dir    string // <data-dir>/raft
	NodeID string
	Logger *slog.Logger
	// HeartbeatTimeout and ElectionTimeout; zero picks defaults suited to one node.
	HeartbeatTimeout time.Duration
	ElectionTimeout  time.Duration
	// SnapshotThreshold: log entries between snapshots (0: 8192).
	SnapshotThreshold uint64
	// TrailingLogs kept after a snapshot (0: 10240).
	TrailingLogs uint64
	// SnapshotRetryDelay: how long a restored node whose snapshot made at
	// start failed to write waits before writing one through raft (0: 30 s;
	// doubling after each failure, at most 10 minutes).
	SnapshotRetryDelay time.Duration
	// StableRetryDelay: how long to wait between retries when persisting raft's
	// term or vote fails (disk full). raft panics on such failures; we pause instead.
	StableRetryDelay time.Duration
	// Bind and Advertise are the raft transport's listen address and the
	// address peers dial; empty Bind: a standalone node on an in-memory
	// transport. TLS holds the node certificate and the cluster CA (mutual
	// TLS between nodes).
	Bind, Advertise string
	TLS             *tls.Config
	// PeerKey, when set, is asked about every node that connects on the
	// raft transport (either side) after its certificate chain and
	// membership are checked: whether keySHA256 (tlsutil.KeyFingerprint of
	// its certificate) is the key the membership records for id.
	PeerKey func(id, keySHA256 string) bool
}

// Node is one raft member.
type Node struct {
	cfg       Config
	log       *slog.Logger
	store     *logStore
	stable    *retryingStable
	snaps     *snapStore
	mu        sync.RWMutex
	raft      *raft.Raft
	transport raft.Transport
	addr      raft.ServerAddress // this node's address in the configuration
	readyTerm atomic.Uint64      // the term in which this leader committed a barrier
	closed    chan struct{}      // closed by Close
	closeOnce sync.Once
	seedRetry atomic.Bool    // replaceSeed is running
	bg        sync.WaitGroup // replaceSeed, waited for by Close
	// downMu guards down: the peers this node's heartbeats fail to reach
	// while it leads, since when (raft's heartbeat observations), and
	// leaderChange, when raft last reported a change of leader.
	downMu       sync.Mutex
	down         map[raft.ServerID]time.Time
	leaderChange time.Time
}

// Open opens the raft log store (without starting raft), so the caller can
// read committed entries, e.g. to rebuild the journal.
func Open(cfg Config) (*Node, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.StableRetryDelay <= 0 {
		cfg.StableRetryDelay = time.Second
	}
	if cfg.SnapshotRetryDelay <= 0 {
		cfg.SnapshotRetryDelay = 30 * time.Second
	}
	if err := fsutil.EnsureDir(cfg.Dir); err != nil {
		return nil, err
	}
	store, err := openLogStore(filepath.Join(cfg.Dir, "raft.db"),
		&bolt.Options{Timeout: 2 * time.Second, NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return nil, fmt.Errorf("open raft log %s: %w", cfg.Dir, err)
	}
	if err := os.Chmod(filepath.Join(cfg.Dir, "raft.db"), fsutil.FileMode); err != nil {
		store.Close() // #nosec G104 -- closing after an earlier error, which is the one returned
		return nil, fmt.Errorf("open raft log %s: %w", cfg.Dir, err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.Dir, 2, hclogFor(cfg.Logger))
	if err != nil {
		store.Close() // #nosec G104 -- closing after an earlier error, which is the one returned
		return nil, fmt.Errorf("open raft snapshots %s: %w", cfg.Dir, err)
	}
	seed, err := readSeed(store)
	if err != nil {
		store.Close() // #nosec G104 -- closing after an earlier error, which is the one returned
		return nil, fmt.Errorf("open raft log %s: %w", cfg.Dir, err)
	}
	n := &Node{cfg: cfg, log: cfg.Logger, store: store, snaps: &snapStore{SnapshotStore: snaps, seed: seed}, closed: make(chan struct{})}
	n.stable = &retryingStable{inner: store, delay: cfg.StableRetryDelay, log: cfg.Logger, stop: make(chan struct{})}
	close(n.stable.stop) // armed by Start
	return n, nil
}

// SnapshotIndex is the index of the latest raft snapshot (0: none).
func (n *Node) SnapshotIndex() (uint64, error) {
	metas, err := n.snaps.List()
	if err != nil {
		return 0, fmt.Errorf("list raft snapshots: %w", err)
	}
	if len(metas) == 0 {
		return 0, nil
	}
	return metas[0].Index, nil
}

// RestoreLatestSnapshot loads the latest raft snapshot into fsm (used when
// the state is behind it, e.g. state.db was lost).
func (n *Node) RestoreLatestSnapshot(fsm raft.FSM) error {
	metas, err := n.snaps.List()
	if err != nil || len(metas) == 0 {
		return fmt.Errorf("no raft snapshot to restore from: %v", err)
	}
	_, rc, err := n.snaps.Open(metas[0].ID)
	if err != nil {
		return fmt.Errorf("open raft snapshot %s: %w", metas[0].ID, err)
	}
	return fsm.Restore(rc)
}

// LastIndex is the last index raft knows: its log's or its snapshot's.
func (n *Node) LastIndex() (uint64, error) {
	last, err := n.store.LastIndex()
	if err != nil {
		return 0, fmt.Errorf("read raft log: %w", err)
	}
	snap, err := n.SnapshotIndex()
	if err != nil {
		return 0, err
	}
	return max(last, snap), nil
}

// FirstIndex is the first entry still in the raft log (0: empty log).
func (n *Node) FirstIndex() (uint64, error) {
	return n.store.FirstIndex()
}

// HasFSMEntries reports whether any entry in [from, to] is one the FSM
// applies (a command or configuration). Entries no longer in the log count
// as FSM entries (unknown).
func (n *Node) HasFSMEntries(from, to uint64) bool {
	for i := from; i <= to; i++ {
		var l raft.Log
		if err := n.store.GetLog(i, &l); err != nil {
			return true
		}
		if l.Type == raft.LogCommand || l.Type == raft.LogConfiguration {
			return true
		}
	}
	return false
}

// TermAt returns the term of the entry at idx, if raft still has it.
func (n *Node) TermAt(idx uint64) (uint64, bool) {
	var l raft.Log
	if err := n.store.GetLog(idx, &l); err == nil {
		return l.Term, true
	}
	if metas, err := n.snaps.List(); err == nil && len(metas) > 0 && metas[0].Index == idx {
		return metas[0].Term, true
	}
	return 0, false
}

// ConfigurationAt finds the latest raft configuration at or before index
// upTo by reading the log backwards down to the latest snapshot, then the
// snapshot's own. It reads one entry per index: use it only when the state
// has not recorded the configuration.
func (n *Node) ConfigurationAt(upTo uint64) (confIndex uint64, data []byte, ok bool) {
	metas, _ := n.snaps.List()
	var floor uint64
	if len(metas) > 0 {
		floor = metas[0].Index
	}
	for i := upTo; i > floor; i-- {
		var l raft.Log
		if err := n.store.GetLog(i, &l); err != nil {
			break
		}
		if l.Type == raft.LogConfiguration {
			return l.Index, l.Data, true
		}
	}
	if len(metas) > 0 && metas[0].Index <= upTo {
		return metas[0].ConfigurationIndex, raft.EncodeConfiguration(metas[0].Configuration), true
	}
	return 0, nil, false
}

// SnapshotBeforeStart makes a raft snapshot of fsm at index (with term, and
// the configuration entry confData at confIndex) while raft is not running.
// Raft then starts from it: it neither scans the log before index for
// configuration entries nor replays those entries into the FSM, so opening
// costs what was logged since, not the whole history. fsm must hold exactly
// the state at index (Coffer's state is persistent, with its applied index).
//
// Only the snapshot's description is made before it returns; its data (the
// whole state) is written in the background from the FSM snapshot taken
// now, so the start does not wait for it. Until it is written the snapshot
// is listed, and opening it (a follower that needs it, a restore) waits for
// it; if writing fails it is dropped and logged (raft's next snapshot
// replaces it; a start before that reads the log as before). On a restored
// node, whose only other snapshot is the seed without data, the node then
// writes one through raft as soon as it can (replaceSeed). Stop and Close
// wait for it. The log is not compacted here: raft does that at its next
// snapshot.
func (n *Node) SnapshotBeforeStart(fsm raft.FSM, index, term, confIndex uint64, confData []byte) (err error) {
	if n.get() != nil {
		return errors.New("raft is running: a snapshot before start is not possible")
	}
	n.snaps.wait() // #nosec G104 -- the background snapshot's failure was logged when it happened; this snapshot replaces it
	n.removeTempSnapshots()
	if index == 0 || term == 0 || confIndex == 0 || confIndex > index {
		return fmt.Errorf("snapshot at index %d, term %d, configuration index %d: incomplete", index, term, confIndex)
	}
	conf, err := decodeConfiguration(confData)
	if err != nil {
		return fmt.Errorf("snapshot at index %d: configuration entry %d: %w", index, confIndex, err)
	}
	snap, err := fsm.Snapshot()
	if err != nil {
		return fmt.Errorf("snapshot at index %d: %w", index, err)
	}
	// The store encodes the legacy peer list with the transport's
	// EncodePeer, which for every transport Coffer uses is the address.
	_, trans := raft.NewInmemTransport("")
	defer trans.Close()
	sink, err := n.snaps.SnapshotStore.Create(raft.SnapshotVersionMax, index, term, conf, confIndex, trans)
	if err != nil {
		snap.Release()
		return fmt.Errorf("snapshot at index %d: create: %w", index, err)
	}
	p := &pendingSnap{meta: raft.SnapshotMeta{Version: raft.SnapshotVersionMax, ID: sink.ID(), Index: index, Term: term,
		Configuration: conf, ConfigurationIndex: confIndex}, done: make(chan struct{})}
	n.snaps.mu.Lock()
	n.snaps.pending = p
	n.snaps.mu.Unlock()
	go func() {
		defer close(p.done)
		defer snap.Release()
		t0 := time.Now()
		if err := snap.Persist(sink); err != nil {
			sink.Cancel() // #nosec G104 -- cancelling after the failed write, which is the error kept and logged
			p.err = err
			if n.snaps.seed == nil {
				n.log.Error("raft snapshot made at start not written; raft's next snapshot replaces it", "index", index, "error", err)
				return
			}
			n.log.Error("raft snapshot made at start not written; a node joining this one is refused until one is: retrying through raft", "index", index, "error", err)
			if n.seedRetry.CompareAndSwap(false, true) { // one at a time, however many starts fail
				n.bg.Add(1)
				go func() {
					defer n.bg.Done()
					defer n.seedRetry.Store(false)
					n.replaceSeed()
				}()
			}
			return
		}
		n.log.Info("raft snapshot made at start written", "index", index, "took", time.Since(t0).Round(time.Millisecond))
	}()
	return nil
}

// replaceSeed writes a snapshot through raft while the latest is still
// the seed of a restore, which has no data (the one made at start failed):
// a node joining this one would be sent it and refused. It tries after
// cfg.SnapshotRetryDelay, then at doubling intervals (at most 10 minutes),
// while raft runs, until a snapshot replaces the seed or the node closes.
func (n *Node) replaceSeed() {
	delay := n.cfg.SnapshotRetryDelay
	for {
		t := time.NewTimer(delay)
		select {
		case <-n.closed:
			t.Stop()
			return
		case <-t.C:
		}
		if !n.SeedUnwritten() {
			return // written: by raft at its threshold, or a later start
		}
		r := n.get()
		if r == nil {
			delay = n.cfg.SnapshotRetryDelay // not started yet, or stopped (sealed): try soon after the next start
			continue
		}
		delay = min(2*delay, 10*time.Minute)
		err := r.Snapshot().Error()
		if err == nil {
			n.log.Info("raft snapshot written in place of the restore's seed")
			return
		}
		if !errors.Is(err, raft.ErrNothingNewToSnapshot) {
			n.log.Error("raft snapshot in place of the restore's seed not written; retrying", "error", err, "retry_in", delay)
		}
	}
}

// removeTempSnapshots removes the snapshot directories a stop in the middle
// of writing one left behind (raft ignores them but never removes them: a
// node killed while writing a snapshot at every start would fill the disk).
// Only while raft is not running and no snapshot is being written.
func (n *Node) removeTempSnapshots() {
	tmps, _ := filepath.Glob(filepath.Join(n.cfg.Dir, "snapshots", "*.tmp"))
	for _, d := range tmps {
		if err := os.RemoveAll(d); err != nil {
			n.log.Warn("unfinished raft snapshot not removed", "dir", d, "error", err)
			continue
		}
		n.log.Info("unfinished raft snapshot removed", "dir", filepath.Base(d))
	}
}

// SnapshotConfiguration is the configuration entry of the latest snapshot:
// its index and data (raft's encoding). ok is false without a snapshot.
func (n *Node) SnapshotConfiguration() (index uint64, data []byte, ok bool) {
	metas, err := n.snaps.List()
	if err != nil || len(metas) == 0 {
		return 0, nil, false
	}
	return metas[0].ConfigurationIndex, raft.EncodeConfiguration(metas[0].Configuration), true
}

// WaitSnapshot waits until a snapshot made by SnapshotBeforeStart is
// written, and returns its error.
func (n *Node) WaitSnapshot() error { return n.snaps.wait() }

// snapStore is raft's file snapshot store plus at most one snapshot whose
// data is still being written (SnapshotBeforeStart): it is listed first
// while it is the newest, and opening it waits for its data. A restored
// node's raft dir also has the seeded snapshot (Seed), which has no data:
// it is listed while no other snapshot reaches its index, and opening it
// fails.
type snapStore struct {
	raft.SnapshotStore
	seed    *raft.SnapshotMeta // set at Open, never changed
	mu      sync.Mutex
	pending *pendingSnap
}

type pendingSnap struct {
	meta raft.SnapshotMeta
	done chan struct{}
	err  error // set before done is closed
}

// wait waits for the pending snapshot, if any, and forgets it.
func (s *snapStore) wait() error {
	s.mu.Lock()
	p := s.pending
	s.mu.Unlock()
	if p == nil {
		return nil
	}
	<-p.done
	s.mu.Lock()
	if s.pending == p {
		s.pending = nil
	}
	s.mu.Unlock()
	return p.err
}

// inflight is the pending snapshot while its data is being written.
func (s *snapStore) inflight() *pendingSnap {
	s.mu.Lock()
	p := s.pending
	s.mu.Unlock()
	if p == nil {
		return nil
	}
	select {
	case <-p.done:
		return nil // written (and listed by the store) or failed (dropped)
	default:
		return p
	}
}

func (s *snapStore) List() ([]*raft.SnapshotMeta, error) {
	metas, err := s.SnapshotStore.List()
	if err != nil {
		return nil, err
	}
	if s.seed != nil && (len(metas) == 0 || metas[0].Index < s.seed.Index) {
		m := *s.seed
		metas = append([]*raft.SnapshotMeta{&m}, metas...)
	}
	// At the seed's index the snapshot being written is the newer: it has
	// data.
	if p := s.inflight(); p != nil && (len(metas) == 0 || metas[0].Index < p.meta.Index ||
		s.seed != nil && metas[0].ID == s.seed.ID && p.meta.Index >= s.seed.Index) {
		m := p.meta
		metas = append([]*raft.SnapshotMeta{&m}, metas...)
	}
	return metas, nil
}

func (s *snapStore) Open(id string) (*raft.SnapshotMeta, io.ReadCloser, error) {
	s.mu.Lock()
	p := s.pending
	s.mu.Unlock()
	if p != nil && p.meta.ID == id {
		<-p.done
		if p.err != nil {
			return nil, nil, fmt.Errorf("raft snapshot %s was not written: %w", id, p.err)
		}
	}
	if s.seed != nil && id == s.seed.ID {
		return nil, nil, fmt.Errorf("raft snapshot %s: seeded by a restore at index %d; its data is written at the node's next start", id, s.seed.Index)
	}
	return s.SnapshotStore.Open(id)
}

// decodeConfiguration is raft.DecodeConfiguration without its panic.
func decodeConfiguration(b []byte) (c raft.Configuration, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("undecodable raft configuration: %v", r)
		}
	}()
	if len(b) == 0 {
		return c, errors.New("empty raft configuration")
	}
	c = raft.DecodeConfiguration(b)
	if len(c.Servers) == 0 {
		return c, errors.New("raft configuration without servers")
	}
	return c, nil
}

// SnapshotThreshold is the number of log entries after which raft takes a
// snapshot.
func (n *Node) SnapshotThreshold() uint64 { return orU64(n.cfg.SnapshotThreshold, 8192) }

// SetTLS sets the node certificate configuration of the network transport
// (before Start).
func (n *Node) SetTLS(c *tls.Config) {
	n.mu.Lock()
	n.cfg.TLS = c
	n.mu.Unlock()
}

// LogStore gives read access to committed entries.
func (n *Node) LogStore() raft.LogStore { return n.store }

// Start runs raft with fsm. On first use it bootstraps a single-voter
// cluster unless join is set (a node joining an existing cluster waits to be
// added by the leader).
func (n *Node) Start(fsm raft.BatchingFSM, join bool) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.raft != nil {
		return errors.New("raft already running")
	}
	if n.snaps.inflight() == nil {
		n.removeTempSnapshots()
	}
	c := raft.DefaultConfig()
	c.LocalID = raft.ServerID(n.cfg.NodeID)
	c.Logger = hclogFor(n.log)
	c.HeartbeatTimeout = orDur(n.cfg.HeartbeatTimeout, 500*time.Millisecond)
	c.ElectionTimeout = orDur(n.cfg.ElectionTimeout, 500*time.Millisecond)
	c.LeaderLeaseTimeout = c.HeartbeatTimeout / 2
	c.CommitTimeout = 5 * time.Millisecond
	c.MaxAppendEntries = 512
	c.BatchApplyCh = true
	c.SnapshotThreshold = orU64(n.cfg.SnapshotThreshold, 8192)
	c.TrailingLogs = orU64(n.cfg.TrailingLogs, 10240)
	// The FSM is persistent (bbolt with its applied index): raft need not
	// restore a snapshot into it at start; entries after the snapshot are
	// replayed and the FSM skips those it already has.
	c.NoSnapshotRestoreOnStart = true

	var (
		addr  raft.ServerAddress
		trans raft.Transport
	)
	if n.cfg.Bind != "" {
		adv := n.cfg.Advertise
		if adv == "" {
			adv = n.cfg.Bind
		}
		stream, err := newTLSStream(n.cfg.Bind, adv, n.cfg.TLS, n.admitsPeer, n.cfg.PeerKey)
		if err != nil {
			return err
		}
		nt := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{Stream: stream, MaxPool: 3,
			Timeout: 10 * time.Second, Logger: hclogFor(n.log)})
		addr, trans = raft.ServerAddress(adv), nt
	} else {
		addr, trans = raft.NewInmemTransport(raft.ServerAddress(n.cfg.NodeID))
	}
	has, err := raft.HasExistingState(n.store, n.stable, n.snaps)
	if err != nil {
		if c, ok := trans.(io.Closer); ok {
			c.Close() // #nosec G104 -- closing after an earlier error, which is the one returned
		}
		return fmt.Errorf("inspect raft state: %w", err)
	}
	if !has && !join {
		conf := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: c.LocalID, Address: addr}}}
		if err := raft.BootstrapCluster(c, n.store, n.stable, n.snaps, trans, conf); err != nil {
			return fmt.Errorf("bootstrap raft: %w", err)
		}
	}
	n.stable.arm()
	r, err := raft.NewRaft(c, fsm, n.store, n.stable, n.snaps, trans)
	if err != nil {
		if c, ok := trans.(io.Closer); ok {
			c.Close() // #nosec G104 -- closing after an earlier error, which is the one returned
		}
		return fmt.Errorf("start raft: %w", err)
	}
	n.clearDown()
	r.RegisterObserver(raft.NewObserver(nil, false, n.observeHeartbeats))
	n.raft, n.transport, n.addr = r, trans, addr
	return nil
}

// observeHeartbeats records, from raft's observations, which peers this
// leader's heartbeats fail to reach; a change of leadership starts over,
// and a peer taken out of the configuration is forgotten (its heartbeats
// stop without resuming). It sends nothing on (it is the observer's
// filter, called in raft's goroutines).
func (n *Node) observeHeartbeats(o *raft.Observation) bool {
	switch d := o.Data.(type) {
	case raft.FailedHeartbeatObservation:
		n.downMu.Lock()
		if d.LastContact.Before(n.leaderChange) {
			// A heartbeat of an earlier leadership whose RPC failed only
			// now: this leadership's heartbeats to the peer are new (their
			// last contact starts when they do) and report no resumption
			// if they succeed from the first.
			n.downMu.Unlock()
			return false
		}
		if n.down == nil {
			n.down = map[raft.ServerID]time.Time{}
		}
		if _, seen := n.down[d.PeerID]; !seen {
			n.down[d.PeerID] = time.Now()
		}
		n.downMu.Unlock()
	case raft.ResumedHeartbeatObservation:
		n.downMu.Lock()
		delete(n.down, d.PeerID)
		n.downMu.Unlock()
	case raft.PeerObservation:
		if d.Removed {
			n.downMu.Lock()
			delete(n.down, d.Peer.ID)
			n.downMu.Unlock()
		}
	case raft.LeaderObservation:
		n.downMu.Lock()
		n.down, n.leaderChange = nil, time.Now()
		n.downMu.Unlock()
	}
	return false
}

func (n *Node) clearDown() {
	n.downMu.Lock()
	n.down = nil
	n.downMu.Unlock()
}

// Unreachable reports whether this node leads and its heartbeats to
// member id have been failing (since then), as raft last observed.
func (n *Node) Unreachable(id string) (since time.Time, down bool) {
	if !n.IsLeader() {
		return time.Time{}, false
	}
	n.downMu.Lock()
	defer n.downMu.Unlock()
	since, down = n.down[raft.ServerID(id)]
	return since, down
}

// waitErr is the error of a wait for something that ctx ended first:
// ErrTimeout, and the context's own error, so that a wait cancelled (the
// caller went away, the server stops) says so and is context.Canceled.
func waitErr(ctx context.Context, what string) error {
	return fmt.Errorf("%s: %w (%w)", what, ErrTimeout, context.Cause(ctx))
}

// WaitLeader blocks until this node is leader or ctx ends.
func (n *Node) WaitLeader(ctx context.Context) error {
	r := n.get()
	if r == nil {
		return ErrStopped
	}
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for r.State() != raft.Leader {
		select {
		case <-ctx.Done():
			return waitErr(ctx, "wait for leadership")
		case <-t.C:
		}
	}
	// Make sure every committed entry is applied before serving.
	return waitFuture(ctx, r.Barrier(timeoutOf(ctx)))
}

func (n *Node) get() *raft.Raft {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.raft
}

// Apply proposes data and returns the FSM's result once applied.
func (n *Node) Apply(ctx context.Context, data []byte) (any, error) {
	r := n.get()
	if r == nil {
		return nil, ErrStopped
	}
	f := r.Apply(data, timeoutOf(ctx))
	if err := waitFuture(ctx, f); err != nil {
		return nil, err
	}
	return f.Response(), nil
}

func waitFuture(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		switch {
		case err == nil:
			return nil
		case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
			return fmt.Errorf("%w: %w: %v", ErrNotLeader, ErrNotApplied, err)
		case errors.Is(err, raft.ErrLeadershipLost):
			return fmt.Errorf("%w: %w: %v", ErrNotLeader, ErrUnconfirmed, err)
		case errors.Is(err, raft.ErrRaftShutdown):
			// Refused at once, or dropped (even once committed) by the
			// shutdown: no telling which.
			return fmt.Errorf("%w: %w: %v", ErrStopped, ErrUnconfirmed, err)
		case errors.Is(err, raft.ErrEnqueueTimeout):
			return fmt.Errorf("%w: %v", ErrTimeout, err)
		}
		return err
	case <-ctx.Done():
		return fmt.Errorf("%w: %v", ErrTimeout, ctx.Err())
	}
}

func timeoutOf(ctx context.Context) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		if d := time.Until(dl); d > 0 {
			return d
		}
		return time.Millisecond
	}
	return 30 * time.Second
}

// Status of the node.
type Status struct {
	NodeID       string `json:"node_id"`
	State        string `json:"state"`
	Term         uint64 `json:"term"`
	LastIndex    uint64 `json:"last_log_index"`
	CommitIndex  uint64 `json:"commit_index"`
	AppliedIndex uint64 `json:"applied_index"`
	Leader       string `json:"leader"`
}

// Status reports raft's view; State is "stopped" when raft is not running.
func (n *Node) Status() Status {
	st := Status{NodeID: n.cfg.NodeID, State: "stopped"}
	r := n.get()
	if r == nil {
		st.LastIndex, _ = n.store.LastIndex()
		return st
	}
	st.State = r.State().String()
	st.LastIndex = r.LastIndex()
	st.AppliedIndex = r.AppliedIndex()
	st.CommitIndex = r.CommitIndex()
	_, id := r.LeaderWithID()
	st.Leader = string(id)
	if t, err := n.store.GetUint64([]byte("CurrentTerm")); err == nil {
		st.Term = t
	}
	return st
}

// Snapshot asks raft for a snapshot now.
func (n *Node) Snapshot() error {
	r := n.get()
	if r == nil {
		return ErrStopped
	}
	return r.Snapshot().Error()
}

// Stop shuts raft down (the log store stays open), after a snapshot made by
// SnapshotBeforeStart is written.
func (n *Node) Stop() error {
	n.snaps.wait() // #nosec G104 -- the background snapshot's failure was logged when it happened, and raft's next snapshot replaces it
	n.mu.Lock()
	r := n.raft
	n.raft = nil
	n.mu.Unlock()
	if r == nil {
		return nil
	}
	// A term write retrying on a full disk would block the shutdown forever;
	// end the retry (raft then gives up on that write).
	n.stable.interrupt()
	if err := r.Shutdown().Error(); err != nil {
		return fmt.Errorf("stop raft: %w", err)
	}
	if c, ok := n.transport.(io.Closer); ok {
		c.Close() // #nosec G104 -- raft has stopped: a transport close error leaves nothing to do
	}
	return nil
}

// Close stops raft and closes the log store.
func (n *Node) Close() error {
	n.closeOnce.Do(func() { close(n.closed) })
	err := n.Stop()
	n.bg.Wait()
	if cerr := n.store.Close(); err == nil {
		err = cerr
	}
	return err
}

// retryingStable wraps raft's stable store: raft panics when it cannot
// persist its term or vote (e.g. disk full). We retry until it works or the
// node closes, so a full disk pauses the node instead of crashing it.
type retryingStable struct {
	inner raft.StableStore
	delay time.Duration
	log   *slog.Logger
	mu    sync.Mutex
	stop  chan struct{}
}

func (s *retryingStable) arm() {
	s.mu.Lock()
	s.stop = make(chan struct{})
	s.mu.Unlock()
}

func (s *retryingStable) interrupt() {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
}

func (s *retryingStable) retry(what string, fn func() error) error {
	s.mu.Lock()
	stop := s.stop
	s.mu.Unlock()
	for attempt := 1; ; attempt++ {
		err := fn()
		if err == nil {
			return nil
		}
		s.log.Error("raft stable store write failed; retrying", "what", what, "error", err, "attempt", attempt)
		select {
		case <-stop:
			return err
		case <-time.After(s.delay):
		}
	}
}

func (s *retryingStable) Set(k, v []byte) error {
	return s.retry("set "+string(k), func() error { return s.inner.Set(k, v) })
}
func (s *retryingStable) Get(k []byte) ([]byte, error) { return s.inner.Get(k) }
func (s *retryingStable) SetUint64(k []byte, v uint64) error {
	return s.retry("set "+string(k), func() error { return s.inner.SetUint64(k, v) })
}
func (s *retryingStable) GetUint64(k []byte) (uint64, error) { return s.inner.GetUint64(k) }

func orDur(v, d time.Duration) time.Duration {
	if v > 0 {
		return v
	}
	return d
}

func orU64(v, d uint64) uint64 {
	if v > 0 {
		return v
	}
	return d
}

// hclogFor routes raft's hclog output into slog at warn level and above.
func hclogFor(l *slog.Logger) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:       "raft",
		Level:      hclog.Warn,
		Output:     slogWriter{l},
		JSONFormat: false,
	})
}

type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	msg := string(p)
	for len(msg) > 0 && (msg[len(msg)-1] == '\n') {
		msg = msg[:len(msg)-1]
	}
	w.l.Warn(msg, "component", "raft")
	return len(p), nil
}

// seedKey holds, in the raft log store's stable keys, the description of
// the snapshot a restore seeded (Seed): its index, term and configuration.
var seedKey = []byte("CofferSeed")

// SeedConfiguration is the raft configuration Seed gives a restored node:
// nodeID as the only voter (raft's encoding, as in a configuration entry).
func SeedConfiguration(nodeID string) []byte {
	addr, trans := raft.NewInmemTransport(raft.ServerAddress(nodeID))
	defer trans.Close()
	return raft.EncodeConfiguration(raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: raft.ServerID(nodeID), Address: addr}}})
}

// Seed prepares an empty raft directory for a restored state at index and
// term: the current term, and the description of a snapshot at index whose
// configuration (at index) is SeedConfiguration(nodeID). The node then starts
// as a standalone single-node cluster whose log begins after index, agreeing
// with the state's applied index and term. dir must not hold raft data.
//
// The snapshot's data, a copy of the state, is not written here: until a
// snapshot at or after index is written the seeded one is listed, and
// opening it fails. The node writes one at its first start
// (SnapshotBeforeStart, at every start until one is written; SeedUnwritten
// says when).
func Seed(dir, nodeID string, index, term uint64) error {
	if index == 0 || term == 0 {
		return fmt.Errorf("seed raft: index %d, term %d: both must be positive", index, term)
	}
	if err := fsutil.EnsureDir(dir); err != nil {
		return err
	}
	if ents, err := os.ReadDir(dir); err != nil {
		return err
	} else if len(ents) > 0 {
		return fmt.Errorf("seed raft: %s is not empty", dir)
	}
	n, err := Open(Config{Dir: dir, NodeID: nodeID})
	if err != nil {
		return err
	}
	defer n.store.Close()
	v := binary.BigEndian.AppendUint64(nil, index)
	v = binary.BigEndian.AppendUint64(v, term)
	v = append(v, SeedConfiguration(nodeID)...)
	if err := n.store.Set(seedKey, v); err != nil {
		return fmt.Errorf("seed raft: store the snapshot description: %w", err)
	}
	if err := n.store.SetUint64([]byte("CurrentTerm"), term); err != nil {
		return fmt.Errorf("seed raft: store term: %w", err)
	}
	return fsutil.SyncDir(dir)
}

// readSeed is the seeded snapshot's description in store, if any.
func readSeed(store *logStore) (*raft.SnapshotMeta, error) {
	v, err := store.Get(seedKey)
	if errors.Is(err, errKeyNotFound) {
		return nil, nil // a dir no restore seeded
	}
	if err != nil {
		return nil, fmt.Errorf("read the seeded raft snapshot: %w", err)
	}
	if len(v) < 16 {
		return nil, fmt.Errorf("seeded raft snapshot: %d bytes: truncated", len(v))
	}
	index, term := binary.BigEndian.Uint64(v), binary.BigEndian.Uint64(v[8:])
	conf, err := decodeConfiguration(v[16:])
	if err != nil {
		return nil, fmt.Errorf("seeded raft snapshot at index %d: %w", index, err)
	}
	return &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, ID: fmt.Sprintf("seed-%d-%d", term, index), Index: index, Term: term,
		Configuration: conf, ConfigurationIndex: index}, nil
}

// SeedUnwritten reports whether the latest snapshot is the one a restore
// seeded, whose data no snapshot holds yet (and none is being written): a
// node that must be joined needs one, so it is written before raft starts
// (SnapshotBeforeStart).
func (n *Node) SeedUnwritten() bool {
	metas, err := n.snaps.List()
	return err == nil && len(metas) > 0 && n.snaps.seed != nil && metas[0].ID == n.snaps.seed.ID
}

// ErrNoQuorum: no leader is known (this node is alone or in a minority).
var ErrNoQuorum = errors.New("no leader: this node cannot reach a quorum of the cluster")

// WaitReady blocks until a leader is known (this node or another) and,
// on the leader, every committed entry is applied.
func (n *Node) WaitReady(ctx context.Context) error {
	r := n.get()
	if r == nil {
		return ErrStopped
	}
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if r.State() == raft.Leader {
			return waitFuture(ctx, r.Barrier(timeoutOf(ctx)))
		}
		if addr, _ := r.LeaderWithID(); addr != "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return waitErr(ctx, "wait for a leader")
		case <-t.C:
		}
	}
}

// IsLeader reports whether this node is the leader now.
func (n *Node) IsLeader() bool {
	r := n.get()
	return r != nil && r.State() == raft.Leader
}

// Leader returns the leader's id and raft address ("" if unknown).
func (n *Node) Leader() (id, addr string) {
	r := n.get()
	if r == nil {
		return "", ""
	}
	a, i := r.LeaderWithID()
	return string(i), string(a)
}

// Address is this node's raft address.
func (n *Node) Address() string {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return string(n.addr)
}

// Server is one member of the raft configuration.
type Server struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	Voter   bool   `json:"voter"`
}

// Servers returns the latest raft configuration.
func (n *Node) Servers() ([]Server, error) {
	r := n.get()
	if r == nil {
		return nil, ErrStopped
	}
	f := r.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, err
	}
	var out []Server
	for _, s := range f.Configuration().Servers {
		out = append(out, Server{ID: string(s.ID), Address: string(s.Address), Voter: s.Suffrage == raft.Voter})
	}
	return out, nil
}

// LastContact is when this node last heard from the leader (zero on the
// leader itself, or if never).
func (n *Node) LastContact() time.Time {
	r := n.get()
	if r == nil {
		return time.Time{}
	}
	return r.LastContact()
}

// AddVoter adds (or re-addresses) a voting member; leader only.
func (n *Node) AddVoter(ctx context.Context, id, addr string) error {
	r := n.get()
	if r == nil {
		return ErrStopped
	}
	return waitFuture(ctx, r.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, timeoutOf(ctx)))
}

// AddNonvoter adds a member that replicates but does not vote; leader only.
func (n *Node) AddNonvoter(ctx context.Context, id, addr string) error {
	r := n.get()
	if r == nil {
		return ErrStopped
	}
	return waitFuture(ctx, r.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, timeoutOf(ctx)))
}

// Remove removes a member; leader only.
func (n *Node) Remove(ctx context.Context, id string) error {
	r := n.get()
	if r == nil {
		return ErrStopped
	}
	return waitFuture(ctx, r.RemoveServer(raft.ServerID(id), 0, timeoutOf(ctx)))
}

// Transfer hands leadership to id ("" : the most up-to-date follower).
func (n *Node) Transfer(ctx context.Context, id, addr string) error {
	r := n.get()
	if r == nil {
		return ErrStopped
	}
	if id == "" {
		return waitFuture(ctx, r.LeadershipTransfer())
	}
	return waitFuture(ctx, r.LeadershipTransferToServer(raft.ServerID(id), raft.ServerAddress(addr)))
}

// VerifyLeader confirms with a quorum that this node is still the leader
// (for linearizable reads).
func (n *Node) VerifyLeader(ctx context.Context) error {
	r := n.get()
	if r == nil {
		return ErrStopped
	}
	return waitFuture(ctx, r.VerifyLeader())
}

// RecoverStandalone makes a stopped node the only voter of its cluster
// (the survivor of a cluster whose other members are gone for good).
// Offline only: the node must not be running. It appends a configuration
// entry naming only this node to its raft log; raft takes the newest
// configuration in the log at start, so the node elects itself. Unlike
// raft.RecoverCluster it does not compact the log: the recovery journal is
// completed from it at the next open.
func RecoverStandalone(cfg Config) error {
	n, err := Open(cfg)
	if err != nil {
		return err
	}
	defer n.store.Close()
	last, err := n.LastIndex()
	if err != nil {
		return err
	}
	if last == 0 {
		return errors.New("this node has no raft history: nothing to recover")
	}
	term, err := n.store.GetUint64([]byte("CurrentTerm"))
	if err != nil || term == 0 {
		var l raft.Log
		if err := n.store.GetLog(last, &l); err == nil {
			term = l.Term
		}
	}
	if term == 0 {
		return errors.New("cannot tell this node's raft term")
	}
	addr, logConf := "", false
	var cur raft.Configuration
	for i := last; i > 0 && addr == "" && !logConf; i-- {
		var l raft.Log
		if err := n.store.GetLog(i, &l); err != nil {
			break
		}
		if l.Type == raft.LogConfiguration {
			logConf = true
			cur = raft.DecodeConfiguration(l.Data)
			for _, s := range cur.Servers {
				if string(s.ID) == cfg.NodeID {
					addr = string(s.Address)
				}
			}
			break
		}
	}
	if addr == "" && logConf {
		return fmt.Errorf("node %s is not in its newest raft configuration: it was removed from the cluster; it cannot become its only voter", cfg.NodeID)
	}
	if addr == "" {
		if metas, err := n.snaps.List(); err == nil && len(metas) > 0 {
			for _, s := range metas[0].Configuration.Servers {
				if string(s.ID) == cfg.NodeID {
					addr = string(s.Address)
				}
			}
		}
	}
	if addr == "" {
		return fmt.Errorf("node %s is not in its own raft configuration", cfg.NodeID)
	}
	conf := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: raft.ServerID(cfg.NodeID), Address: raft.ServerAddress(addr)}}}
	entry := raft.Log{Index: last + 1, Term: term, Type: raft.LogConfiguration, Data: raft.EncodeConfiguration(conf), AppendedAt: time.Now()}
	if err := n.store.StoreLog(&entry); err != nil {
		return fmt.Errorf("write the standalone configuration: %w", err)
	}
	return nil
}

// ReadIndex makes a following local read linearizable (raft's read
// index): it notes the commit index, confirms with a quorum that this node
// still leads, and waits until that index is applied.
func (n *Node) ReadIndex(ctx context.Context) error {
	r := n.get()
	if r == nil {
		return ErrStopped
	}
	// A new leader's commit index may lag what the old one committed until
	// it commits an entry of its own term: once per term, a barrier.
	if term := r.CurrentTerm(); n.readyTerm.Load() != term {
		if err := waitFuture(ctx, r.Barrier(timeoutOf(ctx))); err != nil {
			return err
		}
		n.readyTerm.Store(term)
	}
	ci := r.CommitIndex()
	if err := waitFuture(ctx, r.VerifyLeader()); err != nil {
		return err
	}
	// raft's AppliedIndex moves when entries are handed to the FSM, a little
	// before the FSM has applied them. That is enough: the barrier above
	// was applied by the FSM itself (everything of earlier terms is in the
	// state), and in this term a write is acknowledged only after the FSM
	// applied it, so every acknowledged write is visible; an entry handed
	// over but not yet applied belongs to a write still in flight, which a
	// read may or may not see. (The state's own applied index cannot be
	// used: barriers and configuration entries never reach it.)
	for r.AppliedIndex() < ci {
		select {
		case <-ctx.Done():
			return waitErr(ctx, fmt.Sprintf("wait for index %d to be applied", ci))
		case <-time.After(time.Millisecond):
		}
	}
	return nil
}

// IsMember reports whether id is in this node's raft configuration. What
// this node does not know is not a member: with raft stopped, or no
// configuration yet, nobody is (a node certificate alone proves nothing
// about membership).
func (n *Node) IsMember(id string) bool {
	return n.member(id, false)
}

// admitsPeer is the raft transport's check of an incoming node: a member,
// or anyone while this node has no configuration yet (it is joining: the
// leader that adds it makes the first contact, before the configuration
// reaches it).
func (n *Node) admitsPeer(id string) bool {
	return n.member(id, true)
}

func (n *Node) member(id string, unknownAdmits bool) bool {
	r := n.get()
	if r == nil {
		return unknownAdmits
	}
	f := r.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	servers := f.Configuration().Servers
	if len(servers) == 0 {
		return unknownAdmits
	}
	for _, s := range servers {
		if string(s.ID) == id {
			return true
		}
	}
	return false
}
