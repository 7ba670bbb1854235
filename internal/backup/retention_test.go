package backup

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

func TestRetentionPlan(t *testing.T) {
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	full := func(id string, age time.Duration, idx uint64) Entry {
		return Entry{ID: id, Kind: KindFull, File: id, Created: now.Add(-age), FirstIndex: 1, LastIndex: idx}
	}
	inc := func(id, base string, age time.Duration, from, to uint64) Entry {
		return Entry{ID: id, Kind: KindIncremental, File: id, BaseFullID: base, Created: now.Add(-age), FirstIndex: from, LastIndex: to}
	}
	seg := func(id string, from, to uint64) Entry {
		return Entry{ID: id, Kind: KindSegment, File: id, FirstIndex: from, LastIndex: to}
	}
	entries := []Entry{
		full("f1", 30*day, 100), inc("i1", "f1", 29*day, 101, 150),
		full("f2", 20*day, 200), inc("i2", "f2", 19*day, 201, 250),
		full("f3", 10*day, 300), inc("i3", "f3", 9*day, 301, 350),
		full("f4", 1*day, 400),
		seg("s1", 1, 120), seg("s2", 121, 210), seg("s3", 211, 320), seg("s4", 321, 450),
	}
	ids := func(es []Entry) string {
		var out []string
		for _, e := range es {
			out = append(out, e.ID)
		}
		slices.Sort(out)
		return fmt.Sprint(out)
	}
	for _, c := range []struct {
		r    Retention
		want string
	}{
		{Retention{}, "[]"},
		{Retention{KeepFulls: 2}, "[f1 f2 i1 i2 s1 s2]"}, // s3 (211-320) still needed by f3 (300)
		{Retention{KeepFulls: 1}, "[f1 f2 f3 i1 i2 i3 s1 s2 s3]"},
		{Retention{KeepDays: 15}, "[f1 f2 i1 i2 s1 s2]"},
		{Retention{KeepFulls: 1, KeepDays: 25}, "[f1 i1 s1]"}, // either rule keeps a full
		{Retention{KeepFulls: 10}, "[]"},
		{Retention{KeepDays: 0, KeepFulls: 0}, "[]"},
	} {
		if got := ids(c.r.Plan(entries, now)); got != c.want {
			t.Errorf("%+v: drops %s, want %s", c.r, got, c.want)
		}
	}
	// The newest full is never dropped, even when every rule would.
	if got := ids((Retention{KeepDays: 1}).Plan([]Entry{full("old", 30*day, 10)}, now)); got != "[]" {
		t.Errorf("the only full was dropped: %s", got)
	}
}

// TestRetentionKeepsOtherTimelines: retention on timeline 2 never removes
// timeline 1's backups.
func TestRetentionKeepsOtherTimelines(t *testing.T) {
	now := time.Now()
	e := func(id, kind string, tl uint32, first, last uint64, age time.Duration) Entry {
		return Entry{ID: id, Kind: kind, File: id, Timeline: tl, FirstIndex: first, LastIndex: last, Created: now.Add(-age)}
	}
	entries := []Entry{
		e("f1", KindFull, 0, 1, 10, 48*time.Hour), e("s1", KindSegment, 0, 11, 20, 40*time.Hour),
		e("f2", KindFull, 2, 1, 15, 2*time.Hour), e("f3", KindFull, 2, 1, 30, time.Hour), e("s2", KindSegment, 2, 16, 25, time.Hour),
	}
	drop := Retention{KeepFulls: 1, Timeline: 2}.Plan(entries, now)
	var ids []string
	for _, d := range drop {
		ids = append(ids, d.ID)
	}
	slices.Sort(ids)
	if !slices.Equal(ids, []string{"f2", "s2"}) {
		t.Fatalf("dropped %v, want [f2 s2]", ids)
	}
}
