package service

import (
	"testing"

	"github.com/coffer-kms/coffer/internal/state"
)

// TestRestoreBytes: a full restores from itself, an incremental with its
// full; a backup not DONE, or whose full is unknown, has no size.
func TestRestoreBytes(t *testing.T) {
	full := state.BackupRecord{ID: "f", Destination: "nas", Kind: "full", Status: "DONE", Size: 100}
	inc := state.BackupRecord{ID: "i", Destination: "nas", Kind: "incremental", Status: "DONE", Size: 10, BaseFullID: "f"}
	done := map[string]state.BackupRecord{"nas/f": full, "nas/i": inc}
	for _, tc := range []struct {
		name string
		r    state.BackupRecord
		want int64
	}{
		{"full", full, 100},
		{"incremental", inc, 110},
		{"running", state.BackupRecord{ID: "r", Destination: "nas", Kind: "full", Status: "RUNNING", Size: 5}, 0},
		{"unknown full", state.BackupRecord{ID: "j", Destination: "nas", Kind: "incremental", Status: "DONE", Size: 10, BaseFullID: "gone"}, 0},
		{"full of another destination", state.BackupRecord{ID: "k", Destination: "other", Kind: "incremental", Status: "DONE", Size: 10, BaseFullID: "f"}, 0},
	} {
		if got := restoreBytes(done, tc.r); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
}
