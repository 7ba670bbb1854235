package restore_test

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/coffer-kms/coffer/internal/check"
	"github.com/coffer-kms/coffer/internal/cluster"
	"github.com/coffer-kms/coffer/internal/datadir"
	"github.com/coffer-kms/coffer/internal/keystore"
	"github.com/coffer-kms/coffer/internal/service"
)

// snapshotDirs lists the raft snapshots in dir: written ones and those a
// stop in the middle of writing left (.tmp).
func snapshotDirs(t *testing.T, dir string) (written, unfinished []string) {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(datadir.RaftDir(dir), "snapshots"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".tmp") {
			unfinished = append(unfinished, e.Name())
		} else if e.IsDir() {
			written = append(written, e.Name())
		}
	}
	return written, unfinished
}

// checkDir is coffer check on a stopped data dir.
func checkDir(t *testing.T, dir string) {
	t.Helper()
	ring, err := keystore.New(datadir.KeystoreDir(dir), keystore.Options{KDF: cheapKDF}).Open([]byte("restored-passphrase"))
	if err != nil {
		t.Fatal(err)
	}
	defer ring.Wipe()
	rep := check.Run(check.Paths{State: datadir.StatePath(dir), Raft: datadir.RaftDir(dir), Journal: datadir.JournalDir(dir)}, ring)
	if !rep.OK {
		t.Fatalf("coffer check on %s: %+v", dir, rep.Results)
	}
}

// TestRestoredNodeKilledAtItsFirstStart: a restore writes the state once
// (no raft snapshot: the raft dir holds only its description) and the
// restored dir passes the check. Its first start writes the raft snapshot
// in the background; a kill before that write finished leaves a node that
// starts again, serves what it had and writes the snapshot then.
func TestRestoredNodeKilledAtItsFirstStart(t *testing.T) {
	e := newEnv(t, true)
	e.put("a", "a1")
	e.backup("full")
	e.put("b", "b1")
	e.archive()
	e.s.Close()

	_, dir, err := e.restoreTo(Target{})
	if err != nil {
		t.Fatal(err)
	}
	if written, unfinished := snapshotDirs(t, dir); len(written)+len(unfinished) > 0 {
		t.Fatalf("the restore wrote raft snapshots %q %q: the state is to be written once", written, unfinished)
	}
	checkDir(t, dir)

	s, ctx := openRestored(t, dir)
	if _, err := s.Objects.PutSecret(ctx, service.DefaultWallet, "after", []byte("x")); err != nil {
		t.Fatal(err)
	}
	// The kill, before the snapshot's data was written: the files as they
	// are, the snapshot still in its temporary directory, half written.
	image := filepath.Join(t.TempDir(), "killed")
	copyTree(t, dir, image)
	s.Close()
	// The copy may have caught the write finished: it is undone.
	snaps := filepath.Join(datadir.RaftDir(image), "snapshots")
	switch written, unfinished := snapshotDirs(t, image); {
	case len(written) == 1 && len(unfinished) == 0:
		if err := os.Rename(filepath.Join(snaps, written[0]), filepath.Join(snaps, written[0]+".tmp")); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(filepath.Join(snaps, written[0]+".tmp", "state.bin"), 100); err != nil {
			t.Fatal(err)
		}
	case len(written) == 0 && len(unfinished) == 1:
	default:
		t.Fatalf("snapshots after the first start: %q, unfinished %q; want the one it made", written, unfinished)
	}
	checkDir(t, image)

	s, ctx = openRestored(t, image)
	for name, want := range map[string]string{"a": "a1", "b": "b1", "after": "x"} {
		if v := secretValue(t, s, ctx, name, 0); v != want {
			t.Fatalf("%s = %q after the kill, want %q", name, v, want)
		}
	}
	if _, err := s.Objects.PutSecret(ctx, service.DefaultWallet, "after-kill", []byte("y")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	written, unfinished := snapshotDirs(t, image)
	if len(written) != 1 || len(unfinished) != 0 {
		t.Fatalf("snapshots after the start that followed the kill: %q, unfinished %q; want one written", written, unfinished)
	}
	checkDir(t, image)

	// Raft now starts from the snapshot written at that start: its
	// configuration is the restored node's.
	s, ctx = openRestored(t, image)
	if v := secretValue(t, s, ctx, "after-kill", 0); v != "y" {
		t.Fatalf("after-kill = %q", v)
	}
}

// copyTree copies the files of src into dst.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		if fi.IsDir() {
			return os.MkdirAll(to, 0o700)
		}
		if !fi.Mode().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(to, b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestRestoredStateRecordingAnotherConfiguration: a restored state that
// still records the raft configuration of the cluster its backup came from
// (as a restore by an earlier version left it) is older than the snapshot
// the restore seeded: the snapshot made at start takes the seeded
// configuration, and the node leads and serves again after a restart.
func TestRestoredStateRecordingAnotherConfiguration(t *testing.T) {
	e := newEnv(t, true)
	e.put("a", "a1")
	e.backup("full")
	e.s.Close()
	_, dir, err := e.restoreTo(Target{})
	if err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(datadir.StatePath(dir), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	old := binary.BigEndian.AppendUint64(nil, 1)
	old = append(old, cluster.SeedConfiguration("node-of-the-backup")...)
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("meta")).Put([]byte("raft_configuration"), old) }); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		s, ctx := openRestored(t, dir)
		if v := secretValue(t, s, ctx, "a", 0); v != "a1" {
			t.Fatalf("a = %q", v)
		}
		if _, err := s.Objects.PutSecret(ctx, service.DefaultWallet, "b", []byte("b")); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
