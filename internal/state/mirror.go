package state

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/coffer-kms/coffer/internal/journal"
)

// The journal mirror (the guide's "WAL multiplexing"): a second journal,
// usually on the backup disk, that receives every record in the same
// apply as the primary journal and is fsynced before the write is
// acknowledged. While it works, an acknowledged write is on the backup disk
// too. When it fails the node keeps serving (an outage of the backup disk
// must not stop the key service): the mirror is marked broken, the failure
// shows in MirrorHealth, and ResyncMirror brings it up to date again.

// AttachMirror makes m receive every journal record from now on, after
// copying the records it lacks from the primary journal in primaryDir.
func (s *Store) AttachMirror(m *journal.Journal, primaryDir string) error {
	s.jmu.Lock()
	defer s.jmu.Unlock()
	s.mirror = m
	s.mirrorDir = primaryDir
	return s.resyncMirrorLocked()
}

// DetachMirror stops mirroring and returns the mirror (the caller closes it).
func (s *Store) DetachMirror() *journal.Journal {
	s.jmu.Lock()
	defer s.jmu.Unlock()
	m := s.mirror
	s.mirror = nil
	s.mirrorH.Store(nil)
	return m
}

// MirrorAttached reports whether a mirror is attached (healthy or not).
func (s *Store) MirrorAttached() bool {
	s.jmu.Lock()
	defer s.jmu.Unlock()
	return s.mirror != nil
}

// MirrorHealth reports a failing mirror (nil: healthy or none).
func (s *Store) MirrorHealth() *WriteHealth { return s.mirrorH.Load() }

// ResyncMirror retries a broken mirror: it copies what it missed from the
// primary journal; on success the mirror is synchronous again.
func (s *Store) ResyncMirror() error {
	s.jmu.Lock()
	defer s.jmu.Unlock()
	if s.mirror == nil || s.mirrorH.Load() == nil {
		return nil
	}
	return s.resyncMirrorLocked()
}

func (s *Store) resyncMirrorLocked() error {
	if s.mirror == nil || s.journal == nil {
		return nil
	}
	from := s.mirror.LastIndex()
	first := true
	var batch []journal.Record
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := s.mirror.Append(batch, s.bar)
		batch = batch[:0]
		return err
	}
	err := journal.Read(s.mirrorDir, s.bar, func(_ journal.SegmentInfo, r journal.Record) error {
		if r.Index <= from {
			return nil
		}
		// r.Prev == from: the primary journal itself jumps there (a raft
		// snapshot installed on a follower), the mirror lacks nothing it has.
		if first && from != 0 && r.Index != from+1 && r.Prev != from {
			// Continuing would leave a hole in the mirror that a restore
			// with --journal would only find when it is needed.
			return fmt.Errorf("the journal on the data disk no longer holds records %d-%d that the mirror lacks (pruned while the mirror was not attached): move the mirror directory aside, restart the server so that a new mirror starts, and take a full backup", from+1, r.Index-1)
		}
		first = false
		batch = append(batch, r)
		if len(batch) >= 1000 {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err == nil {
		err = s.mirror.Sync()
	}
	if err != nil {
		s.mirrorFailed(fmt.Errorf("resync mirror in %s: %w", filepath.Dir(s.mirrorPath()), err))
		return err
	}
	if h := s.mirrorH.Swap(nil); h != nil {
		s.log.Info("journal mirror in sync again", "after_attempts", h.Attempts, "last_index", s.mirror.LastIndex())
	}
	return nil
}

func (s *Store) mirrorPath() string {
	if segs := s.mirror.Segments(); len(segs) > 0 {
		return segs[len(segs)-1].Path
	}
	return "(no segment yet)"
}

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
		s.log.Error("journal mirror failing: writes continue, but are no longer also on the mirror disk", "error", err, "attempts", h.Attempts)
	}
}

// appendMirrorLocked writes recs to a healthy mirror and fsyncs it.
func (s *Store) appendMirrorLocked(recs []journal.Record) {
	if s.mirror == nil || s.mirrorH.Load() != nil {
		return
	}
	if last := s.mirror.LastIndex(); last != 0 && recs[0].Index != last+1 {
		s.resyncMirrorLocked() // the primary filled a gap first: copy from it
		return
	}
	err := s.mirror.Append(recs, s.bar)
	if err == nil {
		err = s.mirror.Sync()
	}
	if err != nil {
		s.mirrorFailed(err)
	}
}

// PruneJournal removes closed journal segments whose records all lie below
// index below, keeping at least keep closed segments, at most limit of them
// (journal.Prune). An
// attached mirror lowers the floor to what it still has to copy from the
// primary journal, so a mirror that is failing (or new) can still catch up;
// mirrorFloor reports that lower floor (0: the mirror did not lower it).
// It runs under the journal lock: a mirror resync never sees a segment
// vanish under it. With dry set it only lists what it would remove.
func (s *Store) PruneJournal(below uint64, keep, limit int, dry bool) (removed []journal.SegmentInfo, mirrorFloor uint64, err error) {
	s.jmu.Lock()
	defer s.jmu.Unlock()
	if s.journal == nil {
		return nil, 0, nil
	}
	if s.mirror != nil {
		if m := s.mirror.LastIndex() + 1; m < below {
			below, mirrorFloor = m, m
		}
	}
	if dry {
		return s.journal.Prunable(below, keep, limit), mirrorFloor, nil
	}
	removed, err = s.journal.Prune(below, keep, limit)
	return removed, mirrorFloor, err
}
