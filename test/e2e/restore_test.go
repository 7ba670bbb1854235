package e2e

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/client"
)

// TestRestoreCLI is the data-disk-failure runbook with the real binary:
// backups and archived segments on a destination, the data dir deleted,
// "coffer restore" to a restore point into the same path, the server
// started on it and opened with the new passphrase. The CA comes back (the
// old CA file still verifies the server), the node is on timeline 2, it
// takes a full backup by itself at its first start, and a restore into a
// dir with a running server is refused.
func TestRestoreCLI(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "data")
	nas := filepath.Join(base, "nas")
	n := initialisedNode(t, dir, "backup:\n  check_interval: 1h\n")
	ctx := context.Background()
	c := n.https()
	if _, err := c.SetRecoveryPassphrase(ctx, "", "e2e-recovery-passphrase"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddDestination(ctx, client.DestinationConfig{Name: "nas", Kind: "dir", Path: nas, Archiving: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddSchedule(ctx, client.ScheduleConfig{Name: "nightly", Destination: "nas", Type: "periodic", Every: "24h"}); err != nil {
		t.Fatal(err)
	}
	acked := putMany(t, c, "before", 20)
	if rec, err := c.RunBackup(ctx, "nas", "full", true); err != nil || rec.Status != "DONE" {
		t.Fatalf("full: %+v %v", rec, err)
	}
	for k, v := range putMany(t, c, "after", 10) {
		acked[k] = v
	}
	if _, err := c.CreateRestorePoint(ctx, "before-mistake"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PutSecret(ctx, "default", "before-0", []byte("overwritten by mistake")); err != nil {
		t.Fatal(err)
	}
	if err := c.ArchiveJournal(ctx); err != nil {
		t.Fatal(err)
	}
	oldCA, _ := os.ReadFile(n.caFile)
	oldCAFile := filepath.Join(base, "ca.crt")
	os.WriteFile(oldCAFile, oldCA, 0o600)

	rp := filepath.Join(base, "rp.txt")
	ks := filepath.Join(base, "ks.txt")
	os.WriteFile(rp, []byte("e2e-recovery-passphrase\n"), 0o600)
	os.WriteFile(ks, []byte("restored-e2e-passphrase\n"), 0o600)
	args := []string{"restore", "--from", nas, "--data-dir", dir, "--to-restore-point", "before-mistake",
		"--recovery-passphrase-file", rp, "--passphrase-file", ks, "--config", n.config}

	// A data dir with a running server is refused, even with --force.
	out, err := coffer(t, nil, append(args, "--force")...)
	if err == nil || !strings.Contains(out, "running") {
		t.Fatalf("restore over a running server: %v\n%s", err, out)
	}
	if out, err := coffer(t, nil, "restore", "--list", "--from", nas); err != nil || !strings.Contains(out, "full") || !strings.Contains(out, "segment") {
		t.Fatalf("restore --list: %v\n%s", err, out)
	}

	// The data disk dies.
	n.stop()
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	out, err = coffer(t, nil, args...)
	if err != nil {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	for _, want := range []string{"restore point \"before-mistake\"", "timeline        2", "Auto-open was not restored"} {
		if !strings.Contains(out, want) {
			t.Fatalf("restore output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "e2e-recovery-passphrase") || strings.Contains(out, "restored-e2e-passphrase") {
		t.Fatal("a passphrase was printed")
	}
	if newCA, _ := os.ReadFile(filepath.Join(dir, "tls", "ca.crt")); !bytes.Equal(newCA, oldCA) {
		t.Fatal("the CA was not restored")
	}
	// Files holding secrets are 0600, their directories 0700.
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if fi.IsDir() && fi.Mode().Perm() != 0o700 || !fi.IsDir() && fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s has mode %v", p, fi.Mode().Perm())
		}
		return nil
	})

	n.start()
	n.waitState("sealed")
	if err := n.local().Open(ctx, "restored-e2e-passphrase"); err != nil {
		t.Fatalf("open the restored keystore: %v", err)
	}
	// The client keeps its old CA file: the new server certificate is
	// signed by the restored CA.
	c, err = client.New(client.Config{Addresses: []string{n.url}, CACert: oldCAFile, Token: n.token, Timeout: 15 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range acked {
		s, err := c.GetSecret(ctx, "default", k, 0)
		if err != nil || string(s.Value) != v {
			t.Fatalf("%s after restore: %v", k, err)
		}
	}
	st, err := c.Status(ctx)
	if err != nil || st.Timeline.ID != 2 || st.Timeline.Restored == nil {
		t.Fatalf("status after restore: %+v %v", st.Timeline, err)
	}
	if st.AutoOpen {
		t.Fatal("auto-open came back with the restore")
	}
	// The first start takes a full backup to the scheduled destination.
	deadline := time.Now().Add(30 * time.Second)
	for {
		recs, _ := c.ListBackups(ctx, "nas")
		done := false
		for _, r := range recs {
			if r.Kind == "full" && r.Status == "DONE" && r.Started.After(st.Timeline.Restored.At) {
				done = true
			}
		}
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no full backup after the restore: %+v\n%s", recs, n.logs)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if out, err := coffer(t, nil, "restore", "--list", "--from", nas); err != nil || !regexp.MustCompile(`(?m)^2\s+full\s`).MatchString(out) {
		t.Fatalf("restore --list shows no timeline 2: %v\n%s", err, out)
	}
}
