// Package restore rebuilds a data dir from backups, offline: the newest
// full backup before the target, then the incrementals and archived journal
// segments after it (and, optionally, a raw journal such as the synchronous
// mirror), replayed record by record up to the target — the latest point, a
// time, a restore point or a raft index. The restored node gets a new
// keystore under the operator's passphrase holding the master key
// generations the backups carry, a raft directory agreeing with the
// restored state (a snapshot at the restored index and a single-voter
// configuration), and a new timeline, so that the abandoned history's
// records are never replayed into the new one. It needs no running server
// and no file from the lost node.
package restore

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/coffer-kms/coffer/internal/backup"
	"github.com/coffer-kms/coffer/internal/state"
)

// Target is where to stop. The zero Target is the latest point.
type Target struct {
	Time  time.Time // stop before the first record after Time
	Point string    // stop after the record creating this restore point
	Index uint64    // stop after this raft index
}

// Latest reports whether t asks for the latest point.
func (t Target) Latest() bool { return t.Time.IsZero() && t.Point == "" && t.Index == 0 }

func (t Target) String() string {
	switch {
	case t.Index != 0:
		return fmt.Sprintf("index %d", t.Index)
	case t.Point != "":
		return fmt.Sprintf("restore point %q", t.Point)
	case !t.Time.IsZero():
		return "time " + t.Time.UTC().Format(time.RFC3339Nano)
	}
	return "latest"
}

// Errors a caller may test for.
var (
	// ErrGap: records between the chosen backups are missing, or the target
	// lies beyond what the backups hold. The message names the missing range
	// and the last point that can be reached.
	ErrGap = errors.New("restore: the backups do not reach the target")
	// ErrNoBackup: no full backup fits the target.
	ErrNoBackup = errors.New("restore: no full backup to start from")
	// ErrNotOnTimeline: the restore point exists only on another timeline.
	ErrNotOnTimeline = errors.New("restore: restore point is not on this timeline")
	// ErrTargetDir: the data dir cannot be restored into.
	ErrTargetDir = errors.New("restore: data dir refused")
)

// lineage is the chosen timeline's ancestry: each timeline with the last
// index it contributes (the chosen one: unbounded).
type lineage []state.TimelineBranch

func lineageOf(cat backup.Catalog, tl uint32, known []state.TimelineBranch) (lineage, error) {
	var hist string
	found := false
	for _, e := range cat.Entries {
		if e.TimelineID() == tl {
			found = true
			if e.History != "" {
				hist = e.History
			}
		}
	}
	if !found && known != nil {
		// A node on a timeline none of whose backups reached this
		// destination yet: its own history says where it came from.
		return append(slices.Clone(known), state.TimelineBranch{ID: tl, Upto: math.MaxUint64}), nil
	}
	if !found {
		return nil, fmt.Errorf("timeline %d has no backup on this destination (timelines here: %s)", tl, timelinesOf(cat))
	}
	h, err := state.ParseHistory(hist)
	if err != nil {
		return nil, err
	}
	return append(h, state.TimelineBranch{ID: tl, Upto: math.MaxUint64}), nil
}

func timelinesOf(cat backup.Catalog) string {
	var ids []uint32
	for _, e := range cat.Entries {
		if !slices.Contains(ids, e.TimelineID()) {
			ids = append(ids, e.TimelineID())
		}
	}
	slices.Sort(ids)
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = fmt.Sprint(id)
	}
	return strings.Join(s, ", ")
}

// TimelineInfo is one timeline on a destination, as restore --list shows it.
type TimelineInfo struct {
	ID uint32 `json:"id"`
	// History is where it branched off (empty for timeline 1).
	History []state.TimelineBranch `json:"history,omitempty"`
	// Reach is the last index a restore of it gets from this destination.
	Reach     uint64    `json:"reach"`
	LastWrite time.Time `json:"last_write"` // newest backup file of the timeline
	Files     int       `json:"files"`
	// Writer: the timeline that writes to the destination now.
	Writer bool `json:"writer,omitempty"`
}

// Timelines lists the timelines with backups in the catalog, by id.
func Timelines(cat backup.Catalog) []TimelineInfo {
	byID := map[uint32]*TimelineInfo{}
	var ids []uint32
	for _, e := range cat.Entries {
		id := e.TimelineID()
		t := byID[id]
		if t == nil {
			t = &TimelineInfo{ID: id}
			byID[id] = t
			ids = append(ids, id)
		}
		t.Files++
		if e.Created.After(t.LastWrite) {
			t.LastWrite = e.Created
		}
	}
	slices.Sort(ids)
	writer := cat.WriterTimeline()
	out := make([]TimelineInfo, 0, len(ids))
	for _, id := range ids {
		t := byID[id]
		t.Writer = id == writer
		if l, err := lineageOf(cat, id, nil); err == nil {
			t.History = l[:len(l)-1]
			t.Reach = l.reach(cat)
		}
		out = append(out, *t)
	}
	return out
}

// reach is the last index the lineage gets from the catalog's files.
func (l lineage) reach(cat backup.Catalog) uint64 {
	var n uint64
	for _, e := range cat.Entries {
		if _, hi, ok := l.clip(e); ok {
			n = max(n, hi)
		}
	}
	return n
}

// forkPoint is the last index two lineages share.
func forkPoint(a, b lineage) uint64 {
	var f uint64
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i].ID != b[i].ID {
			break
		}
		f = min(a[i].Upto, b[i].Upto)
		if a[i].Upto != b[i].Upto {
			break
		}
	}
	return f
}

// ErrAmbiguousTimeline: two timelines on the destination both hold records
// after the point where they forked; the caller must choose one.
var ErrAmbiguousTimeline = errors.New("restore: two timelines on this destination have diverged: choose one with --timeline N")

// chooseTimeline is the timeline a restore without --timeline follows: the
// one written to most recently (of those holding the most), unless two timelines both have records
// after their fork point (a restored copy wrote next to the server it
// copied, or a restore to a past point while the old history went on):
// then which history is wanted is the operator's choice, never a guess.
func chooseTimeline(cat backup.Catalog) (uint32, error) {
	tls := Timelines(cat)
	if len(tls) == 0 {
		return 1, nil
	}
	lins := make([]lineage, len(tls))
	for i, t := range tls {
		lins[i], _ = lineageOf(cat, t.ID, nil)
	}
	var diverged []string
	seen := map[uint32]bool{}
	for i := range tls {
		for j := i + 1; j < len(tls); j++ {
			if lins[i] == nil || lins[j] == nil {
				continue
			}
			f := forkPoint(lins[i], lins[j])
			if tls[i].Reach > f && tls[j].Reach > f {
				for _, k := range []int{i, j} {
					if !seen[tls[k].ID] {
						seen[tls[k].ID] = true
						diverged = append(diverged, describeTimeline(tls[k]))
					}
				}
			}
		}
	}
	if len(diverged) > 0 {
		return 0, fmt.Errorf("%w: %s", ErrAmbiguousTimeline, strings.Join(diverged, "; "))
	}
	// Not diverged: each timeline's records are a prefix of the one that
	// reaches furthest (the one written to last, unless it only repeats
	// what another holds); on a tie, the one written to last.
	best := tls[0]
	for _, t := range tls[1:] {
		if t.Reach > best.Reach || t.Reach == best.Reach && t.LastWrite.After(best.LastWrite) {
			best = t
		}
	}
	return best.ID, nil
}

func describeTimeline(t TimelineInfo) string {
	s := fmt.Sprintf("timeline %d", t.ID)
	if n := len(t.History); n > 0 {
		s += fmt.Sprintf(" (from timeline %d at index %d)", t.History[n-1].ID, t.History[n-1].Upto)
	}
	s += fmt.Sprintf(" reaches index %d, last written %s", t.Reach, t.LastWrite.UTC().Format(time.RFC3339))
	if t.Writer {
		s += ", writes to this destination now"
	}
	return s
}

// span returns the index range [lo, hi] that timeline tl contributes to the
// lineage (ok false: not part of it).
func (l lineage) span(tl uint32) (lo, hi uint64, ok bool) {
	var prev uint64
	for _, b := range l {
		if b.ID == tl {
			return prev + 1, b.Upto, true
		}
		prev = b.Upto
	}
	return 0, 0, false
}

// usableFull: a full (or dump) whose whole state belongs to the lineage.
func (l lineage) usableFull(e backup.Entry) bool {
	if e.Kind != backup.KindFull && e.Kind != backup.KindDump {
		return false
	}
	_, hi, ok := l.span(e.TimelineID())
	return ok && e.LastIndex <= hi
}

// clip returns the part of a journal-carrying entry the lineage may use.
func (l lineage) clip(e backup.Entry) (lo, hi uint64, ok bool) {
	tlo, thi, ok := l.span(e.TimelineID())
	if !ok {
		return 0, 0, false
	}
	lo, hi = max(e.FirstIndex, tlo), min(e.LastIndex, thi)
	return lo, hi, lo <= hi
}

// history is the new timeline's ancestry when the restore stops at index.
func (l lineage) history(index uint64) []state.TimelineBranch {
	var out []state.TimelineBranch
	var prev uint64
	for _, b := range l {
		if index <= prev {
			break
		}
		out = append(out, state.TimelineBranch{ID: b.ID, Upto: min(b.Upto, index)})
		prev = b.Upto
	}
	return out
}

// chooseFull picks the newest usable full that lies before the target.
func chooseFull(cat backup.Catalog, l lineage, t Target, id string) (backup.Entry, error) {
	var fulls []backup.Entry
	for _, e := range cat.Entries {
		if l.usableFull(e) {
			fulls = append(fulls, e)
		}
	}
	if len(fulls) == 0 {
		return backup.Entry{}, fmt.Errorf("%w on timeline %d", ErrNoBackup, l[len(l)-1].ID)
	}
	slices.SortFunc(fulls, func(a, b backup.Entry) int {
		if a.LastIndex != b.LastIndex {
			return cmp.Compare(b.LastIndex, a.LastIndex)
		}
		return b.Created.Compare(a.Created)
	})
	if id != "" {
		for _, f := range fulls {
			if f.ID == id {
				if t.Index != 0 && f.LastIndex > t.Index {
					return backup.Entry{}, fmt.Errorf("%w: full backup %s ends at index %d, after the target index %d", ErrNoBackup, id, f.LastIndex, t.Index)
				}
				if !t.Time.IsZero() && lastTime(f).After(t.Time) {
					return backup.Entry{}, fmt.Errorf("%w: full backup %s was taken at %s, after the target time", ErrNoBackup, id, lastTime(f).Format(time.RFC3339))
				}
				return f, nil
			}
		}
		return backup.Entry{}, fmt.Errorf("%w: %s is not a full backup usable on timeline %d", ErrNoBackup, id, l[len(l)-1].ID)
	}
	for _, f := range fulls {
		switch {
		case t.Index != 0 && f.LastIndex > t.Index:
			continue
		case !t.Time.IsZero() && lastTime(f).After(t.Time):
			continue
		}
		return f, nil
	}
	oldest := fulls[len(fulls)-1]
	return backup.Entry{}, fmt.Errorf("%w before %s: the oldest full backup on this timeline (%s) ends at index %d, taken %s", ErrNoBackup, t, oldest.ID, oldest.LastIndex, lastTime(oldest).Format(time.RFC3339))
}

func lastTime(e backup.Entry) time.Time {
	if !e.LastTime.IsZero() {
		return e.LastTime
	}
	return e.Created
}
