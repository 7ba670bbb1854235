package backup

import (
	"fmt"
	"math"

	"github.com/coffer-kms/coffer/internal/state"
)

// Floor is the lowest journal index a node must keep on its own disk, and
// who needs it. Segments whose records all lie below Index can be removed.
type Floor struct {
	Index  uint64 // math.MaxUint64: nothing needs the journal
	Holder string // what holds it (for logs and "coffer journal prune")
}

// JournalFloor works out what the destinations still need from the local
// journal:
//   - an archiving destination (paused or failing included) needs every
//     record after its archive mark: they have not been shipped;
//   - a destination with a full backup on the node's timeline needs every
//     record after its newest full, because a cumulative incremental carries
//     all of them.
//
// A destination without a full backup needs nothing: its next backup is a
// full. The newest full is taken both by index and by start time (an
// incremental's base is the newest full in the destination's catalog by
// time), and the lower of the two counts. A "local" destination (LOCAL) is
// per node: only this node's (node) backups count for it. Every node
// computes the same floor for the shared destinations from the replicated
// state, so a follower that becomes leader still has what archiving and
// incrementals ask for.
func JournalFloor(dests []state.Destination, recs []state.BackupRecord, timeline uint32, node string) Floor {
	f := Floor{Index: math.MaxUint64}
	lower := func(idx uint64, why string) {
		if idx < f.Index {
			f.Index, f.Holder = idx, why
		}
	}
	local := map[string]bool{}
	for _, d := range dests {
		local[d.Name] = d.Kind == "local"
	}
	byIndex, byTime := map[string]state.BackupRecord{}, map[string]state.BackupRecord{}
	for _, r := range recs {
		if r.Kind != KindFull || r.Status != "DONE" || max(r.Timeline, 1) != max(timeline, 1) || local[r.Destination] && r.Node != node {
			continue
		}
		if old, ok := byIndex[r.Destination]; !ok || r.LastIndex > old.LastIndex {
			byIndex[r.Destination] = r
		}
		if old, ok := byTime[r.Destination]; !ok || r.Started.After(old.Started) {
			byTime[r.Destination] = r
		}
	}
	newest := map[string]state.BackupRecord{}
	for name, r := range byIndex {
		if t := byTime[name]; t.LastIndex < r.LastIndex {
			r = t
		}
		newest[name] = r
	}
	for _, d := range dests {
		if d.Archiving {
			what := "archiving to %s (archived to index %d)"
			if d.ArchivePaused {
				what = "archiving to %s, paused (archived to index %d)"
			}
			lower(d.ArchivedTo+1, fmt.Sprintf(what, d.Name, d.ArchivedTo))
		}
		if r, ok := newest[d.Name]; ok {
			lower(r.LastIndex+1, fmt.Sprintf("incremental backups to %s after full %s (index %d)", d.Name, r.ID, r.LastIndex))
		}
	}
	return f
}
