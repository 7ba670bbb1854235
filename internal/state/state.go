// Package state is Coffer's replicated state machine: it applies commands
// from the raft log to a bbolt database, one transaction per batch together
// with the applied raft index, and appends every applied command to the
// recovery journal.
//
// Durability: raft's log is fsynced before a command is applied, and the
// bbolt commit is fsynced; the journal write is not fsynced per batch. If the
// journal misses records after a crash (or after a write error), they are
// rebuilt from the raft log before raft starts (FillJournal), and a snapshot
// (after which raft may compact its log) first fsyncs the journal and refuses
// while the journal is behind. So one acknowledged write costs two fsyncs per
// group-committed batch, not three per write.
package state

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"

	"github.com/coffer-kms/coffer/internal/barrier"
	"github.com/coffer-kms/coffer/internal/fsutil"
	"github.com/coffer-kms/coffer/internal/journal"
)

// Domain errors returned as FSM results (deterministic on every node).
var (
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("conflict")
	ErrExists   = errors.New("already exists")
)

// Options for Open.
type Options struct {
	Logger *slog.Logger
	// RetryDelay between attempts when a state write fails (disk full, I/O error).
	RetryDelay time.Duration
	// NoSync skips the fsync of each commit: only for an offline replay
	// (restore), which calls Sync once at the end. Never on a live node.
	NoSync bool
	// MirrorTimeout: how long a write waits for the journal mirror's fsync
	// before the mirror is marked behind (0: 2s). See mirror.go.
	MirrorTimeout time.Duration
	// MirrorQueueBytes: records a mirror that is behind may hold in memory
	// before it copies from the journal files instead (0: 64 MiB).
	MirrorQueueBytes int64
}

// Store is the bbolt-backed state and the raft FSM.
//
// Locks, in the order they are taken: jmu, then mu (ApplyBatch takes mu and
// releases it before jmu; no path holds mu while taking jmu), then a mirror
// writer's mu or readMu (see mirrorWriter). Neither jmu nor mu is ever held
// while waiting for the journal mirror.
type Store struct {
	path string
	log  *slog.Logger
	opts Options

	mu sync.RWMutex // write-locked only to swap db on Restore
	db *bolt.DB

	jmu     sync.Mutex // guards journal, logs, barrier attachment and journal appends
	journal *journal.Journal
	logs    raft.LogStore
	bar     *barrier.Barrier

	applied atomic.Uint64
	stop    chan struct{} // closed by Close
	// interrupt is closed by Interrupt (seal/stop) to end a retrying batch;
	// Attach re-arms it. abandoned is set when a batch was given up: raft
	// counts those entries as applied, so no snapshot may be taken until the
	// next open replays them.
	interrupt chan struct{}
	abandoned atomic.Bool
	stateH    atomic.Pointer[WriteHealth]
	journalH  atomic.Pointer[WriteHealth]

	// batches and batchEntries count the committed ApplyBatch transactions
	// and the raft entries in them: the group commit's batch size.
	batches, batchEntries atomic.Uint64

	mw      *mirrorWriter // the attached journal mirror; guarded by jmu
	mwOld   *mirrorWriter // the last detached one, until its goroutine has ended; guarded by jmu
	mirrorH atomic.Pointer[WriteHealth]

	// The entries the read path reads for every request, remembered at the
	// applied index (readmemo.go).
	kvMemo  AppliedMemo[kvEntryKey, kvEntryRead]
	omgMemo AppliedMemo[omgKey, omgRead]

	// wc: the cursors of the batch's write transaction (cursors.go); used
	// only inside write transactions, which bbolt runs one at a time.
	wc writeCursors
}

// ErrAbandoned is the result of entries whose state write was given up because
// the node is sealing or stopping. They are committed in the raft log and are
// applied at the next open: their outcome is unknown to the caller, not lost.
var ErrAbandoned = errors.New("state write abandoned while stopping; the command is committed and will be applied at the next start")

// WriteHealth reports a failing state or journal write.
type WriteHealth struct {
	Component string    `json:"component"` // "state" or "journal"
	Error     string    `json:"error"`
	Since     time.Time `json:"since"`
	Attempts  int       `json:"attempts"`
}

// Open opens (creating if needed) the state database at path.
func Open(path string, opts Options) (*Store, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.RetryDelay <= 0 {
		opts.RetryDelay = 5 * time.Second
	}
	if opts.MirrorTimeout <= 0 {
		opts.MirrorTimeout = defaultMirrorTimeout
	}
	if opts.MirrorQueueBytes <= 0 {
		opts.MirrorQueueBytes = defaultMirrorQueueBytes
	}
	db, err := openDB(path)
	if err != nil {
		return nil, err
	}
	db.NoSync = opts.NoSync
	s := &Store{path: path, log: opts.Logger, opts: opts, db: db, stop: make(chan struct{}), interrupt: make(chan struct{})}
	if _, err := s.readTimeline(); err != nil {
		db.Close() // #nosec G104 -- closing after an earlier error, which is the one returned; nothing was written
		return nil, fmt.Errorf("open state %s: %w", path, err)
	}
	s.applied.Store(readApplied(db))
	return s, nil
}

func openDB(path string) (*bolt.DB, error) {
	db, err := bolt.Open(path, fsutil.FileMode, &bolt.Options{Timeout: 2 * time.Second, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return nil, fmt.Errorf("open state %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		m := tx.Bucket(bucketMeta)
		if v := m.Get(keySchema); v != nil {
			return migrate(tx, binary.BigEndian.Uint64(v), OldestSchema, SchemaVersion, migrations)
		}
		return m.Put(keySchema, u64(SchemaVersion))
	})
	if err != nil {
		db.Close() // #nosec G104 -- closing after an earlier error, which is the one returned
		return nil, fmt.Errorf("open state %s: %w", path, err)
	}
	return db, nil
}

func readApplied(db *bolt.DB) uint64 {
	var v uint64
	db.View(func(tx *bolt.Tx) error { // #nosec G104 -- the function returns nil; View fails only on a closed database, and this one was just opened
		v = getU64(tx.Bucket(bucketMeta), keyAppliedIndex)
		return nil
	})
	return v
}

// Close stops retries and closes the database.
func (s *Store) Close() error {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	if _, err := s.DetachMirror(5 * time.Second); err != nil {
		s.log.Error("journal mirror", "error", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.db.Close()
}

// Path of the database file.
func (s *Store) Path() string { return s.path }

// BatchStats returns how many batches of raft entries were committed to the
// state since it was opened, and how many entries they held: their ratio is
// the batch size the group commit reaches (one state fsync per batch).
func (s *Store) BatchStats() (batches, entries uint64) {
	return s.batches.Load(), s.batchEntries.Load()
}

// Sync fsyncs the database (after writes made with Options.NoSync).
func (s *Store) Sync() error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.db.Sync()
}

// AppliedIndex is the last raft index applied to the state.
func (s *Store) AppliedIndex() uint64 { return s.applied.Load() }

// Health returns the current write failures (state first), empty if none.
func (s *Store) Health() []WriteHealth {
	var out []WriteHealth
	for _, p := range []*atomic.Pointer[WriteHealth]{&s.stateH, &s.journalH} {
		if h := p.Load(); h != nil {
			out = append(out, *h)
		}
	}
	return out
}

func (s *Store) slot(component string) *atomic.Pointer[WriteHealth] {
	if component == "journal" {
		return &s.journalH
	}
	return &s.stateH
}

// RaftConfiguration is the latest raft configuration entry the state has
// applied: its index and data (raft's encoding). ok is false when none was
// recorded (a state written before it was, or restored from such a copy).
func (s *Store) RaftConfiguration() (index uint64, data []byte, ok bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	s.db.View(func(tx *bolt.Tx) error { // #nosec G104 -- the function returns nil; View fails only on a closed database, where there is nothing to read
		v := tx.Bucket(bucketMeta).Get(keyRaftConfig)
		if len(v) > 8 {
			index, data, ok = binary.BigEndian.Uint64(v), append([]byte(nil), v[8:]...), true
		}
		return nil
	})
	return index, data, ok
}

// AppliedTerm is the raft term of the last applied entry.
func (s *Store) AppliedTerm() uint64 {
	var t uint64
	s.View(func(tx *bolt.Tx) error { // #nosec G104 -- the function returns nil; View fails only on a closed database, where there is nothing to read
		t = getU64(tx.Bucket(bucketMeta), keyAppliedTerm)
		return nil
	})
	return t
}

// Interrupt ends a batch that is retrying a failed write, so raft can shut
// down (seal, stop). Attach re-arms it.
func (s *Store) Interrupt() {
	s.jmu.Lock()
	defer s.jmu.Unlock()
	select {
	case <-s.interrupt:
	default:
		close(s.interrupt)
	}
}

// Attach connects the journal, the raft log (to rebuild missing journal
// records) and the barrier (to encrypt them) when the keystore opens.
func (s *Store) Attach(j *journal.Journal, logs raft.LogStore, b *barrier.Barrier) {
	s.jmu.Lock()
	defer s.jmu.Unlock()
	s.journal, s.logs, s.bar = j, logs, b
	s.interrupt = make(chan struct{})
	s.abandoned.Store(false)
}

// Detach disconnects them when the keystore is sealed.
func (s *Store) Detach() {
	s.jmu.Lock()
	defer s.jmu.Unlock()
	s.journal, s.logs, s.bar = nil, nil, nil
}

// View runs fn in a read transaction.
func (s *Store) View(fn func(tx *bolt.Tx) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.db.View(fn)
}

// DEKs returns the wrapped data keys and the current key id.
func (s *Store) DEKs() (keys []barrier.WrappedKey, current uint32, err error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.dekLocked()
}

func (s *Store) dekLocked() (keys []barrier.WrappedKey, current uint32, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		current = uint32(getU64(tx.Bucket(bucketMeta), keyCurrentDEK)) // #nosec G115 -- the DEK id is a uint32 stored widened to 8 bytes; only this package writes it
		return tx.Bucket(bucketDEKs).ForEach(func(k, v []byte) error {
			var wk barrier.WrappedKey
			if err := decodeJSON(v, &wk); err != nil {
				return fmt.Errorf("data key %x: %w", k, err)
			}
			keys = append(keys, wk)
			return nil
		})
	})
	return keys, current, err
}

// ClusterID is set by the first command after init ("" before).
func (s *Store) ClusterID() string {
	var id string
	s.View(func(tx *bolt.Tx) error { // #nosec G104 -- the function returns nil; View fails only on a closed database, where there is nothing to read
		id = string(tx.Bucket(bucketMeta).Get(keyClusterID))
		return nil
	})
	return id
}

// ApplyBatch implements raft.BatchingFSM: one bbolt transaction for the
// whole batch. Entries at or below the applied index are skipped, so a replay
// after a crash is harmless. A failing commit is retried (the FSM pauses) until
// it succeeds or the store is closed: raft has the entries, so nothing
// acknowledged is lost and nothing is half-applied.
func (s *Store) ApplyBatch(logs []*raft.Log) []any {
	// Decoded outside the lock and the transaction.
	return s.applyBatch(logs, prepare(logs), false)
}

// applyBatch is ApplyBatch with the commands decoded ahead (pre, one per
// entry; nil decodes them in the transaction). offline (a replay, nobody
// else writing): a command type this build does not know ends the batch
// with ErrUnknownCommand in every result instead of waiting for an upgrade.
func (s *Store) applyBatch(logs []*raft.Log, pre []prepared, offline bool) []any {
	resp := make([]any, len(logs))
	if s.abandoned.Load() {
		// An earlier batch was given up; applying later ones would move the
		// applied index past it and lose it for good. Refuse until the next
		// open (Attach), whose replay applies everything in order.
		for i := range resp {
			resp[i] = ErrAbandoned
		}
		return resp
	}
	var recs []journal.Record
	for attempt := 1; ; attempt++ {
		recs = recs[:0]
		if attempt > 1 {
			pre = nil // decoded again: a handler may have changed what it was given
		}
		var applied uint64
		s.mu.RLock()
		err := s.db.Update(func(tx *bolt.Tx) error {
			defer s.wc.reset() // the cursors end with the transaction
			meta := tx.Bucket(bucketMeta)
			applied = getU64(meta, keyAppliedIndex)
			last, lastTerm := applied, uint64(0)
			creates := true // every command of the batch creates an object
			for i, l := range logs {
				if l.Index <= applied {
					resp[i] = nil
					continue
				}
				var p *prepared
				if pre != nil {
					p = &pre[i]
				}
				rec, res, err := s.applyOne(tx, l, p)
				if err != nil {
					return err
				}
				resp[i] = res
				if rec != nil {
					recs = append(recs, *rec)
					creates = creates && rec.Type == uint16(TypeObjectCreate)
				}
				last, lastTerm = l.Index, l.Term
			}
			if last == applied {
				return nil
			}
			if creates {
				fillAppendBuckets(tx)
			}
			if err := meta.Put(keyAppliedIndex, u64(last)); err != nil {
				return err
			}
			return meta.Put(keyAppliedTerm, u64(lastTerm))
		})
		s.mu.RUnlock()
		if err == nil {
			if n := len(logs); n > 0 && logs[n-1].Index > applied {
				s.applied.Store(logs[n-1].Index)
				s.dropMemos()
			}
			s.batches.Add(1)
			s.batchEntries.Add(uint64(len(logs)))
			if h := s.stateH.Swap(nil); h != nil {
				s.log.Info("state writes recovered", "after_attempts", h.Attempts)
			}
			break
		}
		component := "state"
		if errors.Is(err, ErrUnknownCommand) {
			if offline {
				for i := range resp {
					resp[i] = err
				}
				return resp
			}
			component = "upgrade"
			err = fmt.Errorf("%w; upgrade this node's binary: it applies nothing from that entry on until then", err)
		}
		s.failing(component, err, attempt)
		s.jmu.Lock()
		interrupt := s.interrupt
		s.jmu.Unlock()
		select {
		case <-s.stop:
		case <-interrupt:
		case <-time.After(s.opts.RetryDelay):
			continue
		}
		s.abandoned.Store(true)
		for i := range resp {
			resp[i] = fmt.Errorf("%w (last error: %v)", ErrAbandoned, err)
		}
		return resp
	}
	if len(recs) > 0 {
		s.appendJournal(recs)
	}
	return resp
}

func (s *Store) failing(component string, err error, attempt int) {
	slot := s.slot(component)
	h := &WriteHealth{Component: component, Error: err.Error(), Since: time.Now().UTC(), Attempts: attempt}
	if old := slot.Load(); old != nil {
		h.Since = old.Since
	}
	slot.Store(h)
	s.log.Error("write failed; writes paused, retrying", "component", component, "error", err, "attempt", attempt, "retry_in", s.opts.RetryDelay)
}

// applyOne applies one entry inside tx, decoded ahead as p if p is not nil.
// A non-nil error aborts the batch (an I/O failure); domain errors are
// returned as the result instead.
func (s *Store) applyOne(tx *bolt.Tx, l *raft.Log, p *prepared) (*journal.Record, any, error) {
	switch l.Type {
	case raft.LogConfiguration:
		if err := tx.Bucket(bucketMeta).Put(keyRaftConfig, append(u64(l.Index), l.Data...)); err != nil {
			return nil, nil, err
		}
		return &journal.Record{Index: l.Index, Time: l.AppendedAt, Type: uint16(TypeRaftConfig), Payload: l.Data}, nil, nil
	case raft.LogCommand:
	default:
		return nil, nil, nil
	}
	var cmd Command
	var err error
	if p != nil && p.ok {
		cmd, err = p.cmd, p.err
	} else {
		cmd, err = UnmarshalCommand(l.Data)
	}
	if err != nil {
		// Journal it anyway so the journal never falls behind the state.
		return &journal.Record{Index: l.Index, Time: l.AppendedAt, Type: uint16(TypeInvalid), KeyID: s.currentKey(), Payload: l.Data}, err, nil
	}
	res, ioErr := s.apply(tx, l.Index, cmd)
	if ioErr != nil {
		return nil, nil, ioErr
	}
	rec := &journal.Record{Index: l.Index, Time: cmd.Time, Type: uint16(cmd.Type), Payload: l.Data}
	if !cmd.Type.ClearPayload() {
		rec.KeyID = s.currentKey()
	}
	return rec, res, nil
}

func (s *Store) currentKey() uint32 {
	if s.bar == nil {
		return 0
	}
	return s.bar.Current()
}

// Apply implements raft.FSM for single entries.
func (s *Store) Apply(l *raft.Log) any { return s.ApplyBatch([]*raft.Log{l})[0] }

// appendJournal appends recs to the journal and hands them to the mirror;
// with the mirror in sync it then waits (without the journal lock) until
// the mirror has them, at most MirrorTimeout.
func (s *Store) appendJournal(recs []journal.Record) {
	s.jmu.Lock()
	if s.journal == nil {
		s.jmu.Unlock()
		return
	}
	err := s.fillJournalLocked(recs[0].Index - 1)
	if err == nil {
		recs, err = s.withMarkers(recs)
	}
	if err == nil {
		err = s.journal.Append(recs, s.bar)
	}
	s.journalResult(err)
	var w *mirrorWriter
	var idx uint64
	if err == nil {
		w, idx = s.enqueueMirrorLocked(recs)
	}
	s.jmu.Unlock()
	w.waitMirror(idx)
}

// withMarkers inserts marker records for raft entries between the records of
// a batch that the FSM did not see (no-ops, barriers).
func (s *Store) withMarkers(recs []journal.Record) ([]journal.Record, error) {
	gap := false
	for i := 1; i < len(recs); i++ {
		if recs[i].Index != recs[i-1].Index+1 {
			gap = true
			break
		}
	}
	if !gap || s.logs == nil {
		return recs, nil
	}
	out := make([]journal.Record, 0, len(recs)+4)
	for i, r := range recs {
		if i > 0 {
			for idx := recs[i-1].Index + 1; idx < r.Index; idx++ {
				var l raft.Log
				if err := s.logs.GetLog(idx, &l); err != nil {
					return nil, fmt.Errorf("read raft entry %d for the journal: %w", idx, err)
				}
				out = append(out, recordFor(&l, s.currentKey()))
			}
		}
		out = append(out, r)
	}
	return out, nil
}

// journalResult records a journal failure (raising the alert) or clears it.
func (s *Store) journalResult(err error) {
	if err != nil {
		attempt := 1
		if h := s.journalH.Load(); h != nil {
			attempt = h.Attempts + 1
		}
		s.failing("journal", err, attempt)
		return
	}
	if h := s.journalH.Swap(nil); h != nil {
		s.log.Info("journal writes recovered", "after_attempts", h.Attempts)
	}
}

// FillJournal appends to the journal every applied entry it lacks, reading
// them from the raft log. Called before raft starts, and after a journal
// write error.
func (s *Store) FillJournal() error {
	s.jmu.Lock()
	defer s.jmu.Unlock()
	err := s.fillJournalLocked(s.applied.Load())
	if s.journal != nil {
		s.journalResult(err)
	}
	return err
}

func (s *Store) fillJournalLocked(upTo uint64) error {
	if s.journal == nil || s.logs == nil {
		return nil
	}
	from := s.journal.LastIndex() + 1
	if from > upTo {
		return nil
	}
	if first, err := s.logs.FirstIndex(); err == nil && first > from && first != 0 {
		return fmt.Errorf("journal ends at index %d but the raft log starts at %d: records %d-%d cannot be rebuilt", from-1, first, from, first-1)
	}
	keyAt, err := s.keyIndex()
	if err != nil {
		return err
	}
	var recs []journal.Record
	rebuilt := 0
	flush := func() error {
		if len(recs) == 0 {
			return nil
		}
		err := s.journal.Append(recs, s.bar)
		rebuilt += len(recs)
		recs = recs[:0]
		return err
	}
	for i := from; i <= upTo; i++ {
		var l raft.Log
		if err := s.logs.GetLog(i, &l); err != nil {
			return fmt.Errorf("rebuild journal record %d from raft log: %w", i, err)
		}
		recs = append(recs, recordFor(&l, keyAt(l.Index)))
		if len(recs) >= 256 {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	if rebuilt > 0 {
		s.log.Info("journal records rebuilt from raft log", "records", rebuilt, "from", from, "to", upTo)
	}
	return nil
}

// RebuildJournalGap writes the journal records of g (records missing between
// two segments, as when one was moved aside) from the raft log, each
// encrypted under the data key that was current at its index, as a new
// segment between the two (journal.FillGap). logs must hold every index of
// the gap; bar must be unsealed.
func (s *Store) RebuildJournalGap(opts journal.Options, g journal.Gap, logs raft.LogStore, bar *barrier.Barrier) (journal.SegmentInfo, error) {
	keyAt, err := s.keyIndex()
	if err != nil {
		return journal.SegmentInfo{}, err
	}
	return journal.FillGap(opts, g, bar, func(i uint64) (journal.Record, error) {
		var l raft.Log
		if err := logs.GetLog(i, &l); err != nil {
			return journal.Record{}, fmt.Errorf("read raft entry: %w", err)
		}
		return recordFor(&l, keyAt(l.Index)), nil
	})
}

// Snapshot implements raft.FSM. It fsyncs the journal first and refuses while
// the journal is behind, so raft never compacts entries the journal lacks.
func (s *Store) Snapshot() (raft.FSMSnapshot, error) {
	if s.abandoned.Load() {
		return nil, errors.New("a state write was abandoned: snapshot refused until the next open replays it")
	}
	s.jmu.Lock()
	if s.journal != nil {
		if s.journal.LastIndex() < s.applied.Load() {
			s.jmu.Unlock()
			return nil, fmt.Errorf("journal is behind the state (journal %d, state %d): snapshot postponed", s.journal.LastIndex(), s.applied.Load())
		}
		if err := s.journal.Sync(); err != nil {
			s.jmu.Unlock()
			return nil, fmt.Errorf("fsync journal before snapshot: %w", err)
		}
	}
	s.jmu.Unlock()
	s.mu.RLock()
	tx, err := s.db.Begin(false)
	s.mu.RUnlock()
	if err != nil {
		return nil, fmt.Errorf("snapshot: begin read transaction: %w", err)
	}
	return &snapshot{tx: tx}, nil
}

type snapshot struct{ tx *bolt.Tx }

func (p *snapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := p.tx.WriteTo(sink); err != nil {
		sink.Cancel() // #nosec G104 -- cancelling after an earlier error, which is the one returned
		return fmt.Errorf("write state snapshot: %w", err)
	}
	return sink.Close()
}

// removeRestoreTmp removes a snapshot copy Restore does not use; one left
// behind is reported (it holds sealed state, and the next snapshot
// overwrites it).
func (s *Store) removeRestoreTmp(tmp string) {
	if err := os.Remove(tmp); err != nil {
		s.log.Warn("remove unused snapshot copy", "error", err)
	}
}

func (p *snapshot) Release() { p.tx.Rollback() } // #nosec G104 -- a read-only transaction: rollback only releases it and cannot lose data

// Restore implements raft.FSM. The snapshot is a whole bbolt file. If this
// store has already applied at least as far as the snapshot (it is a prefix
// of our committed history), it is discarded; otherwise the database is
// replaced atomically and, when unsealed, the barrier reloads the data keys.
func (s *Store) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	tmp := s.path + ".restore"
	if err := fsutil.WriteFileFrom(tmp, func(w io.Writer) error { _, err := io.Copy(w, rc); return err }); err != nil {
		return err
	}
	ndb, err := openDB(tmp)
	if err != nil {
		s.removeRestoreTmp(tmp)
		return fmt.Errorf("restore: snapshot is not a valid state: %w", err)
	}
	idx := readApplied(ndb)
	ndb.Close() // #nosec G104 -- opened to read the applied index: its writes (the buckets) are committed, and Close cannot lose them
	if idx <= s.applied.Load() {
		s.removeRestoreTmp(tmp)
		s.log.Info("snapshot restore skipped: state already at or past it", "snapshot_index", idx, "applied", s.applied.Load())
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("restore: close state: %w", err)
	}
	if err := os.Rename(tmp, s.path); err != nil {
		return fmt.Errorf("restore: replace state: %w", err)
	}
	if err := fsutil.SyncDir(filepath.Dir(s.path)); err != nil {
		// The new file is in place; only the rename's durability is in doubt.
		// Reopen regardless: returning now would leave the state closed.
		s.log.Error("restore: fsync of the data dir after replacing state.db failed", "error", err)
	}
	db, err := openDB(s.path)
	if err != nil {
		return err
	}
	s.db = db
	s.applied.Store(idx)
	s.dropMemos()
	s.log.Warn("state replaced from raft snapshot", "index", idx)
	if s.bar != nil && !s.bar.Sealed() {
		keys, current, err := s.dekLocked()
		if err != nil {
			return err
		}
		if err := s.bar.Unseal(s.bar.Keyring(), keys, current); err != nil {
			return fmt.Errorf("restore: load data keys of the snapshot: %w", err)
		}
	}
	return nil
}

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func getU64(b *bolt.Bucket, k []byte) uint64 {
	v := b.Get(k)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

// recordFor is the journal record of a raft entry. Entries the FSM never
// sees (no-ops, barriers) become marker records, so journal indexes are
// contiguous and a missing record is always detectable.
func recordFor(l *raft.Log, key uint32) journal.Record {
	switch l.Type {
	case raft.LogConfiguration:
		return journal.Record{Index: l.Index, Time: l.AppendedAt, Type: uint16(TypeRaftConfig), Payload: l.Data}
	case raft.LogCommand:
		cmd, err := UnmarshalCommand(l.Data)
		if err != nil {
			return journal.Record{Index: l.Index, Time: l.AppendedAt, Type: uint16(TypeInvalid), KeyID: key, Payload: l.Data}
		}
		r := journal.Record{Index: l.Index, Time: cmd.Time, Type: uint16(cmd.Type), Payload: l.Data}
		if !cmd.Type.ClearPayload() {
			r.KeyID = key
		}
		return r
	}
	return journal.Record{Index: l.Index, Time: l.AppendedAt, Type: uint16(TypeRaftMarker)}
}

// keyIndex returns, for a raft index, the data key that was current when
// that entry was applied: the newest key created at or before it. Rebuilt
// records are thus encrypted exactly as they were the first time, and a
// replay from any backup point finds the key it needs.
func (s *Store) keyIndex() (func(uint64) uint32, error) {
	keys, _, err := s.DEKs()
	if err != nil {
		return nil, err
	}
	// Keys made before creation indexes were recorded have Index 0; among
	// those the highest id is the newest.
	slices.SortFunc(keys, func(a, b barrier.WrappedKey) int {
		if c := cmp.Compare(a.Index, b.Index); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
	return func(idx uint64) uint32 {
		var id uint32
		for _, k := range keys {
			if k.Index <= idx {
				id = k.ID
			}
		}
		return id
	}, nil
}

// BackupPoint is where a state copy stands in the raft history.
type BackupPoint struct {
	Index     uint64 `json:"index"`
	Term      uint64 `json:"term"`
	ClusterID string `json:"cluster_id"`
	// Digest and Objects describe the copy (see Store.Digest), so that a
	// verification can compare a restored state with what was backed up.
	Digest  string `json:"digest,omitempty"`
	Objects int    `json:"objects,omitempty"`
}

// WriteBackup writes a consistent copy of the whole database from one read
// transaction: writes continue meanwhile (bbolt's MVCC), and the copy holds
// exactly the commands up to the returned index. open is called once with
// the point and the copy's exact size, and returns where to write it.
//
// The returned point also carries the copy's Digest and object count,
// computed at the same time from a second read transaction on the same
// snapshot (no commit can happen between the two: ApplyBatch holds the read
// side of s.mu for its whole transaction).
func (s *Store) WriteBackup(open func(p BackupPoint, size int64) (io.Writer, error)) (BackupPoint, error) {
	s.mu.Lock()
	tx, err := s.db.Begin(false)
	var tx2 *bolt.Tx
	if err == nil {
		if tx2, err = s.db.Begin(false); err != nil {
			tx.Rollback() // #nosec G104 -- a read-only transaction, rolled back after an earlier error, which is the one returned
		}
	}
	s.mu.Unlock()
	if err != nil {
		return BackupPoint{}, fmt.Errorf("backup: begin read transaction: %w", err)
	}
	defer tx.Rollback()
	type digestResult struct {
		digest  string
		objects int
		err     error
	}
	done := make(chan digestResult, 1)
	go func() {
		defer tx2.Rollback()
		d, n, err := DigestTx(tx2)
		done <- digestResult{d, n, err}
	}()
	meta := tx.Bucket(bucketMeta)
	p := BackupPoint{Index: getU64(meta, keyAppliedIndex), Term: getU64(meta, keyAppliedTerm), ClusterID: string(meta.Get(keyClusterID))}
	w, err := open(p, tx.Size())
	if err == nil {
		if _, werr := tx.WriteTo(w); werr != nil {
			err = fmt.Errorf("backup: copy state: %w", werr)
		}
	}
	d := <-done
	if err != nil {
		return BackupPoint{}, err
	}
	if d.err != nil {
		return BackupPoint{}, fmt.Errorf("backup: digest of the state: %w", d.err)
	}
	p.Digest, p.Objects = d.digest, d.objects
	return p, nil
}
