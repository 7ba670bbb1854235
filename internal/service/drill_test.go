package service

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/backup"
	"github.com/coffer-kms/coffer/internal/backup/dest"
)

// drillSvc is an open service backing up to a dir destination "nas", with
// a clock that tests move forward and backup.drill_max_age of one hour.
func drillSvc(t *testing.T) (*Service, string, *atomic.Int64) {
	t.Helper()
	var skew atomic.Int64
	s, err := New(testConfig(Config{DataDir: t.TempDir(), BackupScryptWorkFactor: 10, BackupTick: time.Hour, NoAutoBackup: true,
		WriteRetryDelay: 100 * time.Millisecond, DrillMaxAge: time.Hour,
		Now: func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx := rootCtx()
	if _, err := s.Init(ctx, local, []byte(pass)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetRecoveryPassphrase(ctx, nil, []byte("recovery-passphrase")); err != nil {
		t.Fatal(err)
	}
	nas := filepath.Join(t.TempDir(), "nas")
	if _, err := s.Backups.AddDestination(ctx, DestinationConfig{Name: "nas", Kind: "dir", Path: nas, Archiving: true}); err != nil {
		t.Fatal(err)
	}
	s.Objects.PutSecret(ctx, DefaultWallet, "a", []byte("v1"))
	if rec, err := s.Backups.RunBackup(ctx, BackupRequest{Destination: "nas", Mode: "full", Wait: true}); err != nil || rec.Status != "DONE" {
		t.Fatalf("full: %+v %v", rec, err)
	}
	s.Objects.PutSecret(ctx, DefaultWallet, "b", []byte("v2"))
	if err := s.Backups.ArchiveNow(ctx); err != nil {
		t.Fatal(err)
	}
	return s, nas, &skew
}

func drillAlerts(s *Service) []Alert {
	_, alerts := s.Backups.backupHealth()
	var out []Alert
	for _, a := range alerts {
		if a.Code == AlertDrillStale {
			out = append(out, a)
		}
	}
	return out
}

func nasCatalog(t *testing.T, nas string) backup.Catalog {
	t.Helper()
	d, err := dest.NewDir(nas)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	c, err := backup.LoadCatalog(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestDrillRecordsResultAndSpeed: a drill on a dir destination succeeds,
// records its speed in the catalog, and status shows it with an estimate;
// the alert comes once the last success is older than drill_max_age.
func TestDrillRecordsResultAndSpeed(t *testing.T) {
	s, nas, skew := drillSvc(t)
	ctx := rootCtx()
	if a := drillAlerts(s); len(a) != 0 {
		t.Fatalf("alert before any drill was due: %+v", a)
	}
	res, err := s.Backups.Drill(ctx, "nas")
	if err != nil || !res.OK() {
		t.Fatalf("drill: %+v %v", res, err)
	}
	if res.BytesPerSecond <= 0 || res.RecordsPerSecond <= 0 || res.Index == 0 {
		t.Fatalf("no speed measured: %+v", res)
	}
	c := nasCatalog(t, nas)
	if g := c.LastGoodDrill(); g == nil || g.BytesPerSecond != res.BytesPerSecond || c.Format != 2 {
		t.Fatalf("catalog (format %d) drills %+v", c.Format, c.Drills)
	}
	staging, _ := os.ReadDir(filepath.Join(s.cfg.DataDir, "restore-tmp"))
	for _, e := range staging {
		if strings.HasPrefix(e.Name(), "drill-") {
			t.Fatalf("scratch dir %s left behind", e.Name())
		}
	}
	h, _ := s.Backups.backupHealth()
	var nh *DestinationHealth
	for i := range h {
		if h[i].Name == "nas" {
			nh = &h[i]
		}
	}
	if nh == nil || nh.Drills == nil || nh.Drills.LastGood == nil || nh.Drills.EstimatedRestore <= 0 {
		t.Fatalf("health: %+v", nh)
	}
	views, err := s.Backups.ListDestinations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range views {
		if v.Name == "nas" && (v.Drills == nil || v.Drills.EstimatedRestore <= 0) {
			t.Fatalf("destination list without the drill: %+v", v.Drills)
		}
	}
	if a := drillAlerts(s); len(a) != 0 {
		t.Fatalf("alert right after a good drill: %+v", a)
	}
	skew.Store(int64(2 * time.Hour))
	if a := drillAlerts(s); len(a) != 1 || !strings.Contains(a[0].Message, "nas") || a[0].Runbook != "docs/runbooks/restore-drill-failed.md" {
		t.Fatalf("stale drill alerts: %+v", a)
	}
}

// TestDrillOfDamagedBackupFailsAndAlerts: a damaged full makes the drill
// FAILED (recorded with the reason) and the alert names the failure.
func TestDrillOfDamagedBackupFailsAndAlerts(t *testing.T) {
	s, nas, skew := drillSvc(t)
	fulls, _ := filepath.Glob(filepath.Join(nas, "backups", "*-full.cbk"))
	if len(fulls) != 1 {
		t.Fatalf("fulls %v", fulls)
	}
	b, err := os.ReadFile(fulls[0])
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x40
	if err := os.WriteFile(fulls[0], b, 0o600); err != nil {
		t.Fatal(err)
	}
	res, err := s.Backups.Drill(rootCtx(), "nas")
	if err != nil || res.OK() || res.Reason == "" {
		t.Fatalf("drill of a damaged backup: %+v %v", res, err)
	}
	if c := nasCatalog(t, nas); c.LastDrill() == nil || c.LastDrill().OK() || c.LastGoodDrill() != nil {
		t.Fatalf("catalog drills %+v", c.Drills)
	}
	skew.Store(int64(2 * time.Hour)) // the first backup is now older than drill_max_age
	a := drillAlerts(s)
	if len(a) != 1 || !strings.Contains(a[0].Message, "the last drill FAILED") {
		t.Fatalf("alerts %+v", a)
	}
}

// TestScheduleKindVerifyRunsDrill: a schedule of kind verify runs a drill
// (no backup) and records its result in the schedule and the catalog.
func TestScheduleKindVerifyRunsDrill(t *testing.T) {
	s, nas, _ := drillSvc(t)
	ctx := rootCtx()
	if _, err := s.Backups.PutSchedule(ctx, ScheduleConfig{Name: "drill", Destination: "nas", Kind: "verify", Type: "periodic", Every: "24h", Mode: "full"}, false); err == nil {
		t.Fatal("a verify schedule took a mode")
	}
	if _, err := s.Backups.PutSchedule(ctx, ScheduleConfig{Name: "drill", Destination: "nas", Kind: "nope", Type: "periodic", Every: "24h"}, false); err == nil {
		t.Fatal("an unknown kind was accepted")
	}
	if _, err := s.Backups.PutSchedule(ctx, ScheduleConfig{Name: "drill", Destination: "nas", Kind: "verify", Type: "periodic", Every: "24h"}, false); err != nil {
		t.Fatal(err)
	}
	before, _ := s.st.Backups()
	s.Backups.backups.RunSchedules(ctx, time.Now())
	sc, _ := s.st.Schedule("drill")
	if !strings.HasPrefix(sc.LastResult, "DRILL OK") || sc.Kind != "verify" || sc.State != "ACTIVE" {
		t.Fatalf("schedule %+v", sc)
	}
	if after, _ := s.st.Backups(); len(after) != len(before) {
		t.Fatalf("a verify schedule took a backup: %d records, had %d", len(after), len(before))
	}
	if c := nasCatalog(t, nas); c.LastGoodDrill() == nil {
		t.Fatal("the scheduled drill is not in the catalog")
	}
}

// TestDrillCacheReadAtLeadershipDoesNotOverwrite: a catalog read when a
// node becomes leader (without the catalog's lock) does not overwrite a
// drill recorded while it was read; it fills a destination not known yet
// and replaces what an earlier leadership left.
func TestDrillCacheReadAtLeadershipDoesNotOverwrite(t *testing.T) {
	var c drillCache
	var fresh backup.Catalog
	fresh.AddDrill(backup.Drill{Time: time.Now(), Result: "OK"})
	since := c.version("nas") // the read starts
	c.set("nas", fresh)
	c.setSince("nas", backup.Catalog{}, since) // read before the drill was recorded
	if v, ok := c.get("nas"); !ok || v.Last == nil || v.Last.Result != "OK" {
		t.Fatalf("the drill recorded meanwhile was overwritten: %+v", v)
	}
	since = c.version("nas")
	c.verified("nas", "f", backup.Verification{Result: "OK"})
	c.setSince("nas", backup.Catalog{}, since) // read before the verification was recorded
	if v, _ := c.get("nas"); v.Last == nil {
		t.Fatalf("overwritten although a verification was recorded meanwhile: %+v", v)
	}
	c.setSince("s3", fresh, c.version("s3"))
	if v, ok := c.get("s3"); !ok || v.Last == nil {
		t.Fatalf("an unknown destination was not filled: %+v %v", v, ok)
	}
	c.setSince("s3", backup.Catalog{}, c.version("s3")) // read at a later leadership
	if v, _ := c.get("s3"); v.Last != nil {
		t.Fatalf("an entry of an earlier leadership was not replaced: %+v", v)
	}
	c.set("nas", backup.Catalog{}) // a rebuild replaces
	if v, _ := c.get("nas"); v.Last != nil {
		t.Fatalf("set did not replace: %+v", v)
	}
}
