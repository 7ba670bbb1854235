package service

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/audit"
	"github.com/coffer-kms/coffer/internal/backup"
	"github.com/coffer-kms/coffer/internal/datadir"
)

// auditSvc is an open service with a recovery passphrase whose audit log
// puts every record in a file of its own.
func auditSvc(t *testing.T, retention time.Duration) (*Service, string) {
	t.Helper()
	dir := t.TempDir()
	s, err := New(Config{DataDir: dir, KDF: cheapKDF, PasswordKDF: PasswordKDF{Time: 1, MemoryKiB: 64, Threads: 1},
		MachineIdentity: func() ([]byte, error) { return []byte("m"), nil }, BackupScryptWorkFactor: 10, BackupTick: time.Hour,
		WriteRetryDelay: 100 * time.Millisecond, AuditMaxFileBytes: 1, AuditRetention: retention})
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

// auditAt appends one record dated at.
func auditAt(t *testing.T, s *Service, at time.Time) {
	t.Helper()
	if _, err := s.audit.Append(audit.Record{Time: at, Actor: "user:alice", Operation: "key.get", Result: "ok"}); err != nil {
		t.Fatal(err)
	}
}

func localAuditFiles(t *testing.T, dataDir string) []string {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(datadir.AuditDir(dataDir), "audit-*.log"))
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range names {
		names[i] = filepath.Base(n)
	}
	return names
}

func shippedName(s *Service, file string) string {
	return filepath.FromSlash(backup.AuditFileName(s.nodeID, s.st.Timeline().ID, file))
}

func TestAuditShippingCopiesClosedFilesOnce(t *testing.T) {
	s, dataDir := auditSvc(t, 0)
	ctx := rootCtx()
	nas := filepath.Join(t.TempDir(), "nas")
	if _, err := s.Backups.AddDestination(ctx, DestinationConfig{Name: "nas", Kind: "dir", Path: nas}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	for i := range 3 {
		auditAt(t, s, t0.Add(time.Duration(i)*time.Second))
	}
	if err := s.Backups.shipAudit(ctx, t0); err != nil {
		t.Fatal(err)
	}
	// Files 1 and 2 are closed; file 3 is the one the log writes to.
	for _, f := range []string{"audit-00000001.log", "audit-00000002.log"} {
		p := filepath.Join(nas, shippedName(s, f))
		m, entries := openBackup(t, p, "recovery-passphrase")
		local, err := os.ReadFile(filepath.Join(datadir.AuditDir(dataDir), f))
		if err != nil {
			t.Fatal(err)
		}
		if m.Kind != backup.KindAudit || string(entries[backup.EntryAudit+f]) != string(local) {
			t.Fatalf("%s: manifest %+v, entries %v", f, m, entries)
		}
	}
	if _, err := os.Stat(filepath.Join(nas, shippedName(s, "audit-00000003.log"))); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the active file was shipped: %v", err)
	}
	// LOCAL, in the data dir itself, gets no copy.
	if _, err := os.Stat(filepath.Join(datadir.LocalBackupDir(dataDir), backup.AuditDir)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("audit files shipped to LOCAL: %v", err)
	}
	// Shipped once: a copy removed on the destination is not sent again.
	if err := os.Remove(filepath.Join(nas, shippedName(s, "audit-00000001.log"))); err != nil {
		t.Fatal(err)
	}
	auditAt(t, s, t0.Add(3*time.Second))
	if err := s.Backups.shipAudit(ctx, t0); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(nas, shippedName(s, "audit-00000001.log"))); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("file 1 was shipped again: %v", err)
	}
	if _, err := os.Stat(filepath.Join(nas, shippedName(s, "audit-00000003.log"))); err != nil {
		t.Fatalf("file 3, closed since, was not shipped: %v", err)
	}
	st := s.Status().Backup.Audit
	if st == nil || len(st.Destinations) != 1 || st.Destinations[0].ShippedThrough != "audit-00000003.log" || st.Destinations[0].Pending != 0 {
		t.Fatalf("status %+v", st)
	}
	// No retention: nothing is removed.
	if got := localAuditFiles(t, dataDir); len(got) != 4 {
		t.Fatalf("local files %v", got)
	}
}

func TestAuditRetentionWaitsForEveryDestination(t *testing.T) {
	s, dataDir := auditSvc(t, 24*time.Hour)
	ctx := rootCtx()
	nas, bad := filepath.Join(t.TempDir(), "nas"), filepath.Join(t.TempDir(), "bad")
	for name, p := range map[string]string{"nas": nas, "bad": bad} {
		if _, err := s.Backups.AddDestination(ctx, DestinationConfig{Name: name, Kind: "dir", Path: p, Archiving: true}); err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	for i := range 4 {
		auditAt(t, s, t0.Add(time.Duration(i)*time.Hour))
	}
	// "bad" fails: its directory is now a file.
	if err := os.RemoveAll(bad); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	now := t0.Add(24*time.Hour + 90*time.Minute) // files 1 and 2 are older than a day, file 3 is not
	if err := s.Backups.shipAudit(ctx, now); err != nil {
		t.Fatal(err)
	}
	if got := localAuditFiles(t, dataDir); len(got) != 4 {
		t.Fatalf("pruned although a destination failed: %v", got)
	}
	st := s.Status()
	var badView AuditShipping
	for _, v := range st.Backup.Audit.Destinations {
		if v.Destination == "bad" {
			badView = v
		}
	}
	if badView.Error == "" || badView.Pending != 3 {
		t.Fatalf("failing destination in status: %+v", st.Backup.Audit)
	}
	if !hasWarning(st, "3 closed audit files are not shipped to destination bad: open destination bad") {
		t.Fatalf("no warning about the failing destination: %+v", st.Warnings)
	}
	if !hasWarning(st, "2 audit files older than audit.retention (1d) stay on this node until destination bad holds them") {
		t.Fatalf("no warning about the held files: %+v", st.Warnings)
	}

	// Repaired: the next round ships and prunes the old files only.
	os.Remove(bad)
	if err := s.Backups.shipAudit(ctx, now); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(localAuditFiles(t, dataDir), " "); got != "audit-00000003.log audit-00000004.log audit-00000005.log" {
		t.Fatalf("after pruning (file 5 holds the auditPrune record): %s", got)
	}
	for _, p := range []string{nas, bad} {
		if _, err := os.Stat(filepath.Join(p, shippedName(s, "audit-00000002.log"))); err != nil {
			t.Fatalf("a pruned file is not on %s: %v", p, err)
		}
	}
	rep, err := s.VerifyAudit(ctx)
	if err != nil || rep.PrunedThrough != 2 || rep.FirstSeq != 3 || rep.LastSeq != 5 {
		t.Fatalf("verify after pruning: %+v %v", rep, err)
	}
	recs, err := s.AuditRecordsNewest(ctx, 0, 1)
	if err != nil || len(recs) != 1 || recs[0].Operation != "auditPrune" || !strings.Contains(strings.Join(recs[0].Objects, " "), "anchor seq=2 hash=") {
		t.Fatalf("the prune is not in the log: %+v %v", recs, err)
	}

	// A paused destination holds files too.
	if _, err := s.Backups.SetArchivePaused(ctx, "nas", true); err != nil {
		t.Fatal(err)
	}
	later := now.Add(48 * time.Hour)
	if err := s.Backups.shipAudit(ctx, later); err != nil {
		t.Fatal(err)
	}
	// File 3 was on both destinations before the pause and goes; file 4,
	// closed since, has not reached the paused one and stays.
	if got := localAuditFiles(t, dataDir); len(got) == 0 || got[0] != "audit-00000004.log" {
		t.Fatalf("with a paused destination: %v", got)
	}
	if !hasWarning(s.Status(), "until destination nas holds them") {
		t.Fatalf("no warning about the paused destination: %+v", s.Status().Warnings)
	}
	if _, err := s.Backups.SetArchivePaused(ctx, "nas", false); err != nil {
		t.Fatal(err)
	}
	if err := s.Backups.shipAudit(ctx, later); err != nil {
		t.Fatal(err)
	}
	// File 4 is shipped and goes; file 5 holds the first auditPrune
	// record, dated by the real clock, which is not older than the retention.
	if got := localAuditFiles(t, dataDir); len(got) == 0 || got[0] != "audit-00000005.log" {
		t.Fatalf("after resuming: %v", got)
	}
	if _, err := s.VerifyAudit(ctx); err != nil {
		t.Fatalf("verify after the second prune: %v", err)
	}
}

func TestAuditRetentionWithoutDestinations(t *testing.T) {
	s, dataDir := auditSvc(t, time.Hour)
	ctx := rootCtx()
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	for i := range 3 {
		auditAt(t, s, t0.Add(time.Duration(i)*time.Minute))
	}
	if err := s.Backups.shipAudit(ctx, t0.Add(100*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got := localAuditFiles(t, dataDir); len(got) != 3 {
		t.Fatalf("pruned with no destination: %v", got)
	}
	if !hasWarning(s.Status(), "no backup destination other than LOCAL is configured") {
		t.Fatalf("no warning: %+v", s.Status().Warnings)
	}
}

func TestVerifyAuditAfterPruning(t *testing.T) {
	setup := func(t *testing.T) (*Service, string) {
		s, dataDir := auditSvc(t, time.Hour)
		ctx := rootCtx()
		if _, err := s.Backups.AddDestination(ctx, DestinationConfig{Name: "nas", Kind: "dir", Path: filepath.Join(t.TempDir(), "nas")}); err != nil {
			t.Fatal(err)
		}
		t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
		for i := range 6 {
			auditAt(t, s, t0.Add(time.Duration(i)*time.Hour))
		}
		if err := s.Backups.shipAudit(ctx, t0.Add(3*time.Hour+30*time.Minute)); err != nil { // files 1-3 are older than an hour
			t.Fatal(err)
		}
		if a, ok, err := audit.ReadAnchor(datadir.AuditDir(dataDir)); err != nil || !ok || a.File != 3 {
			t.Fatalf("anchor %+v %v %v", a, ok, err)
		}
		if _, err := s.VerifyAudit(ctx); err != nil {
			t.Fatalf("verify after pruning: %v", err)
		}
		return s, dataDir
	}
	t.Run("middle file removed", func(t *testing.T) {
		s, dataDir := setup(t)
		os.Remove(filepath.Join(datadir.AuditDir(dataDir), "audit-00000005.log"))
		if _, err := s.VerifyAudit(rootCtx()); !errors.Is(err, ErrTampered) || !strings.Contains(err.Error(), "removed") {
			t.Fatalf("verify with a middle file removed: %v", err)
		}
	})
	t.Run("anchor altered", func(t *testing.T) {
		s, dataDir := setup(t)
		p := filepath.Join(datadir.AuditDir(dataDir), audit.AnchorFile)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		b = []byte(strings.Replace(string(b), "seq=00000000000000000003", "seq=00000000000000000002", 1))
		os.WriteFile(p, b, 0o600)
		if _, err := s.VerifyAudit(rootCtx()); !errors.Is(err, ErrTampered) {
			t.Fatalf("verify with an altered anchor: %v", err)
		}
	})
}

func hasWarning(st Status, sub string) bool {
	for _, w := range st.Warnings {
		if strings.Contains(w.Message, sub) {
			return true
		}
	}
	return false
}
