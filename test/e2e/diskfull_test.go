package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/client"
	"github.com/coffer-kms/coffer/internal/testutil"
)

// mountTmpfs mounts a small tmpfs and unmounts it at the end of the test.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	requireRoot(t, "mounts a small tmpfs to fill the disk")
	dir := filepath.Join(t.TempDir(), "mnt")
	os.MkdirAll(dir, 0o700)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs (needs root and mount(8) from util-linux): %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	return dir
}

// fill writes a file until the filesystem is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill: %v", err)
			}
			return
		}
	}
}

// diskFullScenario fills a small tmpfs holding the data dir, or, with
// onTmpfs set, only those parts of it (symlinked there), so that each write
// path — raft log, state, journal — meets ENOSPC on its own.
func diskFullScenario(t *testing.T, minFree int64, onTmpfs ...string) {
	mnt := mountTmpfs(t, "48m")
	dir := filepath.Join(mnt, "data")
	if len(onTmpfs) > 0 {
		dir = filepath.Join(t.TempDir(), "data")
		os.MkdirAll(dir, 0o700)
		for _, part := range onTmpfs {
			target := filepath.Join(mnt, part)
			if filepath.Ext(part) == "" {
				os.MkdirAll(target, 0o700)
			}
			if err := os.Symlink(target, filepath.Join(dir, part)); err != nil {
				t.Fatal(err)
			}
		}
	}
	n := initialisedNode(t, dir, fmt.Sprintf("storage:\n  min_free_bytes: %d\n  write_retry_delay: 300ms\n", minFree))
	ctx := context.Background()
	c := n.https()
	acked := putMany(t, c, "pre", 200)

	filler := filepath.Join(mnt, "filler")
	fill(t, filler)

	// Writes fail cleanly (or, while free pages last, succeed and are kept).
	refused := 0
	for i := 0; i < 300 && refused < 20; i++ {
		name := fmt.Sprintf("full-%d", i)
		_, err := c.PutSecret(ctx, "default", name, []byte("v-"+name))
		switch {
		case err == nil:
			acked[name] = "v-" + name
		case client.IsCode(err, "writes_unavailable"):
			if refused == 0 {
				t.Logf("first refusal after %d writes on the full disk: %v", i, err)
			}
			refused++
			if i == 0 && minFree > 0 && !strings.Contains(err.Error(), "free") {
				t.Fatalf("refusal does not say why: %v", err)
			}
		default:
			t.Fatalf("write on a full disk: want writes_unavailable, got %v", err)
		}
	}
	if refused == 0 {
		t.Fatal("no write was refused on a full disk")
	}
	// Reads keep working, and status shows the alert.
	verifyAll(t, n, acked)
	st, err := n.local().Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Writable || len(st.Alerts) == 0 {
		t.Fatalf("status on a full disk should show an alert: %+v", st)
	}
	t.Logf("alert: %+v", st.Alerts[0])
	out, _ := coffer(t, nil, "status", "--data-dir", dir)
	if !strings.Contains(out, "ALERT") {
		t.Fatalf("coffer status does not show the alert:\n%s", out)
	}

	// Free the space: writes resume after the retry delay.
	os.Remove(filepath.Join(mnt, "filler"))
	i := 0
	if err := testutil.Poll(30*time.Second, func() error {
		name := fmt.Sprintf("after-%d", i)
		i++
		if _, err := c.PutSecret(ctx, "default", name, []byte("v-"+name)); err != nil {
			return err
		}
		acked[name] = "v-" + name
		return nil
	}); err != nil {
		t.Fatalf("writes did not resume after freeing space: %v\n%s", err, n.logs)
	}
	verifyAll(t, n, acked)
	t.Logf("writes resumed; %d acknowledged writes intact", len(acked))
	st, _ = n.local().Status(ctx)
	if !st.Writable {
		t.Fatalf("still not writable after recovery: %+v", st.Alerts)
	}
	n.stop()
	if out, err := coffer(t, nil, "journal", "verify", "--data-dir", dir); err != nil {
		t.Fatalf("journal after disk full: %v\n%s", err, out)
	}
	// And a restart keeps everything.
	n.start()
	n.waitState("open")
	verifyAll(t, n, acked)
}

// TestDiskFullGuard: the free-space guard refuses writes before the disk is full.
func TestDiskFullGuard(t *testing.T) { diskFullScenario(t, 4<<20) }

// TestDiskFullENOSPC: with no guard, the real ENOSPC path: raft log, state and
// journal writes fail, nothing half-written, writes resume when space returns.
func TestDiskFullENOSPC(t *testing.T) { diskFullScenario(t, 0) }

// TestDiskFullStateOnly: the raft log has room, the state database does not:
// the state machine pauses and retries the batch; nothing is lost.
func TestDiskFullStateOnly(t *testing.T) { diskFullScenario(t, 0, "state.db") }

// TestDiskFullJournalOnly: only the journal's filesystem is full: the segment
// is cut back, writes are refused, and the missing records are rebuilt from the
// raft log once there is room.
func TestDiskFullJournalOnly(t *testing.T) { diskFullScenario(t, 0, "journal") }

// TestStopWhileStateWriteFails: a fast stop must not hang while the state
// machine is retrying a failed write (it used to wait forever); after space
// returns, the next start applies the committed command and loses nothing.
func TestStopWhileStateWriteFails(t *testing.T) {
	mnt := mountTmpfs(t, "48m")
	dir := filepath.Join(t.TempDir(), "data")
	os.MkdirAll(dir, 0o700)
	if err := os.Symlink(filepath.Join(mnt, "state.db"), filepath.Join(dir, "state.db")); err != nil {
		t.Fatal(err)
	}
	n := initialisedNode(t, dir, "storage:\n  min_free_bytes: 0\n  write_retry_delay: 300ms\n")
	ctx := context.Background()
	c := n.https()
	acked := putMany(t, c, "pre", 100)
	fill(t, filepath.Join(mnt, "filler"))
	go func() {
		for i := 0; i < 50; i++ {
			c.PutSecret(ctx, "default", fmt.Sprintf("pending-%d", i), []byte("x"))
		}
	}()
	waitFor(t, 30*time.Second, func() bool {
		st, err := n.local().Status(ctx)
		if err != nil {
			return false
		}
		for _, a := range st.Alerts {
			if a.Component == "state" {
				return true
			}
		}
		return false
	})
	start := time.Now()
	out, err := coffer(t, nil, "stop", "-m", "fast", "--data-dir", dir, "--wait", "20s")
	if err != nil {
		t.Fatalf("fast stop while the state write fails: %v\n%s\n%s", err, out, n.logs)
	}
	t.Logf("stopped in %s while the state write was failing", time.Since(start).Round(time.Millisecond))
	n.waitExit(10 * time.Second)
	os.Remove(filepath.Join(mnt, "filler"))
	n.start()
	n.waitState("open")
	verifyAll(t, n, acked)
	if _, err := n.https().PutSecret(ctx, "default", "after", []byte("ok")); err != nil {
		t.Fatal(err)
	}
	n.stop()
	if out, err := coffer(t, nil, "journal", "verify", "--data-dir", dir); err != nil {
		t.Fatalf("journal: %v\n%s", err, out)
	}
}
