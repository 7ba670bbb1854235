package backup

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/coffer-kms/coffer/internal/backup/dest"
)

// Retention says what to keep on a destination. Zero values keep everything.
type Retention struct {
	KeepFulls int // the newest N fulls
	KeepDays  int // fulls taken in the last D days
	// Timeline limits retention to the backups of this timeline (0: all).
	// Backups of other timelines are never removed by retention: they are
	// another history (a restore may need to go back to it, and a restore
	// drill sharing the destination must not delete production's backups).
	Timeline uint32
}

// Plan returns the catalog entries retention removes. A full is kept when
// either rule keeps it (or when it is the newest); an incremental goes with
// its full; an archived segment goes only when it ends before the oldest
// kept full starts (point-in-time recovery from that full needs nothing
// older). Nothing a kept backup needs is ever in the plan.
func (r Retention) Plan(entries []Entry, now time.Time) []Entry {
	if r.KeepFulls <= 0 && r.KeepDays <= 0 {
		return nil
	}
	if r.Timeline > 0 {
		entries = slices.DeleteFunc(slices.Clone(entries), func(e Entry) bool { return e.TimelineID() != r.Timeline })
	}
	var fulls []Entry
	isFull := func(e Entry) bool { return e.Kind == KindFull || e.Kind == KindDump }
	for _, e := range entries {
		if isFull(e) {
			fulls = append(fulls, e)
		}
	}
	if len(fulls) == 0 {
		return nil
	}
	slices.SortFunc(fulls, func(a, b Entry) int { return b.Created.Compare(a.Created) }) // newest first
	keep := map[string]bool{fulls[0].ID: true}
	for i, f := range fulls {
		if (r.KeepFulls > 0 && i < r.KeepFulls) || (r.KeepDays > 0 && now.Sub(f.Created) < time.Duration(r.KeepDays)*24*time.Hour) {
			keep[f.ID] = true
		}
	}
	oldestKept := fulls[0]
	for _, f := range fulls {
		if keep[f.ID] && f.LastIndex < oldestKept.LastIndex {
			oldestKept = f
		}
	}
	var drop []Entry
	for _, e := range entries {
		switch e.Kind {
		case KindFull, KindDump:
			if !keep[e.ID] {
				drop = append(drop, e)
			}
		case KindIncremental:
			if !keep[e.BaseFullID] {
				drop = append(drop, e)
			}
		case KindSegment:
			if e.LastIndex < oldestKept.LastIndex {
				drop = append(drop, e)
			}
		}
	}
	return drop
}

// Apply deletes what Plan returns: the catalog first (so a crash in between
// leaves files a rebuild can find, never entries without files), then the files.
func (r Retention) Apply(ctx context.Context, d dest.Destination, now time.Time) ([]Entry, error) {
	cat, err := LoadCatalog(ctx, d)
	if err != nil {
		return nil, err
	}
	drop := r.Plan(cat.Entries, now)
	if len(drop) == 0 {
		return nil, nil
	}
	gone := map[string]bool{}
	for _, e := range drop {
		gone[e.File] = true
	}
	cat.Entries = slices.DeleteFunc(cat.Entries, func(e Entry) bool { return gone[e.File] })
	if err := SaveCatalog(ctx, d, cat); err != nil {
		return nil, err
	}
	var failed []string
	for _, e := range drop {
		if err := d.Remove(ctx, e.File); err != nil && !errIsNotFound(err) {
			failed = append(failed, fmt.Sprintf("%s: %v", e.File, err))
		}
	}
	if len(failed) > 0 {
		return drop, fmt.Errorf("retention on %s: could not delete %s", d.Location(), strings.Join(failed, "; "))
	}
	return drop, nil
}
