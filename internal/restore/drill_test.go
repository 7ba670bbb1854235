package restore_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/coffer-kms/coffer/internal/backup"
	"github.com/coffer-kms/coffer/internal/backup/dest"
	"github.com/coffer-kms/coffer/internal/restore"
	"github.com/coffer-kms/coffer/internal/service"
)

func (e *env) drill() backup.Drill {
	e.t.Helper()
	d, err := dest.NewDir(e.nas)
	if err != nil {
		e.t.Fatal(err)
	}
	defer d.Close()
	work := e.t.TempDir()
	res, err := restore.Drill(context.Background(), d, restore.DrillOptions{Passphrase: []byte(rcPass), Work: work, KDF: cheapKDF})
	if err != nil {
		e.t.Fatal(err)
	}
	if left, _ := os.ReadDir(work); len(left) != 0 {
		e.t.Fatalf("the drill left %d entries in its work dir", len(left))
	}
	return res
}

func TestDrillRestoresNewestChainAndMeasuresSpeed(t *testing.T) {
	e := newEnv(t, true)
	e.put("a", "a1")
	e.backup("full")
	e.put("b", "b1")
	e.backup("incremental")
	e.put("c", "c1")
	idx, _ := e.digest()
	e.archive()

	res := e.drill()
	if !res.OK() {
		t.Fatalf("drill failed: %s", res.Reason)
	}
	if res.Index < idx || res.Files < 2 || res.Bytes <= 0 || res.Records <= 0 {
		t.Fatalf("drill reached index %d (want >= %d) from %d files, %d bytes, %d records", res.Index, idx, res.Files, res.Bytes, res.Records)
	}
	if res.BytesPerSecond <= 0 || res.RecordsPerSecond <= 0 || res.Duration <= 0 {
		t.Fatalf("no speed measured: %+v", res)
	}
}

func TestDrillFailsOnDamagedBackup(t *testing.T) {
	e := newEnv(t, true)
	e.put("a", "a1")
	e.backup("full")
	e.put("b", "b1")
	e.archive()
	full := files(t, e.nas, "backups/*-full.cbk")[0]
	st, err := os.Stat(full)
	if err != nil {
		t.Fatal(err)
	}
	flip(t, full, st.Size()/2)
	res := e.drill()
	if res.OK() || !strings.Contains(res.Reason, "restore") {
		t.Fatalf("drill of a damaged full: %+v", res)
	}
}

func TestDrillWithoutFull(t *testing.T) {
	e := newEnv(t, true)
	d, err := dest.NewDir(e.nas)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := restore.Drill(context.Background(), d, restore.DrillOptions{Passphrase: []byte(rcPass), Work: t.TempDir()}); !errors.Is(err, restore.ErrNoChain) {
		t.Fatalf("drill on an empty destination: %v", err)
	}
}

// pruneDest is a destination that, before the first backup file is read,
// calls during once (a full finishing and retention pruning meanwhile).
type pruneDest struct {
	dest.Destination
	once   sync.Once
	during func()
}

func (p *pruneDest) Open(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	if strings.HasPrefix(name, "backups/") {
		p.once.Do(p.during)
	}
	return p.Destination.Open(ctx, name, offset, length)
}

// A chain that retention removes while it is drilled (a full finished
// meanwhile and keep-fulls is 1) is no failed drill: the drill runs again
// on the new newest chain.
func TestDrillOfAChainPrunedMeanwhileRunsOnTheNewChain(t *testing.T) {
	e := newEnv(t, false)
	local := t.TempDir()
	e.must(e.s.Backups.AddDestination(e.ctx, service.DestinationConfig{Name: "keep1", Kind: "dir", Path: local, KeepFulls: 1}))
	full := func() string {
		rec, err := e.s.Backups.RunBackup(e.ctx, service.BackupRequest{Destination: "keep1", Mode: "full", Wait: true})
		if err != nil || rec.Status != "DONE" {
			t.Fatalf("full backup: %+v %v", rec, err)
		}
		return rec.ID
	}
	e.put("a", "a1")
	old := full()
	e.put("b", "b1")
	var second string
	d, err := dest.NewDir(local)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	pd := &pruneDest{Destination: d, during: func() { second = full() }}
	res, err := restore.Drill(context.Background(), pd, restore.DrillOptions{Passphrase: []byte(rcPass), Work: t.TempDir(), KDF: cheapKDF})
	if err != nil {
		t.Fatal(err)
	}
	if left, _ := filepath.Glob(filepath.Join(local, "backups", "*"+old+"*")); len(left) != 0 {
		t.Fatal("retention kept the first full: the test prunes nothing")
	}
	if !res.OK() || res.Full != second {
		t.Fatalf("drill of a chain pruned meanwhile: %+v (new full %s)", res, second)
	}
}

// A drill writes nothing to the destination but its result: it reserves
// no timeline there (a real recovery after many drills still takes the
// next timeline).
func TestDrillReservesNoTimeline(t *testing.T) {
	e := newEnv(t, true)
	e.put("a", "a1")
	e.backup("full")
	e.archive()
	for i := 0; i < 2; i++ {
		if res := e.drill(); !res.OK() {
			t.Fatalf("drill failed: %s", res.Reason)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(e.nas, restore.TimelinesDir, "*")); len(left) != 0 {
		t.Fatalf("drills wrote %v", left)
	}
	sum, _, err := e.restoreTo(Target{})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Timeline.ID != 2 {
		t.Fatalf("a restore after two drills is timeline %d, want 2", sum.Timeline.ID)
	}
}
