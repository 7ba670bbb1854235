package backup

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/backup/dest"
)

// A catalog without drills stays format 1 (older builds read it); with
// drills it is format 2; both load; a newer format is refused naming both
// versions, and is not reported as corrupt (a rebuild would lose it).
func TestCatalogFormats(t *testing.T) {
	ctx := context.Background()
	d, err := dest.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	formatOf := func() string {
		rc, err := d.Open(ctx, CatalogFile, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		var b bytes.Buffer
		b.ReadFrom(rc)
		return b.String()
	}
	c := Catalog{ClusterID: "cl-a"}
	if err := SaveCatalog(ctx, d, c); err != nil {
		t.Fatal(err)
	}
	if s := formatOf(); !strings.Contains(s, `"format": 1`) {
		t.Fatalf("catalog without drills: %s", s)
	}
	c.AddDrill(Drill{Time: time.Now().UTC(), Result: "OK", BytesPerSecond: 1000})
	if err := SaveCatalog(ctx, d, c); err != nil {
		t.Fatal(err)
	}
	if s := formatOf(); !strings.Contains(s, `"format": 2`) {
		t.Fatalf("catalog with drills: %s", s)
	}
	got, err := LoadCatalog(ctx, d)
	if err != nil || got.LastGoodDrill() == nil || got.EstimateRestore(5000) != 5*time.Second {
		t.Fatalf("load format 2: %+v %v", got, err)
	}
	b := strings.Replace(formatOf(), `"format": 2`, `"format": 3`, 1)
	if err := d.Save(ctx, CatalogFile, strings.NewReader(b), int64(len(b))); err != nil {
		t.Fatal(err)
	}
	_, err = LoadCatalog(ctx, d)
	if !errors.Is(err, ErrCatalogNewer) || errors.Is(err, ErrCatalogCorrupt) || !strings.Contains(err.Error(), "format version 3, this build reads versions 1 to 2") {
		t.Fatalf("newer catalog: %v", err)
	}
}

func TestAddDrillKeepsNewest(t *testing.T) {
	var c Catalog
	for i := range MaxDrills + 5 {
		c.AddDrill(Drill{Result: "FAILED", Records: i})
	}
	if len(c.Drills) != MaxDrills || c.LastDrill().Records != MaxDrills+4 || c.LastGoodDrill() != nil {
		t.Fatalf("%d drills, last %+v", len(c.Drills), c.LastDrill())
	}
}
