package service

import (
	"path/filepath"
	"testing"
)

// A backup that retention removes while it is verified (a full finished
// meanwhile and keep-fulls is 1) is reported PRUNED, not FAILED.
func TestVerifyOfABackupPrunedMeanwhileIsPruned(t *testing.T) {
	s, _ := backupSvc(t)
	ctx := rootCtx()
	if _, err := s.Backups.AddDestination(ctx, DestinationConfig{Name: "keep1", Kind: "dir", Path: filepath.Join(t.TempDir(), "keep1"), KeepFulls: 1}); err != nil {
		t.Fatal(err)
	}
	full := func() BackupRecord {
		rec, err := s.Backups.RunBackup(ctx, BackupRequest{Destination: "keep1", Mode: "full", Wait: true})
		if err != nil || rec.Status != "DONE" {
			t.Fatalf("full backup: %+v %v", rec, err)
		}
		return rec
	}
	first := full()
	ran := false
	res, err := s.Backups.VerifyBackups(ctx, "keep1", VerifyRequest{ID: first.ID, Progress: func(p VerifyProgress) {
		if p.Result == "" && !ran {
			ran = true
			full()
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if !ran || len(res) != 1 || res[0].Result != "PRUNED" {
		t.Fatalf("verification of a backup pruned meanwhile: %+v", res)
	}
}
