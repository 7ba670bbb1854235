package service

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/backup"
	"github.com/coffer-kms/coffer/internal/backup/bundle"
	"github.com/coffer-kms/coffer/internal/datadir"
	"github.com/coffer-kms/coffer/internal/journal"
	"github.com/coffer-kms/coffer/internal/keystore"
	"github.com/coffer-kms/coffer/internal/state"
	"github.com/coffer-kms/coffer/internal/testutil"
)

// backupSvc is an open service with a recovery passphrase and fast backups.
func backupSvc(t *testing.T) (*Service, string) {
	t.Helper()
	dir := t.TempDir()
	s, err := New(testConfig(Config{DataDir: dir, BackupScryptWorkFactor: 10, BackupTick: time.Hour,
		WriteRetryDelay: 100 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if _, err := s.Init(rootCtx(), local, []byte(pass)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetRecoveryPassphrase(rootCtx(), nil, []byte("recovery-passphrase")); err != nil {
		t.Fatal(err)
	}
	return s, dir
}

// openBackup decrypts a backup file and returns its tar entries.
func openBackup(t *testing.T, path, passphrase string) (bundle.Manifest, map[string][]byte) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	rc, m, err := bundle.Open(f, st.Size(), bundle.Decryption{Passphrase: []byte(passphrase)})
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer rc.Close()
	out := map[string][]byte{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		out[h.Name] = b
	}
	if _, err := io.Copy(io.Discard, rc); err != nil {
		t.Fatalf("payload check: %v", err)
	}
	return m, out
}

func TestFullIncrementalAndCatalog(t *testing.T) {
	s, _ := backupSvc(t)
	ctx := rootCtx()
	target := filepath.Join(t.TempDir(), "nas")
	if _, err := s.Backups.AddDestination(ctx, DestinationConfig{Name: "nas", Kind: "dir", Path: target, KeepFulls: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Backups.RunBackup(ctx, BackupRequest{Destination: "nas", Mode: "incremental", Wait: true}); !errors.Is(err, ErrConflict) {
		t.Fatalf("incremental before any full: %v", err)
	}
	s.Objects.PutSecret(ctx, DefaultWallet, "before-full", []byte("value-in-full-0123"))
	full, err := s.Backups.RunBackup(ctx, BackupRequest{Destination: "nas", Wait: true})
	if err != nil || full.Status != "DONE" || full.Kind != "full" {
		t.Fatalf("full: %+v %v", full, err)
	}
	s.Objects.PutSecret(ctx, DefaultWallet, "after-full", []byte("value-in-incremental"))
	s.RotateMasterKey(ctx)
	inc, err := s.Backups.RunBackup(ctx, BackupRequest{Destination: "nas", Wait: true})
	if err != nil || inc.Kind != "incremental" || inc.BaseFullID != full.ID || inc.FirstIndex != full.LastIndex+1 || inc.LastIndex <= inc.FirstIndex {
		t.Fatalf("auto mode after a fresh full should give an incremental: %+v (full %+v) %v", inc, full, err)
	}

	m, entries := openBackup(t, filepath.Join(target, full.File), "recovery-passphrase")
	if m.ClusterID != s.st.ClusterID() || m.LastIndex != full.LastIndex || m.Recipients[0] != "passphrase:recovery-1" {
		t.Fatalf("full manifest %+v", m)
	}
	for _, name := range []string{backup.EntryCluster, backup.EntryKeys, backup.EntryState} {
		if len(entries[name]) == 0 {
			t.Fatalf("full lacks %s", name)
		}
	}
	ring, err := keystore.ImportMEKs(entries[backup.EntryKeys])
	if err != nil || ring.Current() != 1 {
		t.Fatalf("keys in the full: %v", err)
	}
	// The state copy opens and holds the object written before the full.
	db := filepath.Join(t.TempDir(), "state.db")
	os.WriteFile(db, entries[backup.EntryState], 0o600)
	st, err := state.Open(db, state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.ObjectByName(DefaultWallet, "before-full"); err != nil {
		t.Fatalf("object missing from the full: %v", err)
	}
	if _, err := st.ObjectByName(DefaultWallet, "after-full"); err == nil {
		t.Fatal("the full holds a later write")
	}
	st.Close()
	_, ientries := openBackup(t, filepath.Join(target, inc.File), "recovery-passphrase")
	journals := 0
	for name := range ientries {
		if strings.HasPrefix(name, backup.JournalDir) {
			journals++
		}
	}
	ring2, _ := keystore.ImportMEKs(ientries[backup.EntryKeys])
	if journals == 0 || ring2.Current() != 2 {
		t.Fatalf("incremental: %d segments, key generation %d (the rotation since the full must be carried)", journals, ring2.Current())
	}
	// No plaintext in the files.
	for _, f := range []string{full.File, inc.File} {
		b, _ := os.ReadFile(filepath.Join(target, f))
		if bytes.Contains(b, []byte("value-in")) || bytes.Contains(b, []byte("recovery-passphrase")) {
			t.Fatalf("%s holds plaintext", f)
		}
	}
	// A wrong passphrase does not open it.
	f, _ := os.Open(filepath.Join(target, full.File))
	fi, _ := f.Stat()
	if _, _, err := bundle.Open(f, fi.Size(), bundle.Decryption{Passphrase: []byte("wrong-passphrase")}); !errors.Is(err, bundle.ErrWrongKey) {
		t.Fatalf("wrong passphrase: %v", err)
	}
	f.Close()

	// The catalog lists both; a rebuild from the manifests gives the same.
	dd, _ := s.Backups.openDest(ctx, state.Destination{Name: "nas", Kind: "dir", Path: target}, nil)
	cat, err := backup.LoadCatalog(ctx, dd)
	if err != nil || len(cat.Entries) != 2 || cat.ClusterID != s.st.ClusterID() {
		t.Fatalf("catalog %+v %v", cat, err)
	}
	os.WriteFile(filepath.Join(target, backup.CatalogFile), []byte("{garbage"), 0o600)
	if _, err := s.Backups.RunBackup(ctx, BackupRequest{Destination: "nas", Wait: true}); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "rebuild") {
		t.Fatalf("backup onto a corrupt catalog: %v", err)
	}
	n, skipped, err := s.Backups.RebuildCatalog(ctx, "nas")
	if err != nil || n != 2 || len(skipped) != 0 {
		t.Fatalf("rebuild: %d %v %v", n, skipped, err)
	}
	// Retention keeps 2 fulls: after three more fulls, the first full and its incremental are gone.
	for i := 0; i < 3; i++ {
		if _, err := s.Backups.RunBackup(ctx, BackupRequest{Destination: "nas", Mode: "full", Wait: true}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(filepath.Join(target, full.File)); !os.IsNotExist(err) {
		t.Fatal("retention kept the oldest full")
	}
	if _, err := os.Stat(filepath.Join(target, inc.File)); !os.IsNotExist(err) {
		t.Fatal("retention kept an incremental of a removed full")
	}
	if r, _ := s.st.Backup(full.ID); r.Status != "DELETED" || !strings.Contains(r.Reason, "retention") {
		t.Fatalf("record of the removed full: %+v", r)
	}
	if h, _ := s.Backups.backupHealth(); len(h) == 0 {
		t.Fatal("no destination health")
	}
	for _, h := range s.Status().Backup.Destinations {
		if h.Name == "nas" && (h.LastSuccess == nil || h.LastFailure == nil) {
			t.Fatalf("last success/failure of nas: %+v", h)
		}
	}
	list, _ := s.Backups.ListBackups(ctx, "nas")
	if len(list) != 6 || list[0].Kind != "full" { // full, incremental, the FAILED one on the corrupt catalog, three fulls
		t.Fatalf("records %d", len(list))
	}
}

func TestDestinationOfAnotherClusterRefused(t *testing.T) {
	a, _ := backupSvc(t)
	b, _ := backupSvc(t)
	target := filepath.Join(t.TempDir(), "shared")
	if _, err := a.Backups.AddDestination(rootCtx(), DestinationConfig{Name: "shared", Kind: "dir", Path: target}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Backups.RunBackup(rootCtx(), BackupRequest{Destination: "shared", Wait: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Backups.AddDestination(rootCtx(), DestinationConfig{Name: "bad-age", Kind: "dir", Path: t.TempDir(), Recipients: []string{"age1notakey"}}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("malformed age recipient: %v", err)
	}
	_, err := b.Backups.AddDestination(rootCtx(), DestinationConfig{Name: "shared", Kind: "dir", Path: target})
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "another cluster") {
		t.Fatalf("second cluster on the same destination: %v", err)
	}
}

func TestOneBackupAtATimeAndInterrupted(t *testing.T) {
	s, _ := backupSvc(t)
	ctx := rootCtx()
	// Hold the manager's run lock as a task other than a backup does (a
	// journal prune, archiving): a backup waits up to BusyWait for it.
	defer func(d time.Duration) { backup.BusyWait = d }(backup.BusyWait)
	backup.BusyWait = 300 * time.Millisecond
	s.Backups.backups.TestHold(func() {
		if _, err := s.Backups.RunBackup(ctx, BackupRequest{Destination: LocalDestination, Wait: true}); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "another backup task") {
			t.Fatalf("backup behind a long task: %v", err)
		}
	})
	backup.BusyWait = 2 * time.Minute
	// Behind a running backup: refused at once, naming it.
	t.Setenv("COFFER_TEST_BACKUP_PAUSE", "2s")
	first, err := s.Backups.RunBackup(ctx, BackupRequest{Destination: LocalDestination})
	if err != nil || first.Status != "RUNNING" {
		t.Fatalf("first backup: %+v %v", first, err)
	}
	start := time.Now()
	if _, err := s.Backups.RunBackup(ctx, BackupRequest{Destination: LocalDestination, Wait: true}); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "in progress") || !strings.Contains(err.Error(), first.ID) {
		t.Fatalf("second backup: %v", err)
	}
	if d := time.Since(start); d > time.Minute { // BusyWait is 2 minutes: it did not wait for the backup
		t.Fatalf("a backup behind a running backup waited %s", d)
	}
	t.Setenv("COFFER_TEST_BACKUP_PAUSE", "")
	s.Backups.backups.Exclusive(func() error { return nil }) // the first one is done
	held := make(chan struct{})
	// The slow task is what is tested: a backup waits behind it.
	go s.Backups.backups.TestHold(func() { close(held); time.Sleep(300 * time.Millisecond) })
	<-held
	if rec, err := s.Backups.RunBackup(ctx, BackupRequest{Destination: LocalDestination, Wait: true}); err != nil || rec.Status != "DONE" {
		t.Fatalf("a backup behind a short task: %+v %v", rec, err)
	}
	// A RUNNING record left by a crash is marked FAILED at the next open.
	rec := state.BackupRecord{ID: "20260101T000000Z-dead", Destination: LocalDestination, Kind: "full", Status: "RUNNING", Node: s.nodeID, Started: time.Now()}
	if _, err := s.applyOpen(ctx, state.TypeBackupRecord, rec); err != nil {
		t.Fatal(err)
	}
	if _, err := s.applyOpen(ctx, state.TypeSchedulePut, state.Schedule{Name: "stuck", Destination: LocalDestination, Type: "periodic", Every: "24h", Mode: "auto", State: "ONGOING"}); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(datadir.StagingDir(s.cfg.DataDir), 0o700)
	leftover := filepath.Join(datadir.StagingDir(s.cfg.DataDir), "staging-123"+backup.FileSuffix)
	os.WriteFile(leftover, []byte("partial"), 0o600)
	if err := s.Seal(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Open(ctx, []byte(pass)); err != nil {
		t.Fatal(err)
	}
	// The reset runs in the background after the open: wait for all of it.
	testutil.WaitFor(t, time.Minute, "the reset of the interrupted backup", func() error {
		got, _ := s.st.Backup(rec.ID)
		sc, _ := s.st.Schedule("stuck")
		_, statErr := os.Stat(leftover)
		if got.Status == "FAILED" && strings.Contains(got.Reason, "interrupted") &&
			sc.State == "ACTIVE" && strings.Contains(sc.LastResult, "interrupted") && os.IsNotExist(statErr) {
			return nil
		}
		return fmt.Errorf("interrupted backup %s (%s), schedule %+v, staging leftover: %v", got.Status, got.Reason, sc, statErr)
	})
}

func TestFreezeRefusesWritesAndDumps(t *testing.T) {
	s, dir := backupSvc(t)
	ctx := rootCtx()
	s.Objects.PutSecret(ctx, DefaultWallet, "k", []byte("v"))
	st, err := s.Backups.Freeze(ctx, time.Hour)
	if err != nil || !st.Frozen || st.Dump == "" {
		t.Fatalf("freeze: %+v %v", st, err)
	}
	if _, err := os.Stat(st.Dump); err != nil || !strings.HasPrefix(st.Dump, datadir.DumpDir(dir)) {
		t.Fatalf("dump %s: %v", st.Dump, err)
	}
	before := s.st.AppliedIndex()
	if st := s.Status(); st.Writable || !st.Backup.Frozen {
		t.Fatalf("status while frozen: writable %v frozen %v", st.Writable, st.Backup.Frozen)
	}
	if _, err := s.Backups.RunBackup(ctx, BackupRequest{Destination: LocalDestination, Wait: true}); !errors.Is(err, ErrWriteUnavailable) || !strings.Contains(err.Error(), "frozen") {
		t.Fatalf("backup while frozen: %v", err)
	}
	if _, err := s.Objects.PutSecret(ctx, DefaultWallet, "k", []byte("v2")); !errors.Is(err, ErrWriteUnavailable) || !strings.Contains(err.Error(), "frozen") {
		t.Fatalf("write while frozen: %v", err)
	}
	if _, _, err := s.Objects.GetObject(ctx, Ref{Wallet: DefaultWallet, Name: "k"}, 0); err != nil {
		t.Fatalf("read while frozen: %v", err)
	}
	if s.st.AppliedIndex() != before {
		t.Fatal("state changed while frozen")
	}
	if _, err := s.Backups.Thaw(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Objects.PutSecret(ctx, DefaultWallet, "k", []byte("v2")); err != nil {
		t.Fatalf("write after thaw: %v", err)
	}
	// The timeout thaws by itself.
	s.Backups.Freeze(ctx, 50*time.Millisecond)
	testutil.WaitFor(t, 30*time.Second, "the freeze to time out", s.Backups.frozenErr)
}

func TestScheduleRunsAndAutoBackupAfterRotation(t *testing.T) {
	s, _ := backupSvc(t)
	ctx := rootCtx()
	target := filepath.Join(t.TempDir(), "nas")
	s.Backups.AddDestination(ctx, DestinationConfig{Name: "nas", Kind: "dir", Path: target})
	if _, err := s.Backups.PutSchedule(ctx, ScheduleConfig{Name: "bad", Destination: "nas", Type: "cron", Cron: "not cron"}, false); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad cron: %v", err)
	}
	if _, err := s.Backups.PutSchedule(ctx, ScheduleConfig{Name: "nightly", Destination: "nas", Type: "periodic", Every: "24h"}, false); err != nil {
		t.Fatal(err)
	}
	s.Backups.backups.RunSchedules(ctx, time.Now())
	sc, _ := s.st.Schedule("nightly")
	if sc.LastRun == nil || !strings.HasPrefix(sc.LastResult, "DONE") || sc.State != "ACTIVE" {
		t.Fatalf("schedule after its run: %+v", sc)
	}
	// The next run is one period after the start of the period the last
	// run belonged to (its first, at the schedule's creation), whatever
	// the run took.
	if due, next := backup.Due(sc, time.Now()); due || next.Sub(sc.Created) != 24*time.Hour || !next.After(*sc.LastRun) {
		t.Fatalf("next run %v due %v (created %v, last run %v)", next, due, sc.Created, *sc.LastRun)
	}
	if _, err := s.Backups.SetSchedulePaused(ctx, "nightly", true); err != nil {
		t.Fatal(err)
	}
	if due, _ := backup.Due(mustSchedule(t, s, "nightly"), time.Now().Add(48*time.Hour)); due {
		t.Fatal("a paused schedule is due")
	}
	s.Backups.SetSchedulePaused(ctx, "nightly", false)
	// A master-key rotation triggers a full backup to scheduled destinations.
	before, _ := s.Backups.ListBackups(ctx, "nas")
	s.RotateMasterKey(ctx)
	testutil.WaitFor(t, 20*time.Second, "an automatic full after the rotation", func() error {
		after, _ := s.Backups.ListBackups(ctx, "nas")
		if len(after) > len(before) && after[0].Status == "DONE" && strings.Contains(after[0].Reason, "master key rotated") {
			return nil
		}
		return fmt.Errorf("backups %+v", after)
	})
}

func mustSchedule(t *testing.T, s *Service, name string) state.Schedule {
	sc, err := s.st.Schedule(name)
	if err != nil {
		t.Fatal(err)
	}
	return sc
}

func TestArchivingShipsClosedSegments(t *testing.T) {
	s, _ := backupSvc(t)
	ctx := rootCtx()
	target := filepath.Join(t.TempDir(), "arch")
	if _, err := s.Backups.AddDestination(ctx, DestinationConfig{Name: "arch", Kind: "dir", Path: target, Archiving: true}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		s.Objects.PutSecret(ctx, DefaultWallet, fmt.Sprintf("a%d", i), []byte("v"))
		if _, err := s.RotateJournal(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Backups.backups.ArchiveOnce(ctx); err != nil {
		t.Fatal(err)
	}
	d, _ := s.st.Destination("arch")
	files, _ := filepath.Glob(filepath.Join(target, backup.ArchiveDir, "*"+backup.FileSuffix))
	segs, _ := journal.ListSegments(datadir.JournalDir(s.cfg.DataDir))
	var lastClosed uint64
	for _, sg := range segs {
		if sg.Closed && sg.LastIndex > lastClosed {
			lastClosed = sg.LastIndex
		}
	}
	if d.ArchivedTo != lastClosed {
		t.Fatalf("archived to %d, the last closed segment ends at %d", d.ArchivedTo, lastClosed)
	}
	if len(files) < 3 || d.ArchivedTo == 0 || s.Backups.backups.Pending()["arch"] != 0 {
		t.Fatalf("archived %d files up to %d, pending %d", len(files), d.ArchivedTo, s.Backups.backups.Pending()["arch"])
	}
	// Paused: new segments pile up on the node and show as pending.
	s.Backups.SetArchivePaused(ctx, "arch", true)
	s.Objects.PutSecret(ctx, DefaultWallet, "p", []byte("v"))
	s.RotateJournal(ctx)
	s.Backups.backups.ArchiveOnce(ctx)
	if got := s.Backups.backups.Pending()["arch"]; got != 1 {
		t.Fatalf("pending while paused: %d", got)
	}
	s.Backups.SetArchivePaused(ctx, "arch", false)
	s.Backups.backups.ArchiveOnce(ctx)
	if got := s.Backups.backups.Pending()["arch"]; got != 0 {
		t.Fatalf("pending after resume: %d", got)
	}
	_ = context.Background
}

func mustDest(t *testing.T, s *Service, name string) state.Destination {
	d, err := s.st.Destination(name)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func bundleIdentity() (string, string, error) { return bundle.GenerateIdentity() }

// TestBackupsUnderWrites: fulls, incrementals and a freeze taken while
// writes go on all complete, every incremental starts right after the
// previous backup's end, and writes succeed before and after.
func TestBackupsUnderWrites(t *testing.T) {
	s, _ := backupSvc(t)
	ctx := rootCtx()
	var ok, failed atomic.Int64
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			default:
			}
			if _, err := s.Objects.PutSecret(ctx, DefaultWallet, fmt.Sprintf("w%d", i%50), make([]byte, 500)); err == nil {
				ok.Add(1)
			} else if !errors.Is(err, ErrWriteUnavailable) { // refused while frozen
				failed.Add(1)
				t.Errorf("write: %v", err)
			}
		}
	}()
	testutil.WaitFor(t, 30*time.Second, "the writes to start", func() error {
		if ok.Load() < 10 {
			return fmt.Errorf("%d writes", ok.Load())
		}
		return nil
	})
	full, err := s.Backups.RunBackup(ctx, BackupRequest{Destination: LocalDestination, Mode: "full", Wait: true})
	if err != nil {
		t.Fatal(err)
	}
	prev := full.LastIndex
	for i := 0; i < 15; i++ {
		inc, err := s.Backups.RunBackup(ctx, BackupRequest{Destination: LocalDestination, Mode: "incremental", Wait: true})
		if err != nil {
			t.Fatalf("incremental %d under writes: %v", i, err)
		}
		if inc.FirstIndex != full.LastIndex+1 || inc.LastIndex < prev {
			t.Fatalf("incremental %d covers %d-%d (full ends at %d, previous reached %d)", i, inc.FirstIndex, inc.LastIndex, full.LastIndex, prev)
		}
		prev = inc.LastIndex
	}
	if _, err := s.Backups.Freeze(ctx, time.Minute); err != nil {
		t.Fatalf("freeze under writes: %v", err)
	}
	s.Backups.Thaw(ctx)
	before := ok.Load()
	testutil.WaitFor(t, 30*time.Second, "writes after the thaw", func() error {
		if ok.Load() < before+10 {
			return fmt.Errorf("%d succeeded (%d before)", ok.Load(), before)
		}
		return nil
	})
	close(done)
	<-stopped
	if failed.Load() != 0 {
		t.Fatalf("%d writes failed", failed.Load())
	}
}

func TestRestorePoints(t *testing.T) {
	s, dir := backupSvc(t)
	ctx := rootCtx()
	s.Objects.PutSecret(ctx, DefaultWallet, "k", []byte("v"))
	rp, err := s.Backups.CreateRestorePoint(ctx, "before-migration")
	if err != nil || rp.Index != s.st.AppliedIndex() || rp.Time.IsZero() || rp.CreatedBy != "local" {
		t.Fatalf("create: %+v %v (applied %d)", rp, err, s.st.AppliedIndex())
	}
	if _, err := s.Backups.CreateRestorePoint(ctx, "before-migration"); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("duplicate: %v", err)
	}
	if _, err := s.Backups.CreateRestorePoint(ctx, "bad name"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("odd name: %v", err)
	}
	s.Backups.CreateRestorePoint(ctx, "after")
	rps, _ := s.Backups.ListRestorePoints(ctx)
	if len(rps) != 2 || rps[0].Name != "before-migration" || rps[1].Index <= rps[0].Index {
		t.Fatalf("list %+v", rps)
	}
	// The marker is in the journal at its index, so a restore can stop there.
	found := false
	journal.Read(datadir.JournalDir(dir), s.bar, func(_ journal.SegmentInfo, r journal.Record) error {
		if r.Index == rp.Index && r.Type == uint16(state.TypeRestorePoint) {
			found = true
		}
		return nil
	})
	if !found {
		t.Fatal("restore point record not in the journal at its index")
	}
}

// TestScheduleVerifies: a schedule with Verify verifies each backup it
// takes; the result is in the schedule's last result and the catalog.
func TestScheduleVerifies(t *testing.T) {
	s, _ := backupSvc(t)
	ctx := rootCtx()
	target := filepath.Join(t.TempDir(), "nas")
	s.Backups.AddDestination(ctx, DestinationConfig{Name: "nas", Kind: "dir", Path: target})
	s.Objects.PutSecret(ctx, DefaultWallet, "k", []byte("v"))
	if _, err := s.Backups.PutSchedule(ctx, ScheduleConfig{Name: "nightly", Destination: "nas", Type: "periodic", Every: "24h", Verify: true}, false); err != nil {
		t.Fatal(err)
	}
	s.Backups.backups.RunSchedules(ctx, time.Now())
	sc, _ := s.st.Schedule("nightly")
	if !strings.HasPrefix(sc.LastResult, "DONE") || !strings.HasSuffix(sc.LastResult, "verified OK") {
		t.Fatalf("schedule result %q", sc.LastResult)
	}
	cat, err := os.ReadFile(filepath.Join(target, "catalog.json"))
	if err != nil || !strings.Contains(string(cat), `"result": "OK"`) {
		t.Fatalf("catalog: %s %v", cat, err)
	}
}

// TestAutoBackupFallsBackToFullWithoutJournal: an auto backup whose full's
// records are no longer in this node's journal (a node that joined later, a
// pruned journal) takes a full instead of failing; an explicit incremental
// is refused with the missing range.
func TestAutoBackupFallsBackToFullWithoutJournal(t *testing.T) {
	s, _ := backupSvc(t)
	ctx := rootCtx()
	if _, err := s.Backups.AddDestination(ctx, DestinationConfig{Name: "nas", Kind: "dir", Path: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	s.Objects.PutSecret(ctx, DefaultWallet, "a", []byte("v"))
	if rec, err := s.Backups.RunBackup(ctx, BackupRequest{Destination: "nas", Mode: "full", Wait: true}); err != nil || rec.Status != "DONE" {
		t.Fatalf("full: %+v %v", rec, err)
	}
	s.Objects.PutSecret(ctx, DefaultWallet, "b", []byte("v"))
	if rec, err := s.Backups.RunBackup(ctx, BackupRequest{Destination: "nas", Wait: true}); err != nil || rec.Kind != "incremental" {
		t.Fatalf("auto with the journal whole: %+v %v", rec, err)
	}
	// Lose the oldest segments, as on a node whose journal starts later.
	s.Objects.PutSecret(ctx, DefaultWallet, "c", []byte("v"))
	s.RotateJournal(ctx)
	if _, _, err := s.st.PruneJournal(math.MaxUint64, 0, 0, false); err != nil {
		t.Fatal(err)
	}
	if rec, err := s.Backups.RunBackup(ctx, BackupRequest{Destination: "nas", Mode: "incremental", Wait: true}); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "not in the journal any more") {
		t.Fatalf("explicit incremental without the journal: %+v %v", rec, err)
	}
	rec, err := s.Backups.RunBackup(ctx, BackupRequest{Destination: "nas", Wait: true})
	if err != nil || rec.Kind != "full" || rec.Status != "DONE" {
		t.Fatalf("auto without the journal: %+v %v", rec, err)
	}
}

// TestJournalPrunedByItself: the maintenance loop prunes what the
// destinations no longer need, and journal.prune false keeps everything.
func TestJournalPrunedByItself(t *testing.T) {
	for _, off := range []bool{false, true} {
		dir := t.TempDir()
		s, err := New(testConfig(Config{DataDir: dir, BackupTick: time.Hour,
			WriteRetryDelay: 100 * time.Millisecond, JournalKeepSegments: 2, JournalPruneEvery: 50 * time.Millisecond, JournalNoPrune: off}))
		if err != nil {
			t.Fatal(err)
		}
		ctx := rootCtx()
		if _, err := s.Init(ctx, local, []byte(pass)); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 6; i++ {
			s.Objects.PutSecret(ctx, DefaultWallet, fmt.Sprintf("k%d", i), []byte("v"))
			if _, err := s.RotateJournal(ctx); err != nil {
				t.Fatal(err)
			}
		}
		// No destination needs anything: only the kept closed segments and
		// the open one stay.
		deadline := time.Now().Add(10 * time.Second)
		var n int
		for time.Now().Before(deadline) {
			segs, _ := journal.ListSegments(datadir.JournalDir(dir))
			if n = len(segs); n == 3 && !off {
				break
			}
			// With pruning off nothing is to be seen: time must pass.
			time.Sleep(50 * time.Millisecond)
			if off && time.Until(deadline) < 9*time.Second {
				break // a second of rounds with pruning off
			}
		}
		if !off && n != 3 {
			t.Fatalf("pruning on: %d segments, want 2 closed + the open one", n)
		}
		if h := s.Status().Journal.PruneHeldBy; !off && !strings.Contains(h, "nothing") || off && h != "" {
			t.Fatalf("status: journal kept for %q (pruning off: %v)", h, off)
		}
		if off && n < 7 {
			t.Fatalf("pruning off: %d segments left of 7", n)
		}
		s.Close()
	}
}

// TestRebuildCatalogDuringBackup: a catalog rebuild that waits for a running
// backup must not hold the lifecycle lock meanwhile: with a seal queued
// behind it, the backup's own next step (which takes that lock) would wait
// on the seal, the seal on the rebuild and the rebuild on the backup.
func TestRebuildCatalogDuringBackup(t *testing.T) {
	s, _ := backupSvc(t)
	ctx := rootCtx()
	if _, err := s.Backups.AddDestination(ctx, DestinationConfig{Name: "nas", Kind: "dir", Path: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	rebuilt := make(chan error, 1)
	sealed := make(chan error, 1)
	var stepDone bool
	s.Backups.backups.TestHold(func() { // as a running backup
		go func() { _, _, err := s.Backups.RebuildCatalog(ctx, "nas"); rebuilt <- err }()
		// Goroutines blocked on a lock cannot be observed: time for each
		// to reach its lock.
		time.Sleep(200 * time.Millisecond) // the rebuild waits for the backup
		go func() { sealed <- s.Seal(ctx) }()
		time.Sleep(200 * time.Millisecond) // the seal waits for the lifecycle lock
		step := make(chan struct{})
		go func() { backupHost{s.Backups}.ExportKeys(); close(step) }() // the backup's next step
		select {
		case <-step:
			stepDone = true
		case <-time.After(5 * time.Second):
		}
	})
	if !stepDone {
		t.Fatal("a running backup's step hung behind a seal that waited on a catalog rebuild")
	}
	if err := <-sealed; err != nil {
		t.Fatalf("seal: %v", err)
	}
	if err := <-rebuilt; err != nil && !errors.Is(err, ErrSealed) {
		t.Fatalf("rebuild: %v", err)
	}
}

// TestArchiveNowProgress: archive-now reports each destination's start and
// every segment it shipped, ending with all of them on the destination.
func TestArchiveNowProgress(t *testing.T) {
	s, _ := backupSvc(t)
	ctx := rootCtx()
	target := filepath.Join(t.TempDir(), "arch")
	if _, err := s.Backups.AddDestination(ctx, DestinationConfig{Name: "arch", Kind: "dir", Path: target, Archiving: true}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, err := s.Objects.PutSecret(ctx, DefaultWallet, fmt.Sprintf("p%d", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
		if _, err := s.RotateJournal(ctx); err != nil {
			t.Fatal(err)
		}
	}
	var steps []ArchiveProgress
	if err := s.Backups.ArchiveNowProgress(ctx, func(p ArchiveProgress) { steps = append(steps, p) }); err != nil {
		t.Fatal(err)
	}
	if len(steps) < 4 {
		t.Fatalf("steps %+v: want a start and at least 3 segments", steps)
	}
	total := steps[0].Total
	if steps[0] != (ArchiveProgress{Destination: "arch", Total: total}) || total != len(steps)-1 {
		t.Fatalf("first step %+v of %d", steps[0], len(steps))
	}
	for i, p := range steps[1:] {
		if p.Destination != "arch" || p.Done != i+1 || p.Total != total || !strings.HasSuffix(p.Segment, ".recovery") {
			t.Fatalf("step %d: %+v", i+1, p)
		}
	}
	if got := s.Backups.backups.Pending()["arch"]; got != 0 {
		t.Fatalf("pending after archive now: %d", got)
	}
}

// TestCorruptCatalogNamesTheDestination: the error of a destination whose
// catalog cannot be read gives the rebuild command with the destination's
// own name, ready to paste.
func TestCorruptCatalogNamesTheDestination(t *testing.T) {
	s, _ := backupSvc(t)
	ctx := rootCtx()
	target := t.TempDir()
	if _, err := s.Backups.AddDestination(ctx, DestinationConfig{Name: "nas", Kind: "dir", Path: target}); err != nil {
		t.Fatal(err)
	}
	if rec, err := s.Backups.RunBackup(ctx, BackupRequest{Destination: "nas", Mode: "full", Wait: true}); err != nil || rec.Status != "DONE" {
		t.Fatalf("full: %+v %v", rec, err)
	}
	if err := os.WriteFile(filepath.Join(target, "catalog.json"), []byte(`{"format": 1, "cluster`), 0o600); err != nil {
		t.Fatal(err)
	}
	want := "coffer backup catalog rebuild --destination nas)"
	err := s.Backups.TestDestination(ctx, "nas")
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), want) {
		t.Fatalf("destination test: %v, want ErrConflict with %q", err, want)
	}
	_, err = s.Backups.RunBackup(ctx, BackupRequest{Destination: "nas", Mode: "full", Wait: true})
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), want) {
		t.Fatalf("backup: %v, want ErrConflict with %q", err, want)
	}
	if _, err = s.Backups.Drill(ctx, "nas"); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("drill: %v, want %q", err, want)
	}
}

// A client that stops waiting for a backup run with Wait (an interrupted
// "coffer backup run --wait", its --timeout) stops following it, not the
// backup: it still ends DONE.
func TestWaitedBackupOutlivesItsRequest(t *testing.T) {
	s, _ := backupSvc(t)
	t.Setenv("COFFER_TEST_BACKUP_PAUSE", "2s") // the backup holds before saving
	ctx, cancel := context.WithCancel(rootCtx())
	defer cancel()
	go func() {
		// The request ends once the backup runs (the client interrupted).
		for ctx.Err() == nil {
			if cur, err := s.Backups.CurrentBackup(rootCtx()); err == nil && cur != nil {
				cancel()
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	rec, err := s.Backups.RunBackup(ctx, BackupRequest{Destination: LocalDestination, Mode: "full", Wait: true})
	if err == nil || !errors.Is(err, context.Canceled) {
		t.Fatalf("a waited backup whose request ended: %+v %v", rec, err)
	}
	if rec.ID == "" || !strings.Contains(err.Error(), rec.ID) {
		t.Fatalf("the error does not name the backup that goes on: %+v %v", rec, err)
	}
	testutil.WaitFor(t, time.Minute, "the backup to end", func() error {
		got, err := s.st.Backup(rec.ID)
		if err != nil || got.Status == "RUNNING" {
			return fmt.Errorf("backup %s: %s %v", rec.ID, got.Status, err)
		}
		if got.Status != "DONE" {
			t.Fatalf("the backup was stopped with its request: %s %s", got.Status, got.Reason)
		}
		return nil
	})
}

// "coffer journal archive now" while writes are frozen ships nothing (the
// archive mark could not be recorded): it says so instead of reporting the
// journal archived.
func TestArchiveNowWhileFrozenSaysSo(t *testing.T) {
	s, _ := backupSvc(t)
	ctx := rootCtx()
	target := filepath.Join(t.TempDir(), "arch")
	if _, err := s.Backups.AddDestination(ctx, DestinationConfig{Name: "arch", Kind: "dir", Path: target, Archiving: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Objects.PutSecret(ctx, DefaultWallet, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Backups.Freeze(ctx, time.Hour); err != nil {
		t.Fatal(err)
	}
	err := s.Backups.ArchiveNow(ctx)
	if !errors.Is(err, ErrWriteUnavailable) || !strings.Contains(err.Error(), "frozen") {
		t.Fatalf("archive now while frozen: %v", err)
	}
	if files, _ := filepath.Glob(filepath.Join(target, backup.ArchiveDir, "*"+backup.FileSuffix)); len(files) != 0 {
		t.Fatalf("shipped while frozen: %v", files)
	}
	if _, err := s.Backups.Thaw(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Backups.ArchiveNow(ctx); err != nil {
		t.Fatalf("archive now after the thaw: %v", err)
	}
	if d := mustDest(t, s, "arch"); d.ArchivedTo == 0 {
		t.Fatal("nothing archived after the thaw")
	}
}

// A staging file a crash left is removed when the server starts, whatever
// the node's role: a node that opens as a follower never marks interrupted
// backups (the new leader does), and its staging file, the size of a full
// backup, stayed on its data disk until it led again.
func TestStagingLeftoverRemovedAtStart(t *testing.T) {
	dir := t.TempDir()
	staging := datadir.StagingDir(dir)
	if err := os.MkdirAll(staging, 0o700); err != nil {
		t.Fatal(err)
	}
	leftover := filepath.Join(staging, "staging-123"+backup.FileSuffix)
	if err := os.WriteFile(leftover, []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := newSvc(t, dir)
	t.Cleanup(func() { s.Close() })
	if _, err := os.Stat(leftover); !os.IsNotExist(err) {
		t.Fatalf("staging leftover after the start: %v", err)
	}
}

// A schedule edited while its backup runs stays ONGOING (status and
// schedule list say it runs) until the run records its result.
func TestScheduleEditedWhileItRunsStaysOngoing(t *testing.T) {
	s, _ := backupSvc(t)
	ctx := rootCtx()
	if _, err := s.Backups.PutSchedule(ctx, ScheduleConfig{Name: "nightly", Destination: LocalDestination, Type: "periodic", Every: "24h"}, false); err != nil {
		t.Fatal(err)
	}
	sc := mustSchedule(t, s, "nightly")
	sc.State = "ONGOING" // as RunSchedules marks it while its backup runs
	if _, err := s.applyOpen(ctx, state.TypeSchedulePut, sc); err != nil {
		t.Fatal(err)
	}
	v, err := s.Backups.PutSchedule(ctx, ScheduleConfig{Name: "nightly", Destination: LocalDestination, Type: "periodic", Every: "12h"}, true)
	if err != nil {
		t.Fatal(err)
	}
	if v.State != "ONGOING" || v.Every != "12h" {
		t.Fatalf("edited while it runs: state %s, every %s", v.State, v.Every)
	}
}

// A node that leads again after a time as a follower reads the catalogs
// anew: a drill another leader recorded meanwhile replaces what it knew
// from its earlier leadership (status, LAST DRILL OK, the drill alert).
func TestLeadershipRegainedRereadsDrills(t *testing.T) {
	s, _ := backupSvc(t)
	ctx := rootCtx()
	if _, err := s.Backups.RunBackup(ctx, BackupRequest{Destination: LocalDestination, Mode: "full", Wait: true}); err != nil {
		t.Fatal(err)
	}
	s.Backups.loadDrills(ctx) // its first leadership
	if v, ok := s.Backups.drills.get(LocalDestination); !ok || v.LastGood != nil {
		t.Fatalf("before any drill: %+v %v", v, ok)
	}
	// Another leader drills while this node follows.
	tg, err := backupHost{s.Backups}.OpenTarget(ctx, LocalDestination)
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Dest.Close()
	cat, err := tg.LoadCatalog(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cat.AddDrill(backup.Drill{Time: time.Now().UTC(), Result: "OK", Node: "node-b", Index: 1, Duration: 1})
	if err := backup.SaveCatalog(ctx, tg.Dest, cat); err != nil {
		t.Fatal(err)
	}
	s.Backups.loadDrills(ctx) // leadership regained (Manager.OnLeader)
	if v, _ := s.Backups.drills.get(LocalDestination); v.LastGood == nil || v.LastGood.Node != "node-b" {
		t.Fatalf("the drill recorded meanwhile is not known after leadership is regained: %+v", v)
	}
}
