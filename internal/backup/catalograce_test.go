package backup

import (
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/backup/bundle"
	"github.com/coffer-kms/coffer/internal/backup/dest"
	"github.com/coffer-kms/coffer/internal/state"
)

// racingSource is benchSource whose state copy starts after during ran:
// another writer of the destination's catalog (a new leader archiving, a
// drill on another node) while this backup is being taken.
type racingSource struct {
	benchSource
	during func()
}

func (r racingSource) WriteState(open func(state.BackupPoint, int64) (io.Writer, error)) (state.BackupPoint, error) {
	r.during()
	return r.benchSource.WriteState(open)
}

// A backup lists itself in the catalog as it is when the file is saved: an
// entry another node added while the backup was taken stays listed (it was
// dropped when the catalog read at the start was written back).
func TestBackupKeepsCatalogEntriesAddedMeanwhile(t *testing.T) {
	dir := t.TempDir()
	st := buildState(t, filepath.Join(dir, "state.db"), 10)
	defer st.Close()
	d, err := dest.NewDir(filepath.Join(dir, "dest"))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx := context.Background()
	seg := Entry{ID: "seg", Kind: KindSegment, File: ArchiveDir + "/00000000000000000001-00000000000000000005" + FileSuffix,
		FirstIndex: 1, LastIndex: 5, Created: time.Now().UTC()}
	src := racingSource{benchSource: benchSource{st: st, dir: dir}, during: func() {
		c, err := LoadCatalog(ctx, d)
		if err != nil {
			t.Error(err)
			return
		}
		c.ClusterID = "cl-bench" // claimed by the cluster's first backup or the destination's probe
		c.Entries = append(c.Entries, seg)
		c.AddDrill(Drill{Result: "OK", Time: time.Now().UTC()})
		if err := SaveCatalog(ctx, d, c); err != nil {
			t.Error(err)
		}
	}}
	_, rcpt, err := bundle.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	e, err := Run(ctx, src, d, KindFull, Options{ID: NewID(time.Now(), "00000001"), Encryption: bundle.Encryption{Recipients: []string{rcpt}}, StagingDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	c, err := LoadCatalog(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]bool{}
	for _, x := range c.Entries {
		files[x.File] = true
	}
	if !files[e.File] || !files[seg.File] || c.LastDrill() == nil {
		t.Fatalf("catalog after the backup lists %v, drills %d: want %s and %s and the drill", files, len(c.Drills), e.File, seg.File)
	}
}

// A file saved again under a name the catalog lists (a segment shipped
// again after its archive mark was not recorded) is not removed when the
// catalog cannot be read or written afterwards: the catalog still lists it.
func TestListedFileSavedAgainStaysWhenTheCatalogFails(t *testing.T) {
	dir := t.TempDir()
	st := buildState(t, filepath.Join(dir, "state.db"), 10)
	defer st.Close()
	d, err := dest.NewDir(filepath.Join(dir, "dest"))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx := context.Background()
	id := NewID(time.Now(), "00000001")
	name := FileName(KindFull, id)
	if err := d.Save(ctx, name, strings.NewReader("listed"), 6); err != nil {
		t.Fatal(err)
	}
	listed := Catalog{ClusterID: "cl-bench", Entries: []Entry{{ID: id, Kind: KindFull, File: name, Created: time.Now().UTC()}}}
	if err := SaveCatalog(ctx, d, listed); err != nil {
		t.Fatal(err)
	}
	src := racingSource{benchSource: benchSource{st: st, dir: dir}, during: func() {
		// The catalog turns unreadable while the backup is taken.
		if err := d.Save(ctx, CatalogFile, strings.NewReader("{"), 1); err != nil {
			t.Error(err)
		}
	}}
	_, rcpt, err := bundle.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Run(ctx, src, d, KindFull, Options{ID: id, Encryption: bundle.Encryption{Recipients: []string{rcpt}}, StagingDir: t.TempDir()}); err == nil {
		t.Fatal("a backup whose catalog turned unreadable succeeded")
	}
	if _, err := d.Stat(ctx, name); err != nil {
		t.Fatalf("the file the catalog lists was removed: %v", err)
	}
}
