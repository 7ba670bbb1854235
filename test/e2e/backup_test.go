package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/client"
	"github.com/coffer-kms/coffer/internal/testutil"
)

// TestKillDuringBackup: kill -9 while a backup is being written leaves the
// destination's catalog consistent (no entry, no file), and the next start
// marks the backup FAILED with its reason and removes the staging file.
func TestKillDuringBackup(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	target := filepath.Join(t.TempDir(), "nas")
	n := newNode(t, dir, "backup:\n  check_interval: 1h\n")
	n.env = []string{"COFFER_TEST_BACKUP_PAUSE=60s"}
	n.start()
	t.Cleanup(n.stop)
	n.initialise()
	ctx := context.Background()
	c := n.https()
	if _, err := c.SetRecoveryPassphrase(ctx, "", "e2e-recovery-passphrase"); err != nil {
		t.Fatal(err)
	}
	putMany(t, c, "k", 50)
	if _, err := c.AddDestination(ctx, client.DestinationConfig{Name: "nas", Kind: "dir", Path: target}); err != nil {
		t.Fatal(err)
	}
	rec, err := c.RunBackup(ctx, "nas", "full", false)
	if err != nil || rec.Status != "RUNNING" {
		t.Fatalf("start: %+v %v", rec, err)
	}
	// Wait until the bundle is staged (the pause holds it before the save).
	testutil.WaitFor(t, 20*time.Second, "the backup to reach its staged state", func() error {
		staged, _ := filepath.Glob(filepath.Join(dir, "backup", "staging", "staging-*"))
		p, err := c.CurrentBackup(ctx)
		if p != nil && p.BytesWritten > 0 && len(staged) == 1 {
			return nil
		}
		return fmt.Errorf("current backup %+v (%v), staged %q", p, err, staged)
	})
	n.kill9()

	n.env = nil
	n.start()
	n.waitState("open")
	c = n.https()
	var got client.BackupRecord
	testutil.WaitFor(t, 20*time.Second, "the interrupted backup to be marked FAILED", func() error {
		list, err := c.ListBackups(ctx, "nas")
		if err == nil && len(list) == 1 {
			got = list[0]
			if got.Status == "FAILED" {
				return nil
			}
		}
		return fmt.Errorf("backups %+v, %v", list, err)
	})
	if got.ID != rec.ID || !strings.Contains(got.Reason, "interrupted") {
		t.Fatalf("record %+v", got)
	}
	if staged, _ := filepath.Glob(filepath.Join(dir, "backup", "staging", "*")); len(staged) != 0 {
		t.Fatalf("staging files left: %v", staged)
	}
	if files, _ := filepath.Glob(filepath.Join(target, "backups", "*")); len(files) != 0 {
		t.Fatalf("files on the destination from the killed backup: %v", files)
	}
	cat, err := os.ReadFile(filepath.Join(target, "catalog.json"))
	if err != nil || strings.Contains(string(cat), rec.ID) {
		t.Fatalf("catalog after the kill: %s %v", cat, err)
	}
	// And the next backup works.
	done, err := c.RunBackup(ctx, "nas", "full", true)
	if err != nil || done.Status != "DONE" {
		t.Fatalf("backup after the restart: %+v %v", done, err)
	}
}

// TestSIGUSR1FreezesAndSIGCONTThaws: OpenKeyServer's dump-and-pause. SIGUSR1
// writes a full dump under <data-dir>/dump and refuses writes (reads go
// on); SIGCONT ends it.
func TestSIGUSR1FreezesAndSIGCONTThaws(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	n := initialisedNode(t, dir, "backup:\n  check_interval: 1h\n  freeze_timeout: 2m\n")
	ctx := context.Background()
	c := n.https()
	if _, err := c.SetRecoveryPassphrase(ctx, "", "e2e-recovery-passphrase"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PutSecret(ctx, "default", "k", []byte("v1")); err != nil {
		t.Fatal(err)
	}
	n.signal(syscall.SIGUSR1)
	testutil.WaitFor(t, 20*time.Second, "writes to be frozen after SIGUSR1", func() error {
		_, err := c.PutSecret(ctx, "default", "probe", []byte("x"))
		if client.IsCode(err, "writes_unavailable") && strings.Contains(err.Error(), "frozen") {
			return nil
		}
		return fmt.Errorf("write: %v", err)
	})
	dumps, _ := filepath.Glob(filepath.Join(dir, "dump", "backups", "*-dump.cbk"))
	if len(dumps) != 1 {
		t.Fatalf("dump files: %v", dumps)
	}
	if s, err := c.GetSecret(ctx, "default", "k", 0); err != nil || string(s.Value) != "v1" {
		t.Fatalf("read while frozen: %v", err)
	}
	n.signal(syscall.SIGCONT)
	testutil.WaitFor(t, 10*time.Second, "writes after SIGCONT", func() error {
		_, err := c.PutSecret(ctx, "default", "k", []byte("v2"))
		return err
	})
	if !strings.Contains(n.logs.String(), "frozen on SIGUSR1") {
		t.Fatal("the freeze is not logged")
	}
}
