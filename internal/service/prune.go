package service

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/coffer-kms/coffer/internal/backup"
	"github.com/coffer-kms/coffer/internal/journal"
)

// pruneLimit caps the segments one round removes: appends wait while it
// runs. The next round (a minute later) goes on.
const pruneLimit = 256

// DefaultJournalKeep is how many closed journal segments a node keeps beyond
// what its destinations need (journal.keep_segments).
const DefaultJournalKeep = 24

// JournalPrune is what a journal prune removed, or would remove.
type JournalPrune struct {
	// Floor: segments whose records all lie below it may go (0: nothing on
	// this node needs the journal, only the kept segments stay).
	Floor uint64 `json:"floor"`
	// Holder names what holds the floor where it is.
	Holder  string                `json:"holder,omitempty"`
	Keep    int                   `json:"keep_segments"`
	DryRun  bool                  `json:"dry_run,omitempty"`
	Removed []journal.SegmentInfo `json:"removed"`
	// Kept is how many segments are left (the open one included).
	Kept int `json:"kept"`
}

func (s *Backups) journalKeep() int {
	if s.cfg.JournalKeepSegments > 0 {
		return s.cfg.JournalKeepSegments
	}
	return DefaultJournalKeep
}

// PruneJournal removes the closed journal segments nothing needs any more
// (system admins): those every archiving destination has shipped and that
// hold no record after the newest full backup of any destination, beyond
// the journal.keep_segments newest closed ones. An attached journal mirror
// keeps what it has not copied yet. dry lists without removing. The server
// also runs this by itself unless journal.prune is false.
func (s *Backups) PruneJournal(ctx context.Context, dry bool) (JournalPrune, error) {
	if _, err := requireRole(ctx, RoleSystemAdmin, "pruning the journal"); err != nil {
		return JournalPrune{}, err
	}
	return s.pruneJournal(dry)
}

func (s *Backups) pruneJournal(dry bool) (JournalPrune, error) {
	out := JournalPrune{Keep: s.journalKeep(), DryRun: dry}
	// Lock order as a backup's: the backup lock, then the lifecycle lock.
	run := func() error {
		s.mu.RLock()
		defer s.mu.RUnlock()
		if err := s.requireOpenLocked(); err != nil {
			return err
		}
		if err := s.frozenErr(); err != nil {
			// A storage snapshot is being taken: no file may change.
			return fmt.Errorf("%w: %v", ErrConflict, err)
		}
		// The floor is read inside the backup lock: no backup or archiving
		// moves it (or reads segments) while segments go.
		dests, err := s.st.Destinations()
		if err != nil {
			return fmt.Errorf("journal prune: read destinations: %w", err)
		}
		recs, err := s.st.Backups()
		if err != nil {
			return fmt.Errorf("journal prune: read backup records: %w", err)
		}
		f := backup.JournalFloor(dests, recs, s.st.Timeline().ID, s.nodeID)
		out.Floor, out.Holder = f.Index, f.Holder
		if f.Index == math.MaxUint64 {
			out.Floor, out.Holder = 0, "nothing: no archiving destination and no full backup"
		}
		attached := s.st.MirrorAttached()
		for _, d := range dests {
			if d.Mirror && !attached {
				// It will copy what it lacks from this journal once it
				// is attached again: keep everything until then.
				f.Index, out.Floor = 0, 1
				out.Holder = fmt.Sprintf("the journal mirror to %s, which is not attached (see the warnings in coffer status)", d.Name)
			}
		}
		removed, mirrorFloor, err := s.st.PruneJournal(f.Index, out.Keep, pruneLimit, dry)
		if mirrorFloor != 0 {
			out.Floor, out.Holder = mirrorFloor, fmt.Sprintf("the journal mirror (it has records to index %d)", mirrorFloor-1)
		}
		out.Removed = removed
		if out.Removed == nil {
			out.Removed = []journal.SegmentInfo{}
		}
		if s.jr != nil {
			out.Kept = len(s.jr.Segments())
			if dry {
				out.Kept -= len(out.Removed)
			}
		}
		return err
	}
	s.mu.RLock()
	bm := s.backups
	s.mu.RUnlock()
	var err error
	if bm != nil {
		// Never waits for a backup: the next round prunes.
		if err = bm.TryExclusive(run); errors.Is(err, backup.ErrBusy) {
			err = fmt.Errorf("%w: %v; prune again when it is done", ErrConflict, err)
		}
	} else {
		err = run()
	}
	if err == nil && !dry {
		last := out
		last.Removed = nil
		s.lastPrune.Store(&last)
	}
	if !dry && len(out.Removed) > 0 {
		first, last := out.Removed[0], out.Removed[len(out.Removed)-1]
		s.log.Info("journal pruned", "segments", len(out.Removed), "from", first.Name, "to", last.Name,
			"below_index", out.Floor, "held_by", out.Holder, "kept", out.Kept)
	}
	return out, err
}
