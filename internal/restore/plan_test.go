package restore

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/backup"
)

// entry is a catalog entry of timeline tl (history "1:60" style) holding
// indexes lo-hi, written at minute min.
func entry(tl uint32, hist, kind string, lo, hi uint64, min int) backup.Entry {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	e := backup.Entry{Kind: kind, FirstIndex: lo, LastIndex: hi, History: hist, Created: t0.Add(time.Duration(min) * time.Minute)}
	if tl > 1 {
		e.Timeline = tl
	}
	return e
}

// TestChooseTimeline: without --timeline a restore follows the timeline
// written to most recently, and refuses when two timelines both hold
// records after the point where they forked.
func TestChooseTimeline(t *testing.T) {
	full, seg := backup.KindFull, backup.KindSegment
	cases := []struct {
		name    string
		entries []backup.Entry
		want    uint32
		refused []string // timelines the refusal names
	}{
		{"one timeline", []backup.Entry{entry(1, "", full, 1, 40, 0), entry(1, "", seg, 41, 60, 1)}, 1, nil},
		{"a restore to the latest point continues it",
			[]backup.Entry{entry(1, "", full, 1, 40, 0), entry(1, "", seg, 41, 60, 1), entry(3, "1:60", full, 1, 61, 5), entry(3, "1:60", seg, 62, 70, 6)}, 3, nil},
		{"the old timeline went on after a rehearsal wrote (the reported case)",
			[]backup.Entry{entry(1, "", full, 1, 40, 0), entry(1, "", seg, 41, 71, 9), entry(3, "1:60", full, 1, 62, 5)}, 0,
			[]string{"timeline 1 reaches index 71", "timeline 3 (from timeline 1 at index 60) reaches index 62"}},
		{"a copy that wrote nothing new after the fork, later than the original",
			[]backup.Entry{entry(1, "", full, 1, 40, 0), entry(1, "", seg, 41, 71, 4), entry(3, "1:60", full, 1, 60, 9)}, 1, nil},
		{"a restore to a past point next to the history it left",
			[]backup.Entry{entry(1, "", full, 1, 40, 0), entry(1, "", seg, 41, 60, 1), entry(2, "1:50", seg, 51, 55, 5)}, 0,
			[]string{"timeline 1 reaches index 60", "timeline 2 (from timeline 1 at index 50)"}},
		{"two restores of the same history to different points",
			[]backup.Entry{entry(1, "", full, 1, 50, 0), entry(2, "1:50", full, 1, 52, 5), entry(3, "1:45", full, 1, 47, 6)}, 0,
			[]string{"timeline 2", "timeline 3"}},
		{"same reach: the most recently written",
			[]backup.Entry{entry(1, "", full, 1, 60, 0), entry(2, "1:60", full, 1, 60, 3), entry(1, "", full, 1, 60, 2)}, 2, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := chooseTimeline(backup.Catalog{ClusterID: "cl-x", Entries: c.entries})
			if c.refused == nil {
				if err != nil || got != c.want {
					t.Fatalf("chose %d (%v), want %d", got, err, c.want)
				}
				return
			}
			if !errors.Is(err, ErrAmbiguousTimeline) {
				t.Fatalf("chose %d (%v), want a refusal", got, err)
			}
			for _, r := range c.refused {
				if !strings.Contains(err.Error(), r) {
					t.Fatalf("refusal %q does not name %q", err, r)
				}
			}
		})
	}
}

// TestTimelinesList: what restore --list shows per timeline.
func TestTimelinesList(t *testing.T) {
	cat := backup.Catalog{ClusterID: "cl-x", Writer: 3, Entries: []backup.Entry{
		entry(1, "", backup.KindFull, 1, 40, 0), entry(1, "", backup.KindSegment, 41, 71, 9), entry(3, "1:60", backup.KindFull, 1, 60, 5)}}
	tls := Timelines(cat)
	if len(tls) != 2 || tls[0].ID != 1 || tls[0].Reach != 71 || tls[0].Files != 2 || tls[0].Writer ||
		!tls[0].LastWrite.Equal(cat.Entries[1].Created) {
		t.Fatalf("timeline 1: %+v", tls)
	}
	if tls[1].ID != 3 || tls[1].Reach != 60 || !tls[1].Writer || len(tls[1].History) != 1 || tls[1].History[0].Upto != 60 {
		t.Fatalf("timeline 3: %+v", tls[1])
	}
}
