package backup

import (
	"math"
	"strings"
	"testing"

	"github.com/coffer-kms/coffer/internal/state"
)

func TestJournalFloor(t *testing.T) {
	full := func(dest string, last uint64, tl uint32, status string) state.BackupRecord {
		return state.BackupRecord{ID: dest + "-full", Destination: dest, Kind: KindFull, Status: status, LastIndex: last, Timeline: tl}
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
		{name: "records of removed destinations do not count", dests: []state.Destination{{Name: "a", Archiving: true, ArchivedTo: 70}},
			recs: []state.BackupRecord{full("gone", 5, 0, "DONE")}, want: 71},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := JournalFloor(tc.dests, tc.recs, tc.tl)
			if f.Index != tc.want || !strings.Contains(f.Holder, tc.holder) {
				t.Fatalf("floor %d held by %q; want %d held by %q", f.Index, f.Holder, tc.want, tc.holder)
			}
		})
	}
}
