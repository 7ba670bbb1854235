package service

import (
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/backup"
	"github.com/coffer-kms/coffer/internal/datadir"
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

// An incremental whose full was already missing from the catalog when the
// verification began (deleted by hand, the catalog rebuilt) is a broken
// chain: FAILED, not PRUNED, although its full is not in the catalog read
// after the verification either.
func TestVerifyOfAnIncrementalWithoutItsFullIsFailed(t *testing.T) {
	s, _ := backupSvc(t)
	ctx := rootCtx()
	if _, err := s.Backups.AddDestination(ctx, DestinationConfig{Name: "d", Kind: "dir", Path: filepath.Join(t.TempDir(), "d")}); err != nil {
		t.Fatal(err)
	}
	run := func(mode string) BackupRecord {
		rec, err := s.Backups.RunBackup(ctx, BackupRequest{Destination: "d", Mode: mode, Wait: true})
		if err != nil || rec.Status != "DONE" {
			t.Fatalf("%s backup: %+v %v", mode, rec, err)
		}
		return rec
	}
	full := run("full")
	if _, err := s.Objects.PutSecret(ctx, DefaultWallet, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	inc := run("incremental")
	tg, err := backupHost{s.Backups}.OpenTarget(ctx, "d")
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Dest.Close()
	cat, err := tg.LoadCatalog(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := len(cat.Entries)
	cat.Entries = slices.DeleteFunc(cat.Entries, func(e backup.Entry) bool { return e.ID == full.ID })
	if len(cat.Entries) != n-1 {
		t.Fatalf("full %s not in the catalog", full.ID)
	}
	if err := backup.SaveCatalog(ctx, tg.Dest, cat); err != nil {
		t.Fatal(err)
	}
	res, err := s.Backups.VerifyBackups(ctx, "d", VerifyRequest{ID: inc.ID})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 || res[0].Result != "FAILED" {
		t.Fatalf("verification of an incremental without its full: %+v", res)
	}
}

// A backup that verifies OK but that retention removes from the catalog
// before the result is recorded (the record waits for the backup that
// prunes it) is PRUNED too, with no error: a verification of all goes on.
func TestVerifyOfABackupPrunedBeforeItsRecordIsPruned(t *testing.T) {
	s, dir := backupSvc(t)
	ctx := rootCtx()
	if _, err := s.Backups.AddDestination(ctx, DestinationConfig{Name: "d", Kind: "dir", Path: filepath.Join(t.TempDir(), "d")}); err != nil {
		t.Fatal(err)
	}
	rec, err := s.Backups.RunBackup(ctx, BackupRequest{Destination: "d", Mode: "full", Wait: true})
	if err != nil || rec.Status != "DONE" {
		t.Fatalf("full backup: %+v %v", rec, err)
	}
	tg, err := backupHost{s.Backups}.OpenTarget(ctx, "d")
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Dest.Close()
	// verifying reports whether a verification's scratch dir is there.
	verifying := func() bool {
		m, _ := filepath.Glob(filepath.Join(datadir.RestoreTmpDir(dir), "verify-*"))
		return len(m) > 0
	}
	held, pruned := make(chan struct{}), make(chan error, 1)
	res, err := s.Backups.VerifyBackups(ctx, "d", VerifyRequest{ID: rec.ID, Progress: func(p VerifyProgress) {
		if p.Result != "" {
			return
		}
		// A backup runs while the backup is verified, and prunes it after
		// its verification ended, before its result is recorded.
		go s.Backups.backups.TestHold(func() {
			close(held)
			for !verifying() {
				time.Sleep(time.Millisecond)
			}
			for verifying() {
				time.Sleep(time.Millisecond)
			}
			cat, err := tg.LoadCatalog(ctx)
			if err == nil {
				cat.Entries = slices.DeleteFunc(cat.Entries, func(e backup.Entry) bool { return e.ID == rec.ID })
				err = backup.SaveCatalog(ctx, tg.Dest, cat)
			}
			pruned <- err
		})
		<-held
	}})
	if perr := <-pruned; perr != nil {
		t.Fatal(perr)
	}
	if err != nil || len(res) != 1 || res[0].Result != "PRUNED" {
		t.Fatalf("verification of a backup pruned before its result was recorded: %+v %v", res, err)
	}
}
