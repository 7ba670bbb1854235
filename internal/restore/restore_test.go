package restore_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coffer-kms/coffer/internal/restore"
	"github.com/coffer-kms/coffer/internal/service"
)

// TestRestoreLatestAndOpen: full + writes + archived segments restore to the
// latest point; the restored node opens with the new passphrase, serves
// every secret, is on timeline 2, and takes writes.
func TestRestoreLatestAndOpen(t *testing.T) {
	e := newEnv(t, true)
	e.put("a", "a1")
	e.backup("full")
	e.put("a", "a2")
	e.put("b", "b1")
	e.archive()
	e.put("c", "c1")
	// Latest is the last archived record: the archive mark that shipping
	// writes lands in the next, unarchived segment.
	idx, want := e.digest()
	e.archive()

	sum, dir, err := e.restoreTo(Target{})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Index != idx || sum.Digest != want {
		t.Fatalf("restored index %d digest %s, want %d %s", sum.Index, sum.Digest, idx, want)
	}
	if sum.Timeline.ID != 2 || len(sum.Timeline.History) != 1 || sum.Timeline.History[0].ID != 1 || sum.Timeline.History[0].Upto != idx {
		t.Fatalf("timeline %+v", sum.Timeline)
	}
	for _, p := range []string{"keystore/keystore.ks", "raft", "journal", "state.db", "node-id"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			t.Fatalf("restored dir lacks %s: %v", p, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "keystore", "keystore.aks")); err == nil {
		t.Fatal("auto-open was restored")
	}
	e.s.Close()
	s, ctx := openRestored(t, dir)
	if v := secretValue(t, s, ctx, "a", 1); v != "a1" {
		t.Fatalf("a v1 = %q", v)
	}
	if v := secretValue(t, s, ctx, "a", 0); v != "a2" {
		t.Fatalf("a latest = %q", v)
	}
	if v := secretValue(t, s, ctx, "c", 0); v != "c1" {
		t.Fatalf("c = %q", v)
	}
	if _, err := s.PutSecret(ctx, service.DefaultWallet, "after", []byte("x")); err != nil {
		t.Fatalf("write after restore: %v", err)
	}
	st := s.Status()
	if st.Timeline.ID != 2 || st.Timeline.Restored == nil {
		t.Fatalf("status timeline %+v", st.Timeline)
	}
}

// TestRestoreRefusesNonEmptyDir: a non-empty dir is refused, --force moves
// it aside.
func TestRestoreRefusesNonEmptyDir(t *testing.T) {
	e := newEnv(t, false)
	e.put("a", "a1")
	e.backup("full")
	dir := filepath.Join(t.TempDir(), "restored")
	os.MkdirAll(dir, 0o700)
	os.WriteFile(filepath.Join(dir, "keep"), []byte("x"), 0o600)
	_, _, err := e.restoreTo(Target{}, func(o *restore.Options) { o.DataDir = dir })
	if !errors.Is(err, restore.ErrTargetDir) || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("non-empty dir: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "keep")); err != nil || string(b) != "x" {
		t.Fatal("the refused dir was touched")
	}
	sum, _, err := e.restoreTo(Target{}, func(o *restore.Options) { o.DataDir = dir; o.Force = true })
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(sum.MovedAside, "keep")); err != nil || string(b) != "x" {
		t.Fatalf("moved-aside dir %q: %v", sum.MovedAside, err)
	}
}
