package backup

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/backup/dest"
)

// TestClaimWriter: one live timeline writes to a destination; another is
// refused naming both, unless it takes the destination over. A catalog
// that does not record its writer has the timeline of its newest backup.
func TestClaimWriter(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	c := Catalog{ClusterID: "cl-a", Entries: []Entry{{Created: t0}, {Timeline: 2, Created: t0.Add(time.Hour)}}}
	if w := c.WriterTimeline(); w != 2 {
		t.Fatalf("writer of an old catalog: %d", w)
	}
	err := c.ClaimWriter(1, false, "dir:/nas")
	if !errors.Is(err, ErrOtherWriter) || !strings.Contains(err.Error(), "written by timeline 2 of cluster cl-a") || !strings.Contains(err.Error(), "on timeline 1") {
		t.Fatalf("a second writer: %v", err)
	}
	if c.Writer != 0 {
		t.Fatal("a refused claim changed the catalog")
	}
	if err := c.ClaimWriter(2, false, "dir:/nas"); err != nil || c.Writer != 2 {
		t.Fatalf("the writer itself: %v (writer %d)", err, c.Writer)
	}
	if err := c.ClaimWriter(3, true, "dir:/nas"); err != nil || c.Writer != 3 {
		t.Fatalf("take-over: %v (writer %d)", err, c.Writer)
	}
	if err := c.ClaimWriter(2, false, "dir:/nas"); !errors.Is(err, ErrOtherWriter) {
		t.Fatalf("the timeline taken over from: %v", err)
	}
	var fresh Catalog
	if err := fresh.ClaimWriter(5, false, "dir:/new"); err != nil || fresh.Writer != 5 {
		t.Fatalf("a new destination: %v", err)
	}
}

// TestRebuildKeepsTheWriter: the manifests do not say which timeline took
// a destination over; a rebuilt catalog keeps what the old one recorded.
func TestRebuildKeepsTheWriter(t *testing.T) {
	d, err := dest.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := SaveCatalog(ctx, d, Catalog{ClusterID: "cl-a", Writer: 3}); err != nil {
		t.Fatal(err)
	}
	c, _, err := Rebuild(ctx, d, "cl-a")
	if err != nil || c.Writer != 3 {
		t.Fatalf("rebuilt writer %d: %v", c.Writer, err)
	}
	if c, err := LoadCatalog(ctx, d); err != nil || c.Writer != 3 {
		t.Fatalf("stored writer %d: %v", c.Writer, err)
	}
}
