package testserver

import (
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"testing"

	"github.com/coffer-kms/coffer/internal/testutil"
)

// TestEnsureUserCreates: the first call creates the user and returns its ids
// (a shadowed error once made the creating run fail with "unknown user"
// although useradd had succeeded); a second call finds it.
func TestEnsureUserCreates(t *testing.T) {
	if os.Geteuid() != 0 {
		testutil.Unavailable(t, "creating a system user needs root")
	}
	if _, err := exec.LookPath("useradd"); err != nil {
		testutil.Unavailable(t, "useradd missing: apt-get install passwd")
	}
	name := "coffer-t" + randomHex(4)
	if _, err := user.Lookup(name); err == nil {
		t.Fatalf("user %s already exists", name)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("userdel", name).CombinedOutput(); err != nil {
			t.Errorf("userdel %s: %v: %s", name, err, out)
		}
	})
	uid, gid, err := ensureUser(name)
	if err != nil {
		t.Fatalf("creating run: %v", err)
	}
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatalf("user %s not created: %v", name, err)
	}
	if strconv.Itoa(uid) != u.Uid || strconv.Itoa(gid) != u.Gid {
		t.Fatalf("ensureUser = %d:%d, passwd says %s:%s", uid, gid, u.Uid, u.Gid)
	}
	uid2, gid2, err := ensureUser(name)
	if err != nil || uid2 != uid || gid2 != gid {
		t.Fatalf("second call = %d:%d, %v; want %d:%d", uid2, gid2, err, uid, gid)
	}
}
