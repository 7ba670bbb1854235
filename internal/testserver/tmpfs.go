package testserver

import (
	"os"
	"os/exec"
	"strconv"
	"testing"

	"github.com/coffer-kms/coffer/internal/testutil"
)

// SmallTmpfs mounts a tmpfs of sizeBytes (rounded up to pages) on a new temp
// dir and unmounts it when the test ends: a disk that fills up. It needs
// root; without it the test is skipped, or fails under CI=true.
func SmallTmpfs(t testing.TB, sizeBytes int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		testutil.Unavailable(t, "SmallTmpfs needs root to mount a tmpfs")
	}
	dir := t.TempDir()
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+strconv.FormatInt(sizeBytes, 10)+",mode=0700", // #nosec G204 -- test setup: a fixed command; the size and directory come from the test
		"coffer-test", dir).CombinedOutput()
	if err != nil {
		testutil.Unavailable(t, "SmallTmpfs: mount -t tmpfs failed (no CAP_SYS_ADMIN?): %v: %s", err, out)
	}
	// Runs before t.TempDir's removal (cleanups run last first).
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil { // #nosec G204 -- test setup: a fixed command on the test's own directory
			t.Logf("umount %s: %v: %s", dir, err, out)
			if err := exec.Command("umount", "-l", dir).Run(); err != nil { // #nosec G204 -- test setup: a fixed command on the test's own directory
				t.Logf("umount -l %s: %v", dir, err)
			}
		}
	})
	return dir
}
