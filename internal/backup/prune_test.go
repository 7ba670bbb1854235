package backup

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/state"
)

func TestJournalFloor(t *testing.T) {
	t0 := time.Date(2026, 11, 21, 0, 0, 0, 0, time.UTC)
	full := func(dest string, last uint64, tl uint32, status string) state.BackupRecord {
		// Started follows the index unless a test says otherwise.
		return state.BackupRecord{ID: dest + "-full", Destination: dest, Kind: KindFull, Status: status, LastIndex: last, Timeline: tl,
			Node: "n1", Started: t0.Add(time.Duration(last) * time.Minute)}
	}
	at := func(r state.BackupRecord, started time.Time, node string) state.BackupRecord {
		r.Started, r.Node = started, node
		return r
	}
	for _, tc := range []struct {
		name   string
		dests  []state.Destination
		recs   []state.BackupRecord
		tl     uint32
		want   uint64
		holder string
	}{
		{name: "nothing configured", want: math.MaxUint64},
		{name: "destination without backups", dests: []state.Destination{{Name: "nas"}}, want: math.MaxUint64},
		{name: "archiving from the start", dests: []state.Destination{{Name: "nas", Archiving: true}}, want: 1, holder: "archiving to nas (archived to index 0)"},
		{name: "archive mark", dests: []state.Destination{{Name: "nas", Archiving: true, ArchivedTo: 40}}, want: 41, holder: "archiving to nas"},
		{name: "paused archive", dests: []state.Destination{{Name: "nas", Archiving: true, ArchivePaused: true, ArchivedTo: 40}}, want: 41, holder: "paused"},
		{name: "newest full of a destination", dests: []state.Destination{{Name: "nas"}},
			recs: []state.BackupRecord{full("nas", 10, 0, "DONE"), full("nas", 30, 1, "DONE"), {Destination: "nas", Kind: KindIncremental, Status: "DONE", LastIndex: 50}},
			want: 31, holder: "after full nas-full (index 30)"},
		{name: "failed, deleted and running fulls do not count", dests: []state.Destination{{Name: "nas"}},
			recs: []state.BackupRecord{full("nas", 10, 0, "DONE"), full("nas", 30, 0, "FAILED"), full("nas", 35, 0, "DELETED"), full("nas", 36, 0, "RUNNING")},
			want: 11},
		{name: "another timeline's full does not count", dests: []state.Destination{{Name: "nas"}},
			recs: []state.BackupRecord{full("nas", 10, 2, "DONE"), full("nas", 90, 1, "DONE")}, tl: 2, want: 11},
		{name: "lowest of all destinations", dests: []state.Destination{{Name: "a", Archiving: true, ArchivedTo: 70}, {Name: "b"}, {Name: "c"}},
			recs: []state.BackupRecord{full("b", 60, 0, "DONE"), full("c", 20, 0, "DONE")}, want: 21, holder: "incremental backups to c"},
		{name: "newest by time has the lower index (the catalog's base)", dests: []state.Destination{{Name: "nas"}},
			recs: []state.BackupRecord{at(full("nas", 50, 0, "DONE"), t0, "n1"), at(full("nas", 40, 0, "DONE"), t0.Add(time.Hour), "n1")}, want: 41},
		{name: "LOCAL counts this node's fulls only", dests: []state.Destination{{Name: "LOCAL", Kind: "local"}, {Name: "nas"}},
			recs: []state.BackupRecord{at(full("LOCAL", 80, 0, "DONE"), t0.Add(2*time.Hour), "n2"), at(full("LOCAL", 30, 0, "DONE"), t0, "n1"), full("nas", 90, 0, "DONE")},
			want: 31, holder: "LOCAL"},
		{name: "LOCAL without a full of this node", dests: []state.Destination{{Name: "LOCAL", Kind: "local"}},
			recs: []state.BackupRecord{at(full("LOCAL", 80, 0, "DONE"), t0, "n2")}, want: math.MaxUint64},
		{name: "records of removed destinations do not count", dests: []state.Destination{{Name: "a", Archiving: true, ArchivedTo: 70}},
			recs: []state.BackupRecord{full("gone", 5, 0, "DONE")}, want: 71},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := JournalFloor(tc.dests, tc.recs, tc.tl, "n1")
			if f.Index != tc.want || !strings.Contains(f.Holder, tc.holder) {
				t.Fatalf("floor %d held by %q; want %d held by %q", f.Index, f.Holder, tc.want, tc.holder)
			}
		})
	}
}
