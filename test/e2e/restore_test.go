package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/client"
	"github.com/coffer-kms/coffer/internal/testutil"
)

// TestRestoreCLI is the data-disk-failure runbook with the real binary:
// backups and archived segments on a destination, the data dir deleted,
// "coffer restore" to a restore point into the same path, the server
// started on it and opened with the new passphrase. The CA comes back (the
// old CA file still verifies the server), the node is on timeline 2, it
// takes the destination over with a full backup at its first start (the
// restore said --take-over), and a restore into a dir with a running server
// is refused.
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
	// The real recovery: --take-over.
	args := []string{"restore", "--from", nas, "--data-dir", dir, "--to-restore-point", "before-mistake",
		"--recovery-passphrase-file", rp, "--passphrase-file", ks, "--config", n.config, "--take-over"}

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
	for _, want := range []string{"restore point \"before-mistake\"", "timeline        2", "Auto-open was not restored", "takes over every destination"} {
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
	// The first start takes the destination over with a full backup.
	testutil.WaitFor(t, 30*time.Second, "a full backup after the restore", func() error {
		recs, _ := c.ListBackups(ctx, "nas")
		for _, r := range recs {
			if r.Kind == "full" && r.Status == "DONE" && r.Started.After(st.Timeline.Restored.At) {
				return nil
			}
		}
		return fmt.Errorf("backups %+v", recs)
	})
	if out, err := coffer(t, nil, "restore", "--list", "--from", nas); err != nil || !regexp.MustCompile(`(?m)^2\s+full\s`).MatchString(out) {
		t.Fatalf("restore --list shows no timeline 2: %v\n%s", err, out)
	}
}

// envOf is the CLI environment for a node.
func envOf(n *node) []string {
	return []string{"COFFER_ADDR=" + n.url, "COFFER_CACERT=" + n.caFile, "COFFER_TOKEN=" + n.token}
}

// TestRestoreRehearsalHeld is the reported rehearsal: a live server backs up
// to nas; a restore into a scratch dir is started as a server. It writes
// nothing to nas (backups, schedules, archiving held; status says so)
// while the live server goes on; a restore without --timeline then follows
// the live timeline. Resumed as a copy, nas refuses it naming both
// timelines; taken over, nas is its and the live timeline is refused; a
// restore without --timeline then refuses the two diverged timelines.
func TestRestoreRehearsalHeld(t *testing.T) {
	base := t.TempDir()
	nas := filepath.Join(base, "nas")
	live := initialisedNode(t, filepath.Join(base, "live"), "backup:\n  check_interval: 1s\n")
	ctx := context.Background()
	c := live.https()
	if _, err := c.SetRecoveryPassphrase(ctx, "", "e2e-recovery-passphrase"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddDestination(ctx, client.DestinationConfig{Name: "nas", Kind: "dir", Path: nas, Archiving: true}); err != nil {
		t.Fatal(err)
	}
	putMany(t, c, "before", 5)
	if rec, err := c.RunBackup(ctx, "nas", "full", true); err != nil || rec.Status != "DONE" {
		t.Fatalf("full: %+v %v", rec, err)
	}
	putMany(t, c, "after", 5)
	if err := c.ArchiveJournal(ctx); err != nil {
		t.Fatal(err)
	}

	// The rehearsal, as the README says: restore into a scratch dir, start it.
	rp, ks := filepath.Join(base, "rp.txt"), filepath.Join(base, "ks.txt")
	os.WriteFile(rp, []byte("e2e-recovery-passphrase\n"), 0o600)
	os.WriteFile(ks, []byte("rehearsal-e2e-passphrase\n"), 0o600)
	scratch := filepath.Join(base, "rehearsal")
	restoreArgs := func(dir string, extra ...string) []string {
		return append([]string{"restore", "--from", nas, "--data-dir", dir, "--recovery-passphrase-file", rp, "--passphrase-file", ks}, extra...)
	}
	out, err := coffer(t, nil, restoreArgs(scratch)...)
	if err != nil || !strings.Contains(out, "HELD") || !strings.Contains(out, "resume-after-restore --take-over") {
		t.Fatalf("rehearsal restore: %v\n%s", err, out)
	}
	nasBefore := treeOf(t, nas)
	reh := newNode(t, scratch, "backup:\n  check_interval: 1s\n")
	reh.start()
	t.Cleanup(reh.stop)
	reh.waitState("sealed")
	if err := reh.local().Open(ctx, "rehearsal-e2e-passphrase"); err != nil {
		t.Fatal(err)
	}
	reh.token = live.token // the restored state has the live server's root token
	rc := reh.https()
	st, err := rc.Status(ctx)
	if err != nil || !st.Backup.Held || st.Timeline.ID != 2 {
		t.Fatalf("rehearsal status: held %v timeline %d %v", st.Backup.Held, st.Timeline.ID, err)
	}
	if out, err := coffer(t, envOf(reh), "status"); err != nil || !strings.Contains(out, "HELD") || !strings.Contains(out, "resume-after-restore --take-over") {
		t.Fatalf("coffer status of the rehearsal: %v\n%s", err, out)
	}
	// A schedule due now and a closed segment: the loop sees both (nas
	// shows the pending segment) and writes neither.
	if _, err := rc.AddSchedule(ctx, client.ScheduleConfig{Name: "nightly", Destination: "nas", Type: "periodic", Every: "1h"}); err != nil {
		t.Fatal(err)
	}
	putMany(t, rc, "rehearsal", 3)
	if _, err := rc.RotateJournal(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, func() bool {
		st, err := rc.Status(ctx)
		if err != nil {
			return false
		}
		for _, d := range st.Backup.Destinations {
			if d.Name == "nas" && d.Pending > 0 {
				return true
			}
		}
		return false
	})
	if out, err := coffer(t, envOf(reh), "backup", "run", "--destination", "nas", "--full"); err == nil || !strings.Contains(out, "held after a restore") {
		t.Fatalf("backup run on the rehearsal: %v\n%s", err, out)
	}
	if after := treeOf(t, nas); !slices.Equal(nasBefore, after) {
		t.Fatalf("the rehearsal wrote to nas:\nbefore %v\nafter  %v", nasBefore, after)
	}

	// The live server goes on; restore without --timeline follows it.
	putMany(t, c, "live-more", 5)
	if rec, err := c.RunBackup(ctx, "nas", "incremental", true); err != nil || rec.Status != "DONE" {
		t.Fatalf("live incremental after the rehearsal: %+v %v", rec, err)
	}
	liveIdx := waitArchived(t, c)
	out, err = coffer(t, nil, restoreArgs(filepath.Join(base, "check1"), "--format", "json")...)
	if err != nil {
		t.Fatalf("restore latest: %v\n%s", err, out)
	}
	var sum struct {
		Index  uint64 `json:"index"`
		FromTL uint32 `json:"from_timeline"`
	}
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &sum); err != nil || sum.FromTL != 1 || sum.Index < liveIdx {
		t.Fatalf("restore latest picked timeline %d to index %d, the live timeline 1 reaches %d (%v)\n%s", sum.FromTL, sum.Index, liveIdx, err, out)
	}

	// Resumed as a copy: nas is timeline 1's and refuses it, naming both.
	if out, err := coffer(t, envOf(reh), "backup", "resume-after-restore"); err != nil {
		t.Fatalf("resume-after-restore: %v\n%s", err, out)
	}
	out, err = coffer(t, envOf(reh), "backup", "run", "--destination", "nas", "--full")
	if err == nil || !strings.Contains(out, "written by timeline 1") || !strings.Contains(out, "on timeline 2") {
		t.Fatalf("a resumed copy writing to the live destination: %v\n%s", err, out)
	}

	// Taken over: a full of timeline 2 claims nas; timeline 1 is refused.
	if out, err := coffer(t, envOf(reh), "backup", "resume-after-restore", "--take-over"); err != nil || !strings.Contains(out, "takes over") {
		t.Fatalf("take-over: %v\n%s", err, out)
	}
	waitFor(t, 60*time.Second, func() bool {
		recs, _ := rc.ListBackups(ctx, "nas")
		for _, r := range recs {
			if r.Kind == "full" && r.Status == "DONE" && r.Timeline == 2 {
				return true
			}
		}
		return false
	})
	out, err = coffer(t, envOf(live), "backup", "run", "--destination", "nas", "--full")
	if err == nil || !strings.Contains(out, "written by timeline 2") || !strings.Contains(out, "on timeline 1") {
		t.Fatalf("the live timeline after the take-over: %v\n%s", err, out)
	}
	out, err = coffer(t, nil, "restore", "--list", "--from", nas)
	if err != nil || !regexp.MustCompile(`(?m)^2\s+1 at \d+\s+\d+\s+\S+\s+\d+\s+yes$`).MatchString(out) || !regexp.MustCompile(`(?m)^TIMELINE\s+FROM\s+REACHES\s+LAST WRITE`).MatchString(out) {
		t.Fatalf("restore --list: %v\n%s", err, out)
	}
	out, err = coffer(t, nil, restoreArgs(filepath.Join(base, "check2"))...)
	if err == nil || !strings.Contains(out, "have diverged") || !strings.Contains(out, "timeline 1 reaches") || !strings.Contains(out, "timeline 2 (from timeline 1") {
		t.Fatalf("restore latest with diverged timelines: %v\n%s", err, out)
	}
	if out, err := coffer(t, nil, restoreArgs(filepath.Join(base, "check3"), "--timeline", "2")...); err != nil || !strings.Contains(out, "restored from timeline 2") {
		t.Fatalf("--timeline 2: %v\n%s", err, out)
	}
}

// treeOf lists the files under dir with their sizes.
func treeOf(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			out = append(out, fmt.Sprintf("%s %d", strings.TrimPrefix(p, dir), fi.Size()))
		}
		return nil
	})
	return out
}

// waitArchived closes the open segment, ships it and returns the last
// index that reached the destination.
func waitArchived(t *testing.T, c *client.Client) uint64 {
	t.Helper()
	ctx := context.Background()
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	idx := st.Journal.LastIndex
	if err := c.ArchiveJournal(ctx); err != nil {
		t.Fatal(err)
	}
	return idx
}

// TestRestoredNodeKilledAtFirstStartIsJoined: the restore writes no raft
// snapshot; the restored node writes it at its first start, in the
// background. Killed right after that start, the node starts again from
// what the kill left, serves every write, becomes a cluster and is joined
// by a new node, which is sent the snapshot and the writes after it.
func TestRestoredNodeKilledAtFirstStartIsJoined(t *testing.T) {
	base := t.TempDir()
	n := clusterNode(t, base, 1, "")
	n.start()
	t.Cleanup(n.stop)
	n.initialise()
	ctx := context.Background()
	c := n.https()
	nas := filepath.Join(base, "nas")
	if _, err := c.SetRecoveryPassphrase(ctx, "", "e2e-recovery-passphrase"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddDestination(ctx, client.DestinationConfig{Name: "nas", Kind: "dir", Path: nas, Archiving: true}); err != nil {
		t.Fatal(err)
	}
	acked := putMany(t, c, "before", 20)
	if rec, err := c.RunBackup(ctx, "nas", "full", true); err != nil || rec.Status != "DONE" {
		t.Fatalf("full: %+v %v", rec, err)
	}
	for k, v := range putMany(t, c, "after", 10) {
		acked[k] = v
	}
	if err := c.ArchiveJournal(ctx); err != nil {
		t.Fatal(err)
	}
	n.stop()
	if err := os.RemoveAll(n.dataDir); err != nil {
		t.Fatal(err)
	}
	rp := filepath.Join(base, "rp.txt")
	ks := filepath.Join(base, "ks.txt")
	os.WriteFile(rp, []byte("e2e-recovery-passphrase\n"), 0o600)
	os.WriteFile(ks, []byte(testPassphrase+"\n"), 0o600)
	if out, err := coffer(t, nil, "restore", "--from", nas, "--data-dir", n.dataDir, "--recovery-passphrase-file", rp,
		"--passphrase-file", ks, "--config", n.config, "--take-over"); err != nil {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	if snaps, _ := filepath.Glob(filepath.Join(n.dataDir, "raft", "snapshots", "*")); len(snaps) > 0 {
		t.Fatalf("the restore wrote raft snapshots %q", snaps)
	}
	if out, err := coffer(t, nil, "check", "--data-dir", n.dataDir, "--passphrase-file", ks); err != nil {
		t.Fatalf("check of the restored dir: %v\n%s", err, out)
	}

	n.start()
	n.waitState("sealed")
	if err := n.local().Open(ctx, testPassphrase); err != nil {
		t.Fatalf("open the restored keystore: %v", err)
	}
	n.kill9()
	n.start()
	n.waitState("sealed")
	if err := n.local().Open(ctx, testPassphrase); err != nil {
		t.Fatalf("open after the kill: %v\n%s", err, n.logs)
	}
	c = n.https()
	for k, v := range putMany(t, c, "restarted", 5) {
		acked[k] = v
	}
	if out, err := coffer(t, nil, "cluster", "init", "--data-dir", n.dataDir); err != nil || !strings.Contains(out, "leads, raft at ") {
		t.Fatalf("cluster init: %v\n%s", err, out)
	}
	tok, err := c.CreateJoinToken(ctx, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	n2 := clusterNode(t, base, 2, "")
	n2.token = n.token
	joinNode(t, n2, n.url, tok.Token)
	waitVoters(t, c, 2)
	c2 := n2.https()
	for k, v := range acked {
		s, err := c2.GetSecret(ctx, "default", k, 0)
		if err != nil || string(s.Value) != v {
			t.Fatalf("%s on the joined node: %v", k, err)
		}
	}
}
