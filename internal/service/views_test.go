package service

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/state"
)

// TestViewsMatchStoredJSON: the service's timeline and mirror answers encode
// exactly as the stored records they are converted from, every field set,
// and a field added to a stored record fails here until the view has it.
func TestViewsMatchStoredJSON(t *testing.T) {
	at := time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)
	rel := at.Add(time.Hour)
	tl := state.Timeline{ID: 3, History: []state.TimelineBranch{{ID: 1, Upto: 10}, {ID: 2, Upto: 20}},
		Restored: &state.RestoreInfo{From: "dir:/b", Target: "index 20", Index: 20, Time: at, At: at.Add(time.Minute),
			Held: true, Released: &rel, TakeOver: true}}
	ms := state.MirrorState{Attached: true, InSync: true, LastIndex: 7, Behind: 2}
	for _, c := range []struct {
		name         string
		stored, view any
	}{
		{"Timeline", tl, timelineView(tl)},
		{"RestoreInfo", *tl.Restored, *timelineView(tl).Restored},
		{"TimelineBranch", tl.History[0], timelineView(tl).History[0]},
		{"MirrorState", ms, *mirrorView(ms)},
	} {
		a, _ := json.Marshal(c.stored)
		b, _ := json.Marshal(c.view)
		if string(a) != string(b) {
			t.Errorf("%s: stored %s, answered %s", c.name, a, b)
		}
		if n, m := reflect.TypeOf(c.stored).NumField(), reflect.TypeOf(c.view).NumField(); n != m {
			t.Errorf("%s: the stored record has %d fields, the view %d: convert the new one", c.name, n, m)
		}
	}
	if v := timelineView(state.Timeline{ID: 1}); v.History != nil || v.Restored != nil {
		t.Errorf("an empty timeline answers %+v", v)
	}
}
