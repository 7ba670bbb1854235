package check

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/coffer-kms/coffer/internal/datadir"
	"github.com/coffer-kms/coffer/internal/journal"
	"github.com/coffer-kms/coffer/internal/keystore"
	"github.com/coffer-kms/coffer/internal/service"
	"github.com/coffer-kms/coffer/internal/service/servicetest"
	"github.com/coffer-kms/coffer/internal/state"
)

const pass = "check-test-passphrase"

// dataDir makes a stopped data dir holding a few objects.
func dataDir(t *testing.T) (string, *keystore.Keyring) {
	t.Helper()
	dir := t.TempDir()
	svc := servicetest.New(t, servicetest.DataDir(dir))
	ctx := service.WithIdentity(context.Background(), service.LocalRoot())
	if _, err := svc.Init(ctx, service.LocalRoot(), []byte(pass)); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"a", "b", "c"} {
		if _, err := svc.Objects.PutSecret(ctx, service.DefaultWallet, n, []byte("value-"+n)); err != nil {
			t.Fatal(err)
		}
	}
	svc.RotateJournal(ctx)
	svc.Objects.PutSecret(ctx, service.DefaultWallet, "a", []byte("second"))
	if err := svc.Close(); err != nil {
		t.Fatal(err)
	}
	ring, err := keystore.New(datadir.KeystoreDir(dir), keystore.Options{KDF: servicetest.KDF, MachineIdentity: servicetest.MachineIdentity}).Open([]byte(pass))
	if err != nil {
		t.Fatal(err)
	}
	return dir, ring
}

func paths(dir string) Paths {
	return Paths{State: datadir.StatePath(dir), Raft: datadir.RaftDir(dir), Journal: datadir.JournalDir(dir)}
}

func failing(rep Report) string {
	for _, r := range rep.Results {
		if !r.OK {
			return r.Name + ": " + r.Detail
		}
	}
	return ""
}

func TestHealthyDataDir(t *testing.T) {
	dir, ring := dataDir(t)
	rep := Run(paths(dir), ring)
	if !rep.OK || len(rep.Results) != 5 {
		t.Fatalf("healthy dir: %+v", rep)
	}
	if d := rep.Results[2].Detail; !strings.Contains(d, "3 objects, 4 versions") {
		t.Fatalf("secrets: %s", d)
	}
}

func TestTamperedMaterialIsNamed(t *testing.T) {
	dir, ring := dataDir(t)
	db, err := bolt.Open(datadir.StatePath(dir), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("versions"))
		k, v := b.Cursor().First()
		v = append([]byte(nil), v...)
		v[len(v)-1] ^= 1
		return b.Put(k, v)
	})
	db.Close()
	rep := Run(paths(dir), ring)
	if rep.OK || !strings.Contains(failing(rep), "secrets: object ") || !strings.Contains(failing(rep), "version 1") {
		t.Fatalf("tampered material: %+v", rep)
	}
}

func TestDamagedJournalIsNamed(t *testing.T) {
	dir, ring := dataDir(t)
	segs, _ := filepath.Glob(filepath.Join(datadir.JournalDir(dir), "*.recovery"))
	b, _ := os.ReadFile(segs[0])
	b[len(b)/2] ^= 0x40
	os.WriteFile(segs[0], b, 0o600)
	rep := Run(paths(dir), ring)
	if rep.OK || !strings.HasPrefix(failing(rep), "journal: ") || !strings.Contains(failing(rep), filepath.Base(segs[0])) {
		t.Fatalf("damaged journal: %+v", rep)
	}
}

func TestWrongKeystoreAndLostRaft(t *testing.T) {
	dir, _ := dataDir(t)
	other, ring := dataDir(t)
	_ = other
	rep := Run(paths(dir), ring) // another data dir's master keys
	if rep.OK || !strings.HasPrefix(failing(rep), "data keys: ") {
		t.Fatalf("foreign keystore: %+v", rep)
	}
	dir2, ring2 := dataDir(t)
	os.RemoveAll(datadir.RaftDir(dir2))
	rep = Run(paths(dir2), ring2)
	if rep.OK || !strings.Contains(failing(rep), "raft directory is older") {
		t.Fatalf("lost raft dir: %+v", rep)
	}
}

func TestMissingStateIsNamed(t *testing.T) {
	dir, ring := dataDir(t)
	os.Remove(datadir.StatePath(dir))
	rep := Run(paths(dir), ring)
	if rep.OK || !strings.Contains(failing(rep), "state database") || !strings.Contains(failing(rep), "no such file") {
		t.Fatalf("missing state.db: %+v", rep)
	}
	if _, err := os.Stat(datadir.StatePath(dir)); err == nil {
		t.Fatal("the check created a state.db")
	}
}

// TestEmptyJournalStartingLater: a restored data dir's journal holds no
// record yet and continues from the restored index; it ends there, not at
// 0, and neither lags the state nor needs the raft log before it.
func TestEmptyJournalStartingLater(t *testing.T) {
	dir, ring := dataDir(t)
	st, err := state.Open(datadir.StatePath(dir), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	applied := st.AppliedIndex()
	st.Close()
	if err := os.RemoveAll(datadir.JournalDir(dir)); err != nil {
		t.Fatal(err)
	}
	j, err := journal.Open(journal.Options{Dir: datadir.JournalDir(dir), Name: "coffer", StartAfter: applied})
	if err != nil {
		t.Fatal(err)
	}
	j.Close()
	rep := Run(paths(dir), ring)
	if !rep.OK {
		t.Fatalf("restored-style dir: %s", failing(rep))
	}
	if d := rep.Results[3].Detail; !strings.Contains(d, fmt.Sprintf("0 records verify, last index %d", applied)) {
		t.Fatalf("journal: %s", d)
	}
	if d := rep.Results[4].Detail; strings.Contains(d, "lags") {
		t.Fatalf("raft log: %s", d)
	}
}
