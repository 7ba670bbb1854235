package restore_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/coffer-kms/coffer/internal/backup"
	"github.com/coffer-kms/coffer/internal/backup/dest"
	"github.com/coffer-kms/coffer/internal/restore"
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
