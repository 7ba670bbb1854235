package service_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/service"
	"github.com/coffer-kms/coffer/internal/service/servicetest"
)

func TestDiskLevel(t *testing.T) {
	for _, tc := range []struct {
		pct  float64
		want string
	}{{0, "ok"}, {79.9, "ok"}, {80, "warning"}, {94.9, "warning"}, {95, "error"}, {100, "error"}} {
		if got := service.DiskLevel(tc.pct); got != tc.want {
			t.Errorf("DiskLevel(%v) = %s, want %s", tc.pct, got, tc.want)
		}
	}
}

// TestStatusDisks: status shows the data dir, the journal dir, the mirror
// and each dir destination separately, each with its filesystem's use and
// level (warning at 80 %, error at 95 %), through the statfs seam; a
// failing statfs is "unknown" with the reason.
func TestStatusDisks(t *testing.T) {
	mirror, nas := t.TempDir(), t.TempDir()
	var mu sync.Mutex
	used := map[string]uint64{} // path -> used percent of a 1000-byte filesystem
	fake := func(path string) (uint64, uint64, error) {
		mu.Lock()
		defer mu.Unlock()
		for p, u := range used {
			if path == p {
				return 1000, 1000 - 10*u, nil
			}
		}
		return 0, 0, errors.New("no such filesystem")
	}
	var dataDir string
	s := servicetest.New(t, func(c *service.Config) {
		c.Statfs, c.NoAutoBackup, c.BackupScryptWorkFactor = fake, true, 10
		dataDir = c.DataDir
	})
	ctx := service.WithIdentity(context.Background(), service.LocalRoot())
	if _, err := s.Init(ctx, service.Identity{Local: true}, []byte("disk-test-passphrase")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetRecoveryPassphrase(ctx, nil, []byte("recovery passphrase for tests")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Backups.AddDestination(ctx, service.DestinationConfig{Name: "mirror", Kind: "dir", Path: mirror, Mirror: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Backups.AddDestination(ctx, service.DestinationConfig{Name: "nas", Kind: "dir", Path: nas}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	used[dataDir], used[filepath.Join(dataDir, "journal")], used[mirror] = 50, 80, 95
	mu.Unlock()
	got := map[string]service.DiskUse{}
	for _, d := range s.Status().Disks {
		got[d.What] = d
	}
	for what, want := range map[string]struct {
		path, level string
		pct         float64
	}{
		"data":               {dataDir, "ok", 50},
		"journal":            {filepath.Join(dataDir, "journal"), "warning", 80},
		"mirror":             {mirror, "error", 95},
		"destination:mirror": {mirror, "error", 95},
		"destination:nas":    {nas, "unknown", 0},
	} {
		d, ok := got[what]
		if !ok {
			t.Errorf("status shows no disk %q: %+v", what, got)
			continue
		}
		if d.Path != want.path || d.Level != want.level || d.UsedPercent != want.pct {
			t.Errorf("%s: %+v, want %s at %v %% on %s", what, d, want.level, want.pct, want.path)
		}
	}
	if d := got["destination:nas"]; !strings.Contains(d.Error, "no such filesystem") {
		t.Errorf("a failing statfs: %+v", d)
	}
	if d := got["data"]; d.Total != 1000 || d.Free != 500 {
		t.Errorf("data: %+v", d)
	}
	filling := map[string]bool{}
	for _, w := range s.Status().Warnings {
		if w.Code == service.AlertDiskFilling {
			if w.Runbook == "" {
				t.Errorf("disk_filling without a runbook: %+v", w)
			}
			for _, what := range []string{"data", "journal", "mirror"} {
				if strings.HasPrefix(w.Message, "the "+what+" directory") {
					filling[what] = true
				}
			}
		}
	}
	if !filling["journal"] || !filling["mirror"] || filling["data"] {
		t.Errorf("disk_filling warnings for %v, want journal (80 %%) and mirror (95 %%), not data (50 %%)", filling)
	}
}

// A filesystem whose statfs hangs (a network mount whose server is gone)
// does not hang status: the directory is shown as unknown, saying so, and
// one statfs stays in flight however often status is asked.
func TestStatusDiskOfAHungMount(t *testing.T) {
	release := make(chan struct{})
	var calls atomic.Int32
	var journalDir string
	s := servicetest.New(t, func(c *service.Config) {
		journalDir = filepath.Join(c.DataDir, "journal")
		c.Statfs = func(path string) (uint64, uint64, error) {
			if path == journalDir {
				calls.Add(1)
				<-release
			}
			return 1000, 900, nil
		}
	})
	defer close(release)
	for range 2 {
		start := time.Now()
		var j service.DiskUse
		for _, d := range s.Status().Disks {
			if d.What == "journal" {
				j = d
			}
		}
		if j.Level != "unknown" || !strings.Contains(j.Error, "has not answered") {
			t.Fatalf("journal on a hung mount: %+v", j)
		}
		if took := time.Since(start); took > 10*time.Second {
			t.Fatalf("status took %s with a hung mount", took)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("%d statfs calls in flight on the hung mount, want 1", n)
	}
}
