package backup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/coffer-kms/coffer/internal/backup/bundle"
	"github.com/coffer-kms/coffer/internal/backup/dest"
	"github.com/coffer-kms/coffer/internal/journal"
	"github.com/coffer-kms/coffer/internal/state"
)

func errIsNotFound(err error) bool { return errors.Is(err, dest.ErrNotFound) }

// ErrBusy: only one backup runs at a time.
var ErrBusy = errors.New("a backup is in progress")

// ErrFrozen: writes are frozen (a backup could not record its result).
var ErrFrozen = errors.New("writes are frozen")

// ErrHeld: the node was restored and its backups to the destination wait
// for an operator (see Host.Held).
var ErrHeld = errors.New("backups are held after a restore")

// FullEvery is Oracle Key Vault's rule for automatic mode: a full when the
// last full is this old (or there is none), otherwise a cumulative incremental.
const FullEvery = 7 * 24 * time.Hour

// Target is a destination ready to use: opened, with its configuration and
// the encryption its backups get.
type Target struct {
	Dest       dest.Destination
	Config     state.Destination
	Encryption bundle.Encryption
}

// Host is what the manager needs from the node besides Source (the service
// implements it): destinations with their secrets unsealed, and a place to
// record progress in the replicated state.
type Host interface {
	Source
	// OpenTarget opens a destination by name.
	OpenTarget(ctx context.Context, name string) (*Target, error)
	// Record stores a backup record (through raft).
	Record(ctx context.Context, r state.BackupRecord) error
	// Archived moves a destination's archive mark (through raft).
	Archived(ctx context.Context, name string, index uint64) error
	// Schedules and Destinations read the replicated configuration.
	Schedules() ([]state.Schedule, error)
	Destinations() ([]state.Destination, error)
	// PutSchedule stores a schedule's new state (through raft).
	PutSchedule(ctx context.Context, s state.Schedule) error
	// NewID returns a fresh random suffix.
	NewID() string
	// Lookup returns the record of a backup id.
	Lookup(id string) (state.BackupRecord, bool)
	// Backups lists every backup record.
	Backups() ([]state.BackupRecord, error)
	// Frozen is non-nil while writes are frozen: no backup starts then (it
	// could not record its result).
	Frozen() error
	// IsLeader: schedules and archiving run on the cluster's leader only.
	IsLeader() bool
	// Held is non-nil (wrapping ErrHeld, saying what to do) while nothing
	// may be written to the destination: a restored node before an
	// operator released or took over its backups. Schedules and archiving
	// skip it meanwhile.
	Held(destination string) error
}

// Manager runs backups one at a time, the schedules and the archiver.
type Manager struct {
	host    Host
	log     *slog.Logger
	staging string

	// Locks, in this order: run, then mu. run is held while a backup,
	// archiving or an Exclusive task runs (for as long as it runs); mu
	// guards current, written, pending and lastErr and is held only briefly.
	run     sync.Mutex
	mu      sync.Mutex
	current *state.BackupRecord // a copy of the running backup's record
	written int64
	pending map[string]int // destination -> closed segments not yet archived
	lastErr map[string]string
	counted bool   // pending was counted since the node became the leader
	epoch   uint64 // moved on by forgetArchiving

	// VerifyAfter, if set, verifies a backup file just taken by a schedule
	// with Verify on, records the result in the catalog and returns it.
	VerifyAfter func(ctx context.Context, destination, file string) error
	// Drill, if set, runs a restore drill on a destination (a schedule of
	// kind verify) and records its result.
	Drill func(ctx context.Context, destination string) (Drill, error)
	// OnLeader, if set, is called by the loop each time the node becomes
	// the leader (its first pass as the leader included), before anything
	// else of that pass. It must not block: the loop waits for it.
	OnLeader func(ctx context.Context)
}

// NewManager returns a manager; Start runs its loops.
func NewManager(host Host, stagingDir string, log *slog.Logger) *Manager {
	return &Manager{host: host, log: log, staging: stagingDir, pending: map[string]int{}, lastErr: map[string]string{}}
}

// Current returns the running backup, if any, with its progress.
func (m *Manager) Current() *Progress {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.current == nil {
		return nil
	}
	return &Progress{BackupRecord: *m.current, BytesWritten: m.written}
}

// Modes of a backup request.
const (
	ModeAuto        = "auto"
	ModeFull        = "full"
	ModeIncremental = "incremental"
)

// Request is one backup to run.
type Request struct {
	Destination string
	Mode        string // auto, full, incremental
	Reason      string
	// OnStart is called once the RUNNING record is stored (before any data
	// is written), so that an API can answer while the backup goes on.
	OnStart func(state.BackupRecord)
	// TakeOver (a full only): claim the destination for this node's
	// timeline (a restore that is the real recovery).
	TakeOver bool
}

// Progress is the running backup and how far it got.
type Progress struct {
	state.BackupRecord
	BytesWritten int64 `json:"bytes_written"`
}

// Backup runs one backup to the named destination now. It refuses with
// ErrBusy while another runs.
func (m *Manager) Backup(ctx context.Context, req Request) (state.BackupRecord, error) {
	destination, mode, reason := req.Destination, req.Mode, req.Reason
	if !m.run.TryLock() {
		cur := m.Current()
		if cur != nil {
			return state.BackupRecord{}, fmt.Errorf("%w: %s backup %s to %s since %s", ErrBusy, cur.Kind, cur.ID, cur.Destination, cur.Started.Format(time.RFC3339))
		}
		// Not a backup: a short task (a journal prune, a catalog write,
		// shipping a segment). Wait for it a little rather than fail a
		// scheduled run for a whole period.
		if !m.lockWithin(ctx, BusyWait, true) {
			if cur := m.Current(); cur != nil {
				return state.BackupRecord{}, fmt.Errorf("%w: %s backup %s to %s since %s", ErrBusy, cur.Kind, cur.ID, cur.Destination, cur.Started.Format(time.RFC3339))
			}
			return state.BackupRecord{}, errBusyTask
		}
	}
	defer m.run.Unlock()
	if err := m.host.Frozen(); err != nil {
		return state.BackupRecord{}, fmt.Errorf("%w: no backup starts while writes are frozen (%v)", ErrFrozen, err)
	}
	if err := m.host.Held(destination); err != nil {
		return state.BackupRecord{}, err
	}
	// A destination that cannot be reached or read is a failed backup,
	// recorded as such (backup list shows it with the reason).
	failEarly := func(err error) (state.BackupRecord, error) {
		if errors.Is(err, state.ErrNotFound) || ctx.Err() != nil {
			return state.BackupRecord{}, err
		}
		now := time.Now().UTC()
		kind := mode
		if kind == "" {
			kind = ModeAuto
		}
		rec := state.BackupRecord{ID: NewID(now, m.host.NewID()), Destination: destination, Kind: kind, Status: "FAILED",
			Node: m.host.NodeID(), Reason: err.Error(), Started: now, Finished: &now}
		if rerr := m.host.Record(context.WithoutCancel(ctx), rec); rerr != nil {
			m.log.Error("recording the failed backup failed", "destination", destination, "error", rerr)
		}
		m.log.Error("backup failed", "destination", destination, "error", err)
		return rec, err
	}
	t, err := m.host.OpenTarget(ctx, destination)
	if err != nil {
		return failEarly(err)
	}
	defer t.Dest.Close()
	cat, err := t.LoadCatalog(ctx)
	if err != nil {
		return failEarly(err)
	}
	kind, base, err := chooseKind(cat, m.host.Timeline().ID, mode, time.Now())
	if err != nil {
		return state.BackupRecord{}, err
	}
	if kind == KindIncremental && (mode == ModeAuto || mode == "") && !journalFrom(m.host.JournalDir(), base.LastIndex+1) {
		// The records after that full are no longer on this node (a node
		// that joined or restored later, or a pruned journal): an automatic
		// backup takes a full instead of failing.
		m.log.Warn("backup: the journal on this node no longer holds what an incremental needs; taking a full", "destination", destination, "base", base.ID)
		kind, base = KindFull, nil
	}
	id := NewID(time.Now(), m.host.NewID())
	rec := state.BackupRecord{ID: id, Destination: destination, Kind: kind, Status: "RUNNING", Node: m.host.NodeID(), Reason: reason,
		Started: time.Now().UTC(), Timeline: m.host.Timeline().ID}
	if base != nil {
		rec.BaseFullID = base.ID
	}
	if err := m.host.Record(ctx, rec); err != nil {
		return rec, fmt.Errorf("record the backup start: %w", err)
	}
	// A copy: Current reads it under mu while rec goes on changing here.
	running := rec
	m.mu.Lock()
	m.current, m.written = &running, 0
	m.mu.Unlock()
	defer func() { m.mu.Lock(); m.current = nil; m.mu.Unlock() }()
	if req.OnStart != nil {
		req.OnStart(rec)
	}
	progress := func(n int64) { m.mu.Lock(); m.written = n; m.mu.Unlock() }
	e, err := Run(ctx, m.host, t.Dest, kind, Options{ID: id, Encryption: t.Encryption, StagingDir: m.staging, Progress: progress, Base: base, Reason: reason,
		TakeOver: req.TakeOver})
	now := time.Now().UTC()
	rec.Finished = &now
	if err != nil {
		rec.Status, rec.Reason = "FAILED", err.Error()
		m.log.Error("backup failed", "id", id, "destination", destination, "kind", kind, "error", err)
		if rerr := m.host.Record(context.WithoutCancel(ctx), rec); rerr != nil {
			m.log.Error("recording the failed backup failed", "id", id, "error", rerr)
		}
		return rec, err
	}
	rec.Status, rec.File, rec.FirstIndex, rec.LastIndex, rec.Size, rec.SHA256, rec.Recipients = "DONE", e.File, e.FirstIndex, e.LastIndex, e.Size, e.SHA256, e.Recipients
	if err := m.host.Record(context.WithoutCancel(ctx), rec); err != nil {
		return rec, fmt.Errorf("backup %s is written, but recording it failed: %w", id, err)
	}
	m.log.Info("backup done", "id", id, "destination", destination, "kind", kind, "size", e.Size, "first_index", e.FirstIndex, "last_index", e.LastIndex)
	cleanup(ctx, t.Dest, m.log)
	r := Retention{KeepFulls: t.Config.KeepFulls, KeepDays: t.Config.KeepDays}
	if t.Config.Kind == "local" {
		r = Retention{KeepFulls: 1} // LOCAL keeps only the last full and its incrementals
	}
	r.Timeline = m.host.Timeline().ID
	if kind == KindFull {
		dropped, err := r.Apply(ctx, t.Dest, now)
		if err != nil {
			m.log.Error("retention failed", "destination", destination, "error", err)
		}
		for _, d := range dropped {
			m.log.Info("retention removed a backup", "destination", destination, "file", d.File)
			if old, ok := m.host.Lookup(d.ID); ok && old.Status == "DONE" {
				old.Status, old.Reason = "DELETED", "removed by retention on "+now.Format(time.RFC3339)
				if err := m.host.Record(context.WithoutCancel(ctx), old); err != nil {
					m.log.Error("could not mark a removed backup DELETED", "id", d.ID, "error", err)
				}
			}
		}
	}
	return rec, nil
}

// chooseKind applies the mode: auto takes a full when the newest full of
// this timeline is FullEvery old or missing, else a cumulative incremental
// on it. A full of another timeline is never a base: its history differs.
func chooseKind(cat Catalog, timeline uint32, mode string, now time.Time) (string, *Entry, error) {
	var last *Entry
	for i := range cat.Entries {
		e := &cat.Entries[i]
		if e.Kind == KindFull && e.TimelineID() == max(timeline, 1) && (last == nil || e.Created.After(last.Created)) {
			last = e
		}
	}
	switch mode {
	case ModeFull:
		return KindFull, nil, nil
	case ModeIncremental:
		if last == nil {
			return "", nil, fmt.Errorf("%w on this destination (timeline %d): take a full backup first", ErrNoBase, max(timeline, 1))
		}
		return KindIncremental, last, nil
	case ModeAuto, "":
		if last == nil || now.Sub(last.Created) >= FullEvery {
			return KindFull, nil, nil
		}
		return KindIncremental, last, nil
	}
	return "", nil, fmt.Errorf("backup mode %q: use auto, full or incremental", mode)
}

// MarkInterrupted turns this node's RUNNING records into FAILED (a restart
// or crash interrupted them) and removes leftover staging files. Called at
// open. It runs under the backup lock and reads the records there: a
// backup started since the open (it waits for it) is not one of them.
func (m *Manager) MarkInterrupted(ctx context.Context) {
	m.run.Lock()
	defer m.run.Unlock()
	records, err := m.host.Backups()
	if err != nil {
		m.log.Error("could not read the backup records to mark the interrupted ones", "error", err)
		return
	}
	m.markInterrupted(ctx, records, false)
}

// markInterrupted: anyNode also takes other nodes' RUNNING records (a new
// leader takes over from one that lost its leadership mid-backup). It
// reports whether every record and schedule it had to change was written.
func (m *Manager) markInterrupted(ctx context.Context, records []state.BackupRecord, anyNode bool) bool {
	ok := true
	catalogs := map[string]*Catalog{}
	for _, r := range records {
		if r.Status != "RUNNING" || !anyNode && r.Node != m.host.NodeID() {
			continue
		}
		if e, found := m.finishedOnDestination(ctx, r, catalogs); found {
			finished := e.Created.UTC()
			r.Status, r.Finished = "DONE", &finished
			r.File, r.FirstIndex, r.LastIndex, r.Size, r.SHA256, r.Recipients = e.File, e.FirstIndex, e.LastIndex, e.Size, e.SHA256, e.Recipients
			if err := m.host.Record(ctx, r); err != nil {
				m.log.Error("could not mark a backup found complete on its destination DONE", "id", r.ID, "error", err)
				ok = false
				continue
			}
			m.log.Warn("a backup left RUNNING is complete on its destination: marked DONE", "id", r.ID, "destination", r.Destination, "file", e.File)
			continue
		}
		now := time.Now().UTC()
		r.Status, r.Reason, r.Finished = "FAILED", "interrupted: the server stopped or crashed while the backup ran; nothing of it was kept", &now
		if err := m.host.Record(ctx, r); err != nil {
			m.log.Error("could not mark an interrupted backup FAILED", "id", r.ID, "error", err)
			ok = false
			continue
		}
		m.log.Warn("backup interrupted by a restart marked FAILED", "id", r.ID, "destination", r.Destination)
	}
	RemoveStaging(m.staging, m.log)
	// A schedule whose run was interrupted stays ONGOING otherwise.
	scheds, err := m.host.Schedules()
	if err != nil {
		m.log.Error("could not read the schedules to reset the interrupted ones", "error", err)
		return false
	}
	for _, sc := range scheds {
		if sc.State != "ONGOING" {
			continue
		}
		now := time.Now().UTC()
		sc.State, sc.LastRun, sc.LastResult = "ACTIVE", &now, "FAILED: interrupted by a restart"
		if sc.Type == "once" {
			sc.State = "DONE"
		}
		if err := m.host.PutSchedule(ctx, sc); err != nil {
			m.log.Error("could not reset an interrupted schedule", "schedule", sc.Name, "error", err)
			ok = false
		}
	}
	return ok
}

// catalogLookupTimeout bounds reading one destination's catalog when
// taking over backups left RUNNING.
const catalogLookupTimeout = 30 * time.Second

// finishedOnDestination reports the catalog entry of a backup whose record
// was left RUNNING, if its destination's catalog lists it: the backup was
// complete there (the catalog is written last) before its node stopped
// recording, or before the state copy a node was restored from was taken
// (that copy holds its own backup's RUNNING record). catalogs caches each
// destination's catalog for one pass (nil: it could not be read, and the
// record is marked as interrupted).
func (m *Manager) finishedOnDestination(ctx context.Context, r state.BackupRecord, catalogs map[string]*Catalog) (Entry, bool) {
	c, seen := catalogs[r.Destination]
	if !seen {
		c = m.readCatalog(ctx, r.Destination)
		catalogs[r.Destination] = c
	}
	if c == nil {
		return Entry{}, false
	}
	for _, e := range c.Entries {
		if e.ID == r.ID {
			return e, true
		}
	}
	return Entry{}, false
}

// readCatalog reads a destination's catalog (nil, logged, if it cannot).
func (m *Manager) readCatalog(ctx context.Context, name string) *Catalog {
	ctx, cancel := context.WithTimeout(ctx, catalogLookupTimeout)
	defer cancel()
	t, err := m.host.OpenTarget(ctx, name)
	if err != nil {
		m.log.Warn("could not open a destination to look for backups left RUNNING", "destination", name, "error", err)
		return nil
	}
	defer t.Dest.Close() // #nosec G104 -- opened only to read its catalog: nothing was written to it
	c, err := t.LoadCatalog(ctx)
	if err != nil {
		m.log.Warn("could not read a destination's catalog to look for backups left RUNNING", "destination", name, "error", err)
		return nil
	}
	return &c
}

// forgetArchiving drops the pending counts and archive errors (the node
// stopped leading; it no longer archives).
func (m *Manager) forgetArchiving() {
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.pending)
	clear(m.lastErr)
	m.counted = false
	m.epoch++
}

// archivePass ties what an archive pass reports (pending counts, errors) to
// the leadership it started under: a pass that started on a follower, or
// that ends after forgetArchiving, reports nothing, so that no count of a
// former leader stays in a follower's status for good.
type archivePass struct {
	epoch   uint64
	leading bool
}

// startPass begins an archive pass.
func (m *Manager) startPass() archivePass {
	leading := m.host.IsLeader()
	m.mu.Lock()
	defer m.mu.Unlock()
	if leading {
		// Counted, or tried to: a journal that cannot be listed is not
		// listed again every second (the loop's next pass is an interval
		// away).
		m.counted = true
	}
	return archivePass{epoch: m.epoch, leading: leading}
}

// reports says whether pass p still reports. m.mu held.
func (m *Manager) reports(p archivePass) bool { return p.leading && p.epoch == m.epoch }

// archiveCounted reports whether the archiver counted the pending segments
// (or tried to) since the node last became the leader.
func (m *Manager) archiveCounted() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.counted
}

// Pending reports, per archiving destination, closed segments not yet
// shipped; a destination the archiver has not counted yet (since the node
// started or became the leader) is absent.
func (m *Manager) Pending() map[string]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]int, len(m.pending))
	for k, v := range m.pending {
		out[k] = v
	}
	return out
}

// ArchiveOnce ships every closed journal segment past each archiving
// destination's mark. A failing destination keeps its segments on the node
// (they show in Pending) and is retried at the next call.
func (m *Manager) ArchiveOnce(ctx context.Context) error {
	// The listing too is done under the backup lock: a journal prune (which
	// takes it) never removes a segment between the listing and the read.
	if !m.run.TryLock() {
		return nil // a backup or a prune is running; archiving resumes after it
	}
	defer m.run.Unlock()
	return m.archiveLocked(ctx, nil, true)
}

// ArchiveProgress is one step of shipping segments to a destination: Done
// of Total segments are on it; Segment is the one just shipped (empty at
// the start, Done 0).
type ArchiveProgress struct {
	Destination string `json:"destination"`
	Segment     string `json:"segment,omitempty"`
	Done        int    `json:"done"`
	Total       int    `json:"total"`
}

// ArchiveWait is ArchiveOnce for an operator's request: it waits up to
// BusyWait for whatever holds the backup lock (a backup too), then ErrBusy.
// progress, when not nil, is called as each destination starts and after
// each segment shipped.
func (m *Manager) ArchiveWait(ctx context.Context, progress func(ArchiveProgress)) error {
	if !m.run.TryLock() && !m.lockWithin(ctx, BusyWait, false) {
		if cur := m.Current(); cur != nil {
			return fmt.Errorf("%w: %s backup %s to %s; segments are shipped after it", ErrBusy, cur.Kind, cur.ID, cur.Destination)
		}
		return errBusyTask
	}
	defer m.run.Unlock()
	// The archiver's pass skips its turn while writes are frozen (the
	// archive mark could not be recorded); an operator is told.
	if err := m.host.Frozen(); err != nil {
		return fmt.Errorf("%w: no segment is shipped while writes are frozen (%v)", ErrFrozen, err)
	}
	return m.archiveLocked(ctx, progress, true)
}

// archiveLocked counts each archiving destination's pending segments and,
// with ship, ships them.
func (m *Manager) archiveLocked(ctx context.Context, progress func(ArchiveProgress), ship bool) error {
	pass := m.startPass()
	dests, err := m.host.Destinations()
	if err != nil {
		return err
	}
	segs, err := journal.ListSegments(m.host.JournalDir())
	if err != nil {
		return fmt.Errorf("list journal segments: %w", err)
	}
	var errs []error
	for _, d := range dests {
		if !d.Archiving {
			continue
		}
		var todo []journal.SegmentInfo
		for _, s := range segs {
			if s.Closed && s.Records > 0 && s.LastIndex > d.ArchivedTo {
				todo = append(todo, s)
			}
		}
		m.mu.Lock()
		if m.reports(pass) {
			m.pending[d.Name] = len(todo)
		}
		m.mu.Unlock()
		if !ship || d.ArchivePaused || len(todo) == 0 || m.host.Held(d.Name) != nil {
			continue
		}
		if err := m.ship(ctx, pass, d.Name, todo, progress); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ship runs with the backup lock held (ArchiveOnce).
func (m *Manager) ship(ctx context.Context, pass archivePass, name string, todo []journal.SegmentInfo, progress func(ArchiveProgress)) error {
	if m.host.Frozen() != nil {
		return nil // resumes after the thaw
	}
	step := func(seg string, done int) {
		if progress != nil {
			progress(ArchiveProgress{Destination: name, Segment: seg, Done: done, Total: len(todo)})
		}
	}
	step("", 0)
	t, err := m.host.OpenTarget(ctx, name)
	if err != nil {
		m.setErr(pass, name, err)
		return err
	}
	defer t.Dest.Close()
	for i, s := range todo {
		seg := s
		if _, err := Run(ctx, m.host, t.Dest, KindSegment, Options{ID: NewID(time.Now(), m.host.NewID()), Encryption: t.Encryption, StagingDir: m.staging, Segment: &seg}); err != nil {
			m.setErr(pass, name, err)
			return fmt.Errorf("archive %s to %s: %w", seg.Name, name, err)
		}
		if err := m.host.Archived(ctx, name, seg.LastIndex); err != nil {
			err = fmt.Errorf("archive %s to %s: shipped, but recording the archive mark failed (it is shipped again at the next pass): %w", seg.Name, name, err)
			m.setErr(pass, name, err)
			return err
		}
		m.mu.Lock()
		if m.reports(pass) {
			m.pending[name] = len(todo) - i - 1
			delete(m.lastErr, name)
		}
		m.mu.Unlock()
		step(seg.Name, i+1)
	}
	return nil
}

// cleanup removes temp files an interrupted save left on the destination
// (only those older than dest.StaleTempAge, so a save in progress elsewhere
// is left alone).
func cleanup(ctx context.Context, d dest.Destination, log *slog.Logger) {
	if c, ok := d.(dest.Cleaner); ok {
		if err := c.Cleanup(ctx); err != nil {
			log.Warn("removing stale temp files failed", "destination", d.Location(), "error", err)
		}
	}
}

func (m *Manager) setErr(pass archivePass, name string, err error) {
	m.mu.Lock()
	if m.reports(pass) {
		m.lastErr[name] = err.Error()
	}
	m.mu.Unlock()
	m.log.Error("archiving failed; segments stay on the node", "destination", name, "error", err)
}

// ArchiveErrors returns the last archiving error per destination.
func (m *Manager) ArchiveErrors() map[string]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]string, len(m.lastErr))
	for k, v := range m.lastErr {
		out[k] = v
	}
	return out
}

var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// ParseCron validates a cron expression (5 fields or @daily style).
func ParseCron(expr string) error {
	_, err := cronParser.Parse(expr)
	return err
}

// Due reports whether schedule s should run at now, and the next time it
// will. A periodic schedule runs at its creation and then at every whole
// period after it (the first one after its last run ended); a cron
// schedule at the first cron time after its last run.
func Due(s state.Schedule, now time.Time) (bool, time.Time) {
	if s.State != "ACTIVE" {
		return false, time.Time{}
	}
	last := s.Created
	if s.LastRun != nil {
		last = *s.LastRun
	}
	var next time.Time
	switch s.Type {
	case "once":
		if s.LastRun != nil || s.At == nil {
			return false, time.Time{}
		}
		next = *s.At
	case "periodic":
		every, err := time.ParseDuration(s.Every)
		if err != nil || every < time.Minute {
			return false, time.Time{}
		}
		// Runs keep to whole periods counted from the schedule's creation
		// (from its last run if it has no creation time): the next is the
		// first period boundary after the last run ended, so the time a run
		// takes does not push the cadence later, and a late run skips the
		// periods it missed instead of catching up on them.
		anchor := s.Created
		if anchor.IsZero() {
			anchor = last
		}
		next = anchor
		if s.LastRun != nil && !last.Before(anchor) {
			next = anchor.Add((last.Sub(anchor)/every + 1) * every)
		}
	case "cron":
		sch, err := cronParser.Parse(s.Cron)
		if err != nil {
			return false, time.Time{}
		}
		next = sch.Next(last)
	}
	return !now.Before(next), next
}

// RunSchedules starts every due schedule (one at a time) and returns when done.
func (m *Manager) RunSchedules(ctx context.Context, now time.Time) {
	scheds, err := m.host.Schedules()
	if err != nil {
		m.log.Error("read schedules", "error", err)
		return
	}
	for _, s := range scheds {
		// The list was read before the runs of the schedules before this
		// one: an operator may have changed, paused or removed it since.
		s, ok := m.schedule(s)
		if !ok {
			continue
		}
		due, _ := Due(s, now)
		if !due || m.host.Held(s.Destination) != nil {
			continue // a held destination's schedule runs once released
		}
		s.State = "ONGOING"
		if err := m.host.PutSchedule(ctx, s); err != nil {
			m.log.Error("schedule state", "schedule", s.Name, "error", err)
			continue
		}
		if s.Kind == ScheduleVerify {
			m.runDrillSchedule(ctx, s)
			continue
		}
		rec, err := m.Backup(ctx, Request{Destination: s.Destination, Mode: s.Mode, Reason: "schedule " + s.Name})
		t := time.Now().UTC()
		result := "DONE " + rec.ID
		if err != nil {
			result = "FAILED: " + err.Error()
		}
		if err == nil && s.Verify && m.VerifyAfter != nil {
			if verr := m.VerifyAfter(ctx, s.Destination, rec.File); verr != nil {
				result += "; verification FAILED: " + verr.Error()
			} else {
				result += "; verified OK"
			}
		}
		m.finishSchedule(ctx, s, t, result)
	}
}

// maxScheduleResult bounds the result a schedule keeps of its last run.
const maxScheduleResult = 900

// schedule reads s again as it is stored now (false: removed). A schedule
// that cannot be read again is taken as it was.
func (m *Manager) schedule(s state.Schedule) (state.Schedule, bool) {
	all, err := m.host.Schedules()
	if err != nil {
		return s, true
	}
	for _, x := range all {
		if x.Name == s.Name {
			return x, true
		}
	}
	return state.Schedule{}, false
}

// finishSchedule records the result of a schedule's run (its first
// maxScheduleResult bytes) in the schedule as it is stored now: an
// operator's edit made while it ran stays, and a schedule removed meanwhile
// is not written back.
func (m *Manager) finishSchedule(ctx context.Context, ran state.Schedule, at time.Time, result string) {
	s, ok := m.schedule(ran)
	if !ok {
		m.log.Info("a schedule removed while it ran is not written back", "schedule", ran.Name, "result", result)
		return
	}
	if len(result) > maxScheduleResult {
		result = result[:maxScheduleResult]
	}
	s.LastRun, s.LastResult = &at, result
	if s.State == "ONGOING" || s.State == "ACTIVE" { // ACTIVE: edited while it ran
		s.State = "ACTIVE"
		if s.Type == "once" {
			s.State = "DONE"
		}
	}
	if err := m.host.PutSchedule(context.WithoutCancel(ctx), s); err != nil {
		m.log.Error("schedule state", "schedule", s.Name, "error", err)
	}
}

// Kinds of schedule: a backup (the default) or a restore drill.
const (
	ScheduleBackup = "backup"
	ScheduleVerify = "verify"
)

// runDrillSchedule runs a due schedule of kind verify and records its
// result in the schedule.
func (m *Manager) runDrillSchedule(ctx context.Context, s state.Schedule) {
	var res Drill
	err := errors.New("restore drills are not available on this node")
	if m.Drill != nil {
		res, err = m.Drill(ctx, s.Destination)
	}
	t := time.Now().UTC()
	var result string
	switch {
	case err != nil:
		result = "FAILED: " + err.Error()
	case res.OK():
		result = fmt.Sprintf("DRILL OK to index %d in %.1fs", res.Index, res.Duration)
	default:
		result = "DRILL FAILED: " + res.Reason
	}
	m.finishSchedule(ctx, s, t, result)
}

// errBusyTask is ErrBusy for a task other than a backup holding the lock.
var errBusyTask error = busyTask{}

type busyTask struct{}

func (busyTask) Error() string {
	return "another backup task holds the destinations (segments being archived, the journal pruned, a catalog written, or a freeze): try again"
}
func (busyTask) Is(target error) bool { return target == ErrBusy }

// BusyWait is how long a backup waits for a task other than a backup that
// holds the backup lock.
var BusyWait = 15 * time.Second

// lockWithin takes the run lock, trying until d has passed or ctx ends
// (or, with notBackup, until a backup turns out to hold it).
func (m *Manager) lockWithin(ctx context.Context, d time.Duration, notBackup bool) bool {
	deadline := time.Now().Add(d)
	for {
		if m.run.TryLock() {
			return true
		}
		if time.Now().After(deadline) || notBackup && m.Current() != nil {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// journalFrom reports whether the journal in dir still holds every record
// from index from on (its oldest segment starts at or before it).
func journalFrom(dir string, from uint64) bool {
	segs, err := journal.ListSegments(dir)
	if err != nil || len(segs) == 0 {
		return false
	}
	return segs[0].Prev < from
}

// Loop runs schedules and archiving until ctx ends: every interval, on the
// leader. It looks at the leadership every second (at most every
// interval): a node that becomes the leader counts the pending segments at
// once (without shipping them before the interval is up), so that status
// shows a count soon after a start or a change of leader rather than
// nothing for a whole interval, and a node that stops leading drops its
// counts at once.
func (m *Manager) Loop(ctx context.Context, every time.Duration) {
	start := time.Now()
	// The first pass as the leader counts as gaining leadership; schedules
	// and shipping run an interval after the start, as they always did.
	l := loopState{every: every, schedules: start, archiving: start}
	t := time.NewTicker(min(every, time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			m.tick(ctx, now, &l)
		}
	}
}

// loopState is what Loop remembers between passes.
type loopState struct {
	every                time.Duration
	led, taken           bool
	schedules, archiving time.Time // the last passes
	retake               time.Time // a failed take-over is tried again from then
}

// tick is one pass of Loop.
func (m *Manager) tick(ctx context.Context, now time.Time, l *loopState) {
	if !m.host.IsLeader() {
		if l.led {
			// A follower ships nothing: counts and errors of its time as
			// the leader would only go stale in status and metrics.
			m.forgetArchiving()
		}
		l.led, l.taken, l.retake = false, false, time.Time{}
		return
	}
	if !l.led && m.OnLeader != nil {
		m.OnLeader(ctx)
	}
	l.led = true
	if !l.taken && !now.Before(l.retake) {
		// Leadership gained: backups the previous leader was running died
		// with its leadership. Not while a backup runs here: it started
		// after this node became the leader, and its record and staging
		// file are its own. A later pass marks the others.
		if !m.run.TryLock() {
			return
		}
		recs, err := m.host.Backups()
		l.taken = err == nil && m.markInterrupted(ctx, recs, true)
		m.run.Unlock()
		if !l.taken {
			// A write failed (writes frozen, a full disk, no quorum): the
			// old leader's records would stay RUNNING and its schedule
			// ONGOING, never due again. Tried again an interval later.
			l.retake = now.Add(l.every)
		}
	}
	if now.Sub(l.schedules) >= l.every {
		l.schedules = now
		m.RunSchedules(ctx, now)
	}
	switch {
	case now.Sub(l.archiving) >= l.every:
		l.archiving = now
		if err := m.ArchiveOnce(ctx); err != nil && ctx.Err() == nil {
			m.log.Warn("archiving", "error", err)
		}
	case !m.archiveCounted():
		if err := m.countPending(ctx); err != nil && ctx.Err() == nil {
			m.log.Warn("counting the segments to archive", "error", err)
		}
	}
}

// countPending counts every archiving destination's pending segments and
// ships nothing (the archiver's pass does, every interval).
func (m *Manager) countPending(ctx context.Context) error {
	if !m.run.TryLock() {
		return nil // a backup or a prune is running; counted at a later pass
	}
	defer m.run.Unlock()
	return m.archiveLocked(ctx, nil, false)
}

// Exclusive runs fn while no backup or archiving runs (and none starts):
// for other writers of catalogs and for the freeze. It waits for a running
// backup to end.
func (m *Manager) Exclusive(fn func() error) error {
	m.run.Lock()
	defer m.run.Unlock()
	return fn()
}

// TryExclusive is Exclusive without waiting: ErrBusy while a backup runs.
func (m *Manager) TryExclusive(fn func() error) error {
	if !m.run.TryLock() {
		if cur := m.Current(); cur != nil {
			return fmt.Errorf("%w: %s backup %s to %s", ErrBusy, cur.Kind, cur.ID, cur.Destination)
		}
		return fmt.Errorf("%w (or segments are being archived)", ErrBusy)
	}
	defer m.run.Unlock()
	return fn()
}

// TestHold runs fn while holding the run lock, as a running backup does
// (for tests of the one-at-a-time rule).
func (m *Manager) TestHold(fn func()) {
	m.run.Lock()
	defer m.run.Unlock()
	fn()
}
