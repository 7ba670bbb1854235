package state

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coffer-kms/coffer/internal/barrier"
	"github.com/coffer-kms/coffer/internal/journal"
)

// The journal mirror (like a database's multiplexed WAL): a second journal,
// usually on the backup disk, that receives every record the primary
// journal receives. One goroutine, the mirror writer, does all of its I/O;
// the apply path only hands it the records it appended.
//
// While the mirror is in sync, the apply path waits (outside the journal
// lock) until the writer has fsynced its records to the mirror, so an
// acknowledged write is on the mirror disk too (RPO 0 for a lost data
// disk). It waits at most MirrorTimeout: a mirror write that takes longer
// (a hung NFS mount, a dying disk) marks the mirror behind, raises the
// mirror alert (MirrorHealth), and the writes go on at the pace of the data
// disk; the writer goes on copying in the background and, once it has
// caught up, writes wait for it again. A mirror write that fails does the
// same and is retried every RetryDelay. A mirror that falls too far behind
// (its queue is over MirrorQueueBytes) drops its queue and copies what it
// lacks from the primary journal on disk instead. An outage of the backup
// disk never stops the key service.

// MirrorJournal is what the mirror writer needs of a journal; *journal.Journal
// implements it (tests wrap one to hold its writes).
type MirrorJournal interface {
	Append(recs []journal.Record, c journal.Cipher) error
	Sync() error
	LastIndex() uint64
	Segments() []journal.SegmentInfo
	Close() error
}

// MirrorState describes the attached mirror.
type MirrorState struct {
	Attached bool `json:"attached"`
	// InSync: writes wait for the mirror's fsync before they are acknowledged.
	InSync bool `json:"in_sync"`
	// LastIndex is the last record fsynced to the mirror.
	LastIndex uint64 `json:"last_index"`
	// Behind is how many journal indexes the primary journal has past LastIndex.
	Behind uint64 `json:"behind"`
}

const defaultMirrorTimeout = 2 * time.Second
const defaultMirrorQueueBytes = 64 << 20

// errStopRead ends a read of the primary journal early.
var errStopRead = errors.New("stop reading")

// mirrorWriter owns a mirror journal: its goroutine (run) is the only one
// that writes to j, and closes it when it ends.
//
// Locks: mu guards the fields below it; readMu is held by run while it
// reads the primary journal's files and tried (never waited for) by
// PruneJournal under Store.jmu, so no segment vanishes under the read.
// Lock order: Store.jmu, then readMu, then mu, then the journals' own
// locks. run never takes Store.jmu, and nobody holds a lock while waiting
// for the mirror's I/O except run itself (readMu, and the mirror journal's
// own lock inside its Append and Sync).
type mirrorWriter struct {
	s          *Store
	j          MirrorJournal
	primary    *journal.Journal
	primaryDir string
	bar        *barrier.Barrier
	timeout    time.Duration
	maxQueue   int64

	last   atomic.Uint64 // last index fsynced to the mirror
	readMu sync.Mutex

	mu       sync.Mutex
	queue    []journal.Record // records appended to the primary, not yet to the mirror
	queued   int64            // payload bytes in queue
	resync   bool             // the queue is incomplete: copy from the primary journal
	inSync   bool             // the apply path waits for the mirror
	stopped  bool             // stop was closed
	progress chan struct{}    // closed (and replaced) when last moves, inSync drops or stopped is set

	wake chan struct{} // cap 1: queue has work
	stop chan struct{} // closed by stopWriter
	done chan struct{} // closed when run has ended (and closed j)
}

// AttachMirror makes m receive every journal record from now on. A writer
// goroutine first copies the records m lacks from the primary journal in
// primaryDir; AttachMirror waits for that at most MirrorTimeout (after it
// the mirror is behind and catches up in the background). It refuses, and
// does not take m, when the primary journal no longer holds records that m
// lacks, or when the writer of an earlier mirror is still stuck in a write.
// Otherwise the Store owns m (DetachMirror closes it).
func (s *Store) AttachMirror(m MirrorJournal, primaryDir string) error {
	s.jmu.Lock()
	if s.mw != nil {
		s.jmu.Unlock()
		return errors.New("a journal mirror is already attached")
	}
	if old := s.mwOld; old != nil {
		select {
		case <-old.done:
			s.mwOld = nil
		default:
			s.jmu.Unlock()
			return errors.New("the writer of the previous journal mirror is still stuck in a write to the mirror disk: the mirror is attached again once that write ends")
		}
	}
	if s.journal == nil {
		s.jmu.Unlock()
		return errors.New("the journal is not open")
	}
	from := m.LastIndex()
	if segs := s.journal.Segments(); from != 0 && len(segs) > 0 && segs[0].Prev > from {
		s.jmu.Unlock()
		return holeError(from, segs[0].Prev+1)
	}
	w := &mirrorWriter{s: s, j: m, primary: s.journal, primaryDir: primaryDir, bar: s.bar,
		timeout: s.opts.MirrorTimeout, maxQueue: s.opts.MirrorQueueBytes,
		resync: true, progress: make(chan struct{}),
		wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	w.last.Store(from)
	s.mw = w
	s.jmu.Unlock()
	go w.run()
	w.poke()
	// The first catch-up: wait for it a little, as a write would.
	t := time.NewTimer(w.timeout)
	defer t.Stop()
	for {
		w.mu.Lock()
		in, ch := w.inSync, w.progress
		w.mu.Unlock()
		if in {
			return nil
		}
		select {
		case <-ch:
		case <-w.done:
			return nil
		case <-t.C:
			w.mu.Lock()
			if !w.inSync && !w.stopped && s.mirrorH.Load() == nil {
				s.mirrorFailed(fmt.Errorf("the journal mirror has not caught up within %s of being attached: it goes on copying in the background", w.timeout))
			}
			w.mu.Unlock()
			return nil
		}
	}
}

func holeError(from, next uint64) error {
	// Continuing would leave a hole in the mirror that a restore with
	// --journal would only find when it is needed.
	return fmt.Errorf("the journal on the data disk no longer holds records %d-%d that the mirror lacks (pruned while the mirror was not attached): move the mirror directory aside, restart the server so that a new mirror starts, and take a full backup", from+1, next-1)
}

// DetachMirror stops mirroring. It waits up to wait for the writer to end
// (it closes the mirror journal); a writer stuck in a write to the mirror
// disk is left to end by itself, and DetachMirror returns an error saying
// so. It reports whether a mirror was attached.
func (s *Store) DetachMirror(wait time.Duration) (bool, error) {
	s.jmu.Lock()
	w := s.mw
	s.mw = nil
	if w != nil {
		s.mwOld = w
	}
	s.jmu.Unlock()
	if w == nil {
		s.mirrorH.Store(nil)
		return false, nil
	}
	w.mu.Lock()
	w.stopped = true
	close(w.stop)
	w.broadcastLocked()
	s.mirrorH.Store(nil)
	w.mu.Unlock()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-w.done:
		return true, nil
	case <-t.C:
		return true, fmt.Errorf("the journal mirror writer did not end within %s (a write to the mirror disk is hanging); it closes the mirror when that write returns", wait)
	}
}

// MirrorAttached reports whether a mirror is attached (in sync or not).
func (s *Store) MirrorAttached() bool {
	s.jmu.Lock()
	defer s.jmu.Unlock()
	return s.mw != nil
}

// MirrorHealth reports a mirror that is failing or behind (nil: in sync or none).
func (s *Store) MirrorHealth() *WriteHealth { return s.mirrorH.Load() }

// Mirror describes the attached mirror (zero: none).
func (s *Store) Mirror() MirrorState {
	s.jmu.Lock()
	w := s.mw
	s.jmu.Unlock()
	if w == nil {
		return MirrorState{}
	}
	w.mu.Lock()
	in := w.inSync
	w.mu.Unlock()
	ms := MirrorState{Attached: true, InSync: in, LastIndex: w.last.Load()}
	if p := w.primary.LastIndex(); p > ms.LastIndex {
		ms.Behind = p - ms.LastIndex
	}
	return ms
}

// ResyncMirror asks a mirror that is failing to retry now instead of after
// RetryDelay. It does not wait.
func (s *Store) ResyncMirror() {
	s.jmu.Lock()
	w := s.mw
	s.jmu.Unlock()
	if w != nil {
		w.poke()
	}
}

// enqueueMirrorLocked hands recs, just appended to the primary journal, to
// the mirror writer (jmu held, so records arrive in journal order). It
// returns the index to wait for, or 0 if the mirror is not in sync.
func (s *Store) enqueueMirrorLocked(recs []journal.Record) (*mirrorWriter, uint64) {
	w := s.mw
	if w == nil || len(recs) == 0 {
		return nil, 0
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return nil, 0
	}
	if !w.resync {
		var n int64
		for i := range recs {
			n += int64(len(recs[i].Payload)) + 64
		}
		if w.queued+n > w.maxQueue {
			// Too far behind to keep it all in memory: the writer copies
			// from the journal on disk instead.
			w.queue, w.queued, w.resync = nil, 0, true
		} else {
			w.queue = append(w.queue, recs...)
			w.queued += n
		}
	}
	w.poke()
	if !w.inSync {
		return nil, 0
	}
	return w, recs[len(recs)-1].Index
}

// waitMirror waits until the mirror has idx, at most MirrorTimeout; after
// that the mirror is behind and writes no longer wait for it.
func (w *mirrorWriter) waitMirror(idx uint64) {
	if w == nil || idx == 0 {
		return
	}
	t := time.NewTimer(w.timeout)
	defer t.Stop()
	for {
		w.mu.Lock()
		if w.last.Load() >= idx || !w.inSync || w.stopped {
			w.mu.Unlock()
			return
		}
		ch := w.progress
		w.mu.Unlock()
		select {
		case <-ch:
		case <-t.C:
			w.mu.Lock()
			if w.inSync && !w.stopped && w.last.Load() < idx {
				w.inSync = false
				w.broadcastLocked()
				w.s.mirrorFailed(fmt.Errorf("a write to the journal mirror took longer than %s: the mirror is behind (writes are acknowledged without it until it has caught up in the background)", w.timeout))
			}
			w.mu.Unlock()
			return
		}
	}
}

func (w *mirrorWriter) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *mirrorWriter) broadcastLocked() {
	close(w.progress)
	w.progress = make(chan struct{})
}

// run is the mirror writer's goroutine: it ends when stop is closed, and
// closes the mirror journal.
func (w *mirrorWriter) run() {
	defer close(w.done)
	w.loop()
}

func (w *mirrorWriter) loop() {
	defer w.j.Close()
	var retry <-chan time.Time
	for {
		select {
		case <-w.stop:
			return
		case <-w.wake:
		case <-retry:
		}
		retry = nil
		for {
			select {
			case <-w.stop:
				return
			default:
			}
			more, err := w.step()
			if err != nil {
				dir := filepath.Dir(w.path())
				w.mu.Lock()
				w.queue, w.queued, w.resync = nil, 0, true
				if w.inSync {
					w.inSync = false
					w.broadcastLocked()
				}
				if !w.stopped {
					w.s.mirrorFailed(fmt.Errorf("journal mirror in %s: %w", dir, err))
				}
				w.mu.Unlock()
				retry = time.After(w.s.opts.RetryDelay)
				break
			}
			if !more {
				break
			}
		}
	}
}

// step writes what is queued (or catches up from the primary journal) and
// reports whether there may be more to do.
func (w *mirrorWriter) step() (bool, error) {
	w.mu.Lock()
	if w.resync {
		// From here on the queue collects every record the primary journal
		// receives after upTo; the records up to upTo come from its files.
		w.resync = false
		upTo := w.primary.LastIndex()
		w.mu.Unlock()
		if err := w.copyPrimary(upTo); err != nil {
			return false, err
		}
		return true, nil
	}
	batch := w.queue
	w.queue, w.queued = nil, 0
	if len(batch) == 0 {
		// Caught up with everything handed over: in sync again.
		if !w.inSync && !w.stopped {
			w.inSync = true
			w.broadcastLocked()
			if h := w.s.mirrorH.Swap(nil); h != nil {
				w.s.log.Info("journal mirror in sync again", "after_attempts", h.Attempts, "last_index", w.last.Load())
			}
		}
		w.mu.Unlock()
		return false, nil
	}
	w.mu.Unlock()
	last := w.last.Load()
	// A gap: the primary journal got records the apply path did not hand
	// over (rebuilt from the raft log). Copy them from its files.
	if first := batch[0]; first.Index > last+1 && first.Prev != last {
		w.mu.Lock()
		w.queue, w.queued, w.resync = nil, 0, true
		w.mu.Unlock()
		return true, nil
	}
	if err := w.write(batch); err != nil {
		return false, err
	}
	return true, nil
}

// write appends recs to the mirror and fsyncs it.
func (w *mirrorWriter) write(recs []journal.Record) error {
	if err := w.j.Append(recs, w.bar); err != nil {
		return err
	}
	if err := w.j.Sync(); err != nil {
		return err
	}
	w.mu.Lock()
	w.last.Store(w.j.LastIndex())
	w.broadcastLocked()
	w.mu.Unlock()
	return nil
}

// copyPrimary copies the records after the mirror's last index up to upTo
// from the primary journal's files. It holds readMu meanwhile, so pruning
// removes nothing under it.
func (w *mirrorWriter) copyPrimary(upTo uint64) error {
	from := w.last.Load()
	if from >= upTo {
		return nil
	}
	w.readMu.Lock()
	defer w.readMu.Unlock()
	first := true
	var batch []journal.Record
	var size int
	err := journal.Read(w.primaryDir, w.bar, func(_ journal.SegmentInfo, r journal.Record) error {
		if r.Index <= from {
			return nil
		}
		// r.Prev == from: the primary journal itself jumps there (a raft
		// snapshot installed on a follower), the mirror lacks nothing it has.
		if first && from != 0 && r.Index != from+1 && r.Prev != from {
			return holeError(from, r.Index)
		}
		first = false
		batch = append(batch, r)
		size += len(r.Payload)
		if r.Index >= upTo || len(batch) >= 1000 || size >= 4<<20 {
			select {
			case <-w.stop:
				return errStopRead
			default:
			}
			if err := w.write(batch); err != nil {
				return err
			}
			batch, size = batch[:0], 0
		}
		if r.Index >= upTo {
			// Records after upTo may still be being written: not read here.
			return errStopRead
		}
		return nil
	})
	if errors.Is(err, errStopRead) {
		err = nil
	}
	if err == nil && len(batch) > 0 {
		err = w.write(batch)
	}
	if err == nil && w.last.Load() < upTo {
		select {
		case <-w.stop:
		default:
			err = fmt.Errorf("the journal on the data disk ends at index %d, before %d", w.last.Load(), upTo)
		}
	}
	return err
}

func (w *mirrorWriter) path() string {
	if segs := w.j.Segments(); len(segs) > 0 {
		return segs[len(segs)-1].Path
	}
	return "(no segment yet)"
}

// mirrorFailed raises (or updates) the mirror alert. With a writer
// attached, its mu is held (so a detached mirror raises nothing).
func (s *Store) mirrorFailed(err error) {
	h := &WriteHealth{Component: "mirror", Error: err.Error(), Since: time.Now().UTC(), Attempts: 1}
	old := s.mirrorH.Load()
	if old != nil {
		h.Since, h.Attempts = old.Since, old.Attempts+1
	}
	s.mirrorH.Store(h)
	// Retried every few seconds: log the first failure, a changed reason,
	// and then every hundredth attempt.
	if old == nil || old.Error != h.Error || h.Attempts%100 == 0 {
		s.log.Error("journal mirror failing or behind: writes continue, but are not all on the mirror disk yet", "error", err, "attempts", h.Attempts)
	}
}

// PruneJournal removes closed journal segments whose records all lie below
// index below, keeping at least keep closed segments, at most limit of them
// (journal.Prune). An attached mirror lowers the floor to what it still has
// to copy from the primary journal, so a mirror that is behind (or new) can
// still catch up; mirrorFloor reports that lower floor (0: the mirror did
// not lower it). While the mirror writer reads the primary journal's files
// nothing is removed (mirrorFloor is then its position). With dry set it
// only lists what it would remove.
func (s *Store) PruneJournal(below uint64, keep, limit int, dry bool) (removed []journal.SegmentInfo, mirrorFloor uint64, err error) {
	s.jmu.Lock()
	defer s.jmu.Unlock()
	if s.journal == nil {
		return nil, 0, nil
	}
	if w := s.mw; w != nil {
		if m := w.last.Load() + 1; m < below {
			below, mirrorFloor = m, m
		}
		if !w.readMu.TryLock() {
			return nil, w.last.Load() + 1, nil
		}
		defer w.readMu.Unlock()
	}
	if dry {
		return s.journal.Prunable(below, keep, limit), mirrorFloor, nil
	}
	removed, err = s.journal.Prune(below, keep, limit)
	return removed, mirrorFloor, err
}
