package rest

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/journal"
	"github.com/coffer-kms/coffer/internal/service"
	"github.com/coffer-kms/coffer/internal/state"
)

// jsonNames lists the JSON names of t's fields in order, with ",omitempty"
// where set.
func jsonNames(t reflect.Type) []string {
	var out []string
	for i := range t.NumField() {
		tag := t.Field(i).Tag.Get("json")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "" || name == "-" {
			out = append(out, "untagged:"+t.Field(i).Name)
			continue
		}
		if opts != "" {
			name += "," + opts
		}
		out = append(out, name)
	}
	return out
}

// flatFields counts t's fields, those of embedded structs included.
func flatFields(t reflect.Type) int {
	n := 0
	for i := range t.NumField() {
		if f := t.Field(i); f.Anonymous && f.Type.Kind() == reflect.Struct {
			n += flatFields(f.Type)
		} else {
			n++
		}
	}
	return n
}

// TestStoredTypesJSON pins the wire names of the API's own forms of stored
// types (the public client and the CLI decode them), and checks that each
// converter carries every field: a stored value with every field set
// encodes to the same bytes as its API form.
func TestStoredTypesJSON(t *testing.T) {
	pinned := map[reflect.Type][]string{
		reflect.TypeFor[BackupRecord](): {"id", "destination", "kind", "status", "node", "file,omitempty", "base_full_id,omitempty",
			"first_index,omitempty", "last_index,omitempty", "size,omitempty", "sha256,omitempty", "recipients,omitempty",
			"timeline,omitempty", "reason,omitempty", "started", "finished,omitempty", "verified,omitempty", "estimated_restore_seconds,omitempty"},
		reflect.TypeFor[BackupVerification](): {"time", "result", "reason,omitempty"},
		reflect.TypeFor[BackupProgress]():     {"untagged:BackupRecord", "bytes_written"},
		reflect.TypeFor[BackupList]():         {"backups"},
		reflect.TypeFor[RestorePoint]():       {"name", "index", "time", "created_by,omitempty"},
		reflect.TypeFor[RestorePointList]():   {"restore_points"},
		reflect.TypeFor[Segment]():            {"name", "first_index", "last_index", "records", "size", "created", "closed"},
		reflect.TypeFor[JournalList]():        {"segments"},
		reflect.TypeFor[JournalRotated]():     {"closed"},
	}
	for ty, want := range pinned {
		if got := jsonNames(ty); !slices.Equal(got, want) {
			t.Errorf("%s: JSON fields %q, want %q (the API's field names must not change)", ty.Name(), got, want)
		}
	}

	now := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	later := now.Add(time.Minute)
	rec := state.BackupRecord{ID: "b1", Destination: "d", Kind: "full", Status: "DONE", Node: "n1", File: "f.cbk", BaseFullID: "b0",
		FirstIndex: 1, LastIndex: 9, Size: 42, SHA256: "ab", Recipients: []string{"age1x"}, Timeline: 2, Reason: "why",
		Started: now, Finished: &later}
	rp := state.RestorePoint{Name: "before", Index: 7, Time: now, CreatedBy: "root"}
	sv := service.ScheduleView{Schedule: state.Schedule{Name: "nightly", Destination: "d", Kind: "verify", Type: "once", At: &now, Every: "1h", Cron: "0 1 * * *",
		Mode: "auto", Verify: true, State: "ACTIVE", LastRun: &now, LastResult: "ok", Created: now, Updated: later}, Next: &later}
	seg := journal.SegmentInfo{Name: "n1-1", Path: "/not/on/the/wire", FirstIndex: 1, LastIndex: 3, Prev: 0, Records: 3, Size: 99,
		Created: now, Closed: true, ClosedAt: later}
	for _, tc := range []struct {
		name      string
		stored    any
		api       any
		storedLen int
	}{
		{"BackupRecord", rec, backupRecordOf(rec), 16},
		{"RestorePoint", rp, restorePointOf(rp), 4},
		{"ScheduleView", sv, scheduleViewOf(sv), 15},
	} {
		if n := flatFields(reflect.TypeOf(tc.stored)); n != tc.storedLen {
			t.Errorf("%s: the stored type has %d fields, the API form was written for %d: convert the new field (or leave it out on purpose here)", tc.name, n, tc.storedLen)
		}
		s, _ := json.Marshal(tc.stored)
		a, _ := json.Marshal(tc.api)
		if string(s) != string(a) {
			t.Errorf("%s: API form\n%s\ndiffers from the stored form\n%s", tc.name, a, s)
		}
	}
	got, _ := json.Marshal(segmentOf(seg))
	if want := `{"name":"n1-1","first_index":1,"last_index":3,"records":3,"size":99,"created":"2026-01-02T03:04:05.000000006Z","closed":true}`; string(got) != want {
		t.Errorf("Segment: %s, want %s", got, want)
	}
}

// TestNoStoredTypesOnTheWire walks every route's request and response
// types: none may be a type of internal/state or internal/journal.
func TestNoStoredTypesOnTheWire(t *testing.T) {
	var walk func(path string, ty reflect.Type, seen map[reflect.Type]bool)
	walk = func(path string, ty reflect.Type, seen map[reflect.Type]bool) {
		for ty.Kind() == reflect.Pointer || ty.Kind() == reflect.Slice || ty.Kind() == reflect.Map || ty.Kind() == reflect.Array {
			ty = ty.Elem()
		}
		if p := ty.PkgPath(); strings.HasSuffix(p, "/internal/state") || strings.HasSuffix(p, "/internal/journal") {
			t.Errorf("%s is %s, a stored type: give the API its own type and convert at the edge", path, ty)
			return
		}
		if seen[ty] || ty.Kind() != reflect.Struct {
			return
		}
		seen[ty] = true
		for i := range ty.NumField() {
			walk(path+"."+ty.Field(i).Name, ty.Field(i).Type, seen)
		}
	}
	for _, r := range Routes() {
		for _, v := range []any{r.Request, r.Response} {
			if v != nil {
				walk(r.OperationID, reflect.TypeOf(v), map[reflect.Type]bool{})
			}
		}
	}
}
