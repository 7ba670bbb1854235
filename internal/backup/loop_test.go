package backup

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/backup/dest"
	"github.com/coffer-kms/coffer/internal/journal"
	"github.com/coffer-kms/coffer/internal/state"
)

// loopHost is the part of a node the manager's loop uses: leadership,
// records, schedules and one archiving destination over a journal dir.
// Anything else the loop would call panics on the nil Host.
type loopHost struct {
	Host
	leader  atomic.Bool
	journal string
	opened  atomic.Int32 // OpenTarget calls for "nas"

	mu      sync.Mutex
	records map[string]state.BackupRecord
}

func (h *loopHost) IsLeader() bool                       { return h.leader.Load() }
func (h *loopHost) NodeID() string                       { return "node-b" }
func (h *loopHost) JournalDir() string                   { return h.journal }
func (h *loopHost) Frozen() error                        { return nil }
func (h *loopHost) Held(string) error                    { return nil }
func (h *loopHost) Schedules() ([]state.Schedule, error) { return nil, nil }

// OpenTarget: this host has no destination to open (shipping to "nas"
// would open it: counted).
func (h *loopHost) OpenTarget(_ context.Context, name string) (*Target, error) {
	if name == "nas" {
		h.opened.Add(1)
	}
	return nil, errors.New("no destinations here")
}
func (h *loopHost) Destinations() ([]state.Destination, error) {
	return []state.Destination{{Name: "nas", Kind: "dir", Archiving: true}}, nil
}
func (h *loopHost) Backups() ([]state.BackupRecord, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []state.BackupRecord
	for _, r := range h.records {
		out = append(out, r)
	}
	return out, nil
}
func (h *loopHost) Record(_ context.Context, r state.BackupRecord) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records[r.ID] = r
	return nil
}
func (h *loopHost) record(id string) state.BackupRecord {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.records[id]
}

// closedSegments writes a journal of n closed segments (and an open one).
func closedSegments(t *testing.T, dir string, n int) {
	t.Helper()
	j, err := journal.Open(journal.Options{Dir: dir, Name: "node"})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	for i := 1; i <= n; i++ {
		if err := j.Append([]journal.Record{{Index: uint64(i), Type: 1, Payload: []byte("x")}}, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := j.Rotate(); err != nil {
			t.Fatal(err)
		}
	}
}

func startLoop(t *testing.T, m *Manager, every time.Duration) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.Loop(ctx, every) }()
	t.Cleanup(func() { cancel(); <-done })
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A node that becomes the leader marks the backups the old leader left
// RUNNING as FAILED. A backup this node started after it became the leader
// is not one of them: it is neither marked nor robbed of its staging file.
func TestLeadershipGainSparesABackupStartedSince(t *testing.T) {
	staging := t.TempDir()
	h := &loopHost{journal: t.TempDir(), records: map[string]state.BackupRecord{}}
	h.records["old"] = state.BackupRecord{ID: "old", Node: "node-a", Status: "RUNNING"}
	m := NewManager(h, staging, slog.New(slog.NewTextHandler(io.Discard, nil)))
	startLoop(t, m, 10*time.Millisecond)

	// This node leads and starts a backup before its loop notices the
	// leadership: the backup holds the run lock, as Backup does.
	m.run.Lock()
	h.records["new"] = state.BackupRecord{ID: "new", Node: "node-b", Status: "RUNNING"}
	stagingFile := filepath.Join(staging, "staging-new"+FileSuffix)
	if err := os.WriteFile(stagingFile, []byte("part"), 0o600); err != nil {
		t.Fatal(err)
	}
	h.leader.Store(true)
	time.Sleep(100 * time.Millisecond) // ten ticks of the loop while the backup runs

	if r := h.record("new"); r.Status != "RUNNING" {
		t.Errorf("the new leader's own running backup was marked %s (%s)", r.Status, r.Reason)
	}
	if _, err := os.Stat(stagingFile); err != nil {
		t.Errorf("the running backup's staging file was removed: %v", err)
	}
	r := h.record("new")
	r.Status = "DONE"
	h.Record(context.Background(), r) // #nosec G104 -- the fake's Record cannot fail
	os.Remove(stagingFile)            // #nosec G104 -- the backup's own cleanup
	m.run.Unlock()

	// Once nothing runs, the old leader's record is taken over.
	waitFor(t, "the old leader's backup marked FAILED", func() bool { return h.record("old").Status == "FAILED" })
	if r := h.record("new"); r.Status != "DONE" {
		t.Errorf("the finished backup became %s", r.Status)
	}
}

// The pending count of an archiving destination is there soon after the
// node leads, not only after the first full check interval (and nothing is
// shipped before the interval is up), and a node that stops leading
// forgets it (it ships nothing; its counts would go stale). A node that
// already leads when the loop starts takes over the backups another node
// left running too.
func TestPendingCountedSoonAndForgottenByAFollower(t *testing.T) {
	h := &loopHost{journal: t.TempDir(), records: map[string]state.BackupRecord{}}
	h.records["old"] = state.BackupRecord{ID: "old", Node: "node-a", Status: "RUNNING"}
	closedSegments(t, h.journal, 3)
	h.leader.Store(true)
	m := NewManager(h, t.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	m.lastErr["nas"] = "connection refused"
	startLoop(t, m, time.Hour)

	waitFor(t, "the first count", func() bool { _, ok := m.Pending()["nas"]; return ok })
	if got := m.Pending()["nas"]; got != 3 {
		t.Errorf("pending = %d, want 3 closed segments", got)
	}
	if r := h.record("old"); r.Status != "FAILED" {
		t.Errorf("another node's backup left running is %s after the first pass as the leader", r.Status)
	}
	if n := h.opened.Load(); n != 0 {
		t.Errorf("the destination was opened %d times before the interval was up: something was shipped", n)
	}
	h.leader.Store(false)
	waitFor(t, "the count forgotten after leadership is lost", func() bool { return len(m.Pending()) == 0 && len(m.ArchiveErrors()) == 0 })
}

// failingHost is a loopHost whose replicated writes fail while failing is
// set (writes frozen for a storage snapshot, a nearly full disk, no quorum),
// with one schedule.
type failingHost struct {
	loopHost
	failing atomic.Bool
	tries   atomic.Int32
	sched   state.Schedule // guarded by loopHost.mu
}

var errWritesRefused = errors.New("writes are frozen for a storage snapshot")

func (h *failingHost) Record(ctx context.Context, r state.BackupRecord) error {
	h.tries.Add(1)
	if h.failing.Load() {
		return errWritesRefused
	}
	return h.loopHost.Record(ctx, r)
}
func (h *failingHost) Schedules() ([]state.Schedule, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return []state.Schedule{h.sched}, nil
}
func (h *failingHost) PutSchedule(_ context.Context, s state.Schedule) error {
	if h.failing.Load() {
		return errWritesRefused
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.sched = s
	return nil
}
func (h *failingHost) schedule() state.Schedule {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.sched
}

// A take-over whose writes fail is tried again once writes work: otherwise
// the old leader's backup stays RUNNING and the schedule it ran stays
// ONGOING, which no later pass runs again.
func TestLeadershipTakeOverRetriedAfterFailedWrites(t *testing.T) {
	h := &failingHost{loopHost: loopHost{journal: t.TempDir(), records: map[string]state.BackupRecord{}}}
	h.records["old"] = state.BackupRecord{ID: "old", Node: "node-a", Status: "RUNNING"}
	h.sched = state.Schedule{Name: "nightly", Destination: "nas", Type: "periodic", Every: "24h", State: "ONGOING"}
	h.failing.Store(true)
	h.leader.Store(true)
	m := NewManager(h, t.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	startLoop(t, m, 10*time.Millisecond)

	waitFor(t, "a take-over while writes fail", func() bool { return h.tries.Load() > 0 })
	h.failing.Store(false)
	waitFor(t, "the old leader's backup marked FAILED", func() bool { return h.record("old").Status == "FAILED" })
	waitFor(t, "the interrupted schedule ACTIVE again", func() bool { return h.schedule().State == "ACTIVE" })
}

// catalogHost is a loopHost whose destination "nas" is a directory.
type catalogHost struct {
	*loopHost
	nas string
}

func (h catalogHost) OpenTarget(_ context.Context, name string) (*Target, error) {
	if name != "nas" {
		return nil, errors.New("no such destination")
	}
	d, err := dest.NewDir(h.nas)
	if err != nil {
		return nil, err
	}
	return &Target{Dest: d}, nil
}

// A backup left RUNNING whose destination's catalog lists it was complete
// there (its node stopped between writing the catalog and recording DONE,
// or a node was restored from a copy of the state taken while it ran): the
// take-over records it DONE with what the catalog says, not FAILED. One the
// catalog does not list, or on a destination that cannot be read, is
// marked FAILED as before.
func TestTakeOverRecordsABackupCompleteOnItsDestinationDone(t *testing.T) {
	lh := &loopHost{journal: t.TempDir(), records: map[string]state.BackupRecord{}}
	h := catalogHost{loopHost: lh, nas: t.TempDir()}
	d, err := dest.NewDir(h.nas)
	if err != nil {
		t.Fatal(err)
	}
	created := time.Date(2026, 12, 7, 3, 0, 0, 0, time.UTC)
	if err := SaveCatalog(context.Background(), d, Catalog{Format: 1, ClusterID: "cl", Entries: []Entry{{ID: "complete", Kind: KindFull,
		File: "backups/complete-full.cbk", FirstIndex: 1, LastIndex: 42, Created: created, Size: 1234, SHA256: "ab12", Recipients: []string{"age1x"}}}}); err != nil {
		t.Fatal(err)
	}
	lh.records["complete"] = state.BackupRecord{ID: "complete", Destination: "nas", Kind: KindFull, Node: "node-a", Status: "RUNNING", Reason: "schedule nightly"}
	lh.records["cut"] = state.BackupRecord{ID: "cut", Destination: "nas", Kind: KindFull, Node: "node-a", Status: "RUNNING"}
	lh.records["gone"] = state.BackupRecord{ID: "gone", Destination: "unreachable", Kind: KindFull, Node: "node-a", Status: "RUNNING"}
	lh.leader.Store(true)
	m := NewManager(h, t.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	startLoop(t, m, time.Hour)

	waitFor(t, "the take-over", func() bool { return lh.record("gone").Status != "RUNNING" })
	r := lh.record("complete")
	if r.Status != "DONE" || r.File != "backups/complete-full.cbk" || r.LastIndex != 42 || r.Size != 1234 || r.SHA256 != "ab12" ||
		r.Finished == nil || !r.Finished.Equal(created) || r.Reason != "schedule nightly" {
		t.Errorf("a backup the catalog lists: %+v", r)
	}
	for _, id := range []string{"cut", "gone"} {
		if r := lh.record(id); r.Status != "FAILED" {
			t.Errorf("%s: %s, want FAILED", id, r.Status)
		}
	}
}

// slowListHost is a loopHost whose first listing of destinations waits
// until released: an operator's archive-now still counting when the node
// stops leading.
type slowListHost struct {
	loopHost
	listing, release chan struct{}
	once             sync.Once
}

func (h *slowListHost) Destinations() ([]state.Destination, error) {
	h.once.Do(func() { close(h.listing); <-h.release })
	return h.loopHost.Destinations()
}

// Counts an archive pass made while the node led, written after it stopped
// leading and forgot them, would stay in a follower's status and metrics
// for good: nothing forgets them again. They are dropped.
func TestCountsOfAPassOutlivingLeadershipAreDropped(t *testing.T) {
	h := &slowListHost{loopHost: loopHost{journal: t.TempDir(), records: map[string]state.BackupRecord{}},
		listing: make(chan struct{}), release: make(chan struct{})}
	closedSegments(t, h.journal, 3)
	h.leader.Store(true)
	m := NewManager(h, t.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	done := make(chan error, 1)
	go func() { done <- m.ArchiveWait(context.Background(), nil) }()
	<-h.listing

	// Leadership lost: the loop's next pass as a follower forgets.
	h.leader.Store(false)
	l := &loopState{every: time.Hour, led: true}
	m.tick(context.Background(), time.Now(), l)
	close(h.release)
	if err := <-done; err != nil {
		t.Logf("archive pass: %v", err)
	}
	if p := m.Pending(); len(p) != 0 {
		t.Fatalf("pending on a follower after its pass as the leader ended: %v", p)
	}
	if e := m.ArchiveErrors(); len(e) != 0 {
		t.Fatalf("archive errors on a follower after its pass as the leader ended: %v", e)
	}

	// A pass that starts on a follower (a request that reached it as it
	// stopped leading) counts nothing either.
	if err := m.ArchiveWait(context.Background(), nil); err != nil {
		t.Logf("archive pass on the follower: %v", err)
	}
	if p := m.Pending(); len(p) != 0 {
		t.Fatalf("pending counted by a follower: %v", p)
	}
}

// A node that becomes the leader, at its start or later (a failover), is
// told once per leadership: the service reads the destinations' catalogs
// then (drill results, verifications), so that status and the drill alert
// survive a failover. A follower is not told.
func TestLeadershipGainIsAnnounced(t *testing.T) {
	h := &loopHost{journal: t.TempDir(), records: map[string]state.BackupRecord{}}
	m := NewManager(h, t.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	var gained atomic.Int32
	m.OnLeader = func(context.Context) { gained.Add(1) }
	startLoop(t, m, 10*time.Millisecond)
	time.Sleep(50 * time.Millisecond) // five ticks as a follower
	if n := gained.Load(); n != 0 {
		t.Fatalf("a follower was told %d times that it leads", n)
	}
	h.leader.Store(true)
	waitFor(t, "the gain of leadership announced", func() bool { return gained.Load() == 1 })
	h.leader.Store(false)
	time.Sleep(50 * time.Millisecond)
	h.leader.Store(true)
	waitFor(t, "the second gain announced", func() bool { return gained.Load() == 2 })
	time.Sleep(50 * time.Millisecond)
	if n := gained.Load(); n != 2 {
		t.Fatalf("announced %d times for two gains", n)
	}
}

// The marking at open waits for a backup started since the open (an
// operator's backup run as soon as the server answers): its RUNNING record
// and staging file are its own, not a crash's leftovers.
func TestMarkInterruptedSparesABackupStartedSinceTheOpen(t *testing.T) {
	staging := t.TempDir()
	h := &loopHost{journal: t.TempDir(), records: map[string]state.BackupRecord{}}
	h.records["crashed"] = state.BackupRecord{ID: "crashed", Node: "node-b", Status: "RUNNING"}
	m := NewManager(h, staging, slog.New(slog.NewTextHandler(io.Discard, nil)))

	m.run.Lock() // the new backup runs, as Backup does
	h.records["new"] = state.BackupRecord{ID: "new", Node: "node-b", Status: "RUNNING"}
	stagingFile := filepath.Join(staging, "staging-new"+FileSuffix)
	if err := os.WriteFile(stagingFile, []byte("part"), 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); m.MarkInterrupted(context.Background()) }()
	time.Sleep(50 * time.Millisecond) // the marking would be done by now
	if r := h.record("new"); r.Status != "RUNNING" {
		t.Errorf("the backup started since the open was marked %s (%s)", r.Status, r.Reason)
	}
	if _, err := os.Stat(stagingFile); err != nil {
		t.Errorf("the running backup's staging file was removed: %v", err)
	}
	r := h.record("new")
	r.Status = "DONE"
	h.Record(context.Background(), r) // #nosec G104 -- the fake's Record cannot fail
	os.Remove(stagingFile)            // #nosec G104 -- the backup's own cleanup
	m.run.Unlock()
	<-done
	if r := h.record("crashed"); r.Status != "FAILED" {
		t.Errorf("the crashed backup is %s", r.Status)
	}
	if r := h.record("new"); r.Status != "DONE" {
		t.Errorf("the finished backup became %s", r.Status)
	}
}
