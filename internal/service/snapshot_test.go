package service

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/datadir"
	bolt "go.etcd.io/bbolt"
)

// putMany writes n secrets with 16 concurrent writers.
func putMany(t *testing.T, s *Service, prefix string, n int) {
	t.Helper()
	ctx := rootCtx()
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < n; i += 16 {
				if _, err := s.Objects.PutSecret(ctx, "default", fmt.Sprintf("%s%d", prefix, i), []byte("v")); err != nil {
					t.Error(err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
}

// withHistory is an initialised service on dir holding n secrets ("a0"…)
// whose raft log was never snapshotted.
func withHistory(t *testing.T, dir string, n int) *Service {
	t.Helper()
	s := svcWith(t, dir, 1<<40, nil, nil)
	if _, err := s.Init(rootCtx(), local, []byte(pass)); err != nil {
		t.Fatal(err)
	}
	putMany(t, s, "a", n)
	return s
}

func svcWith(t *testing.T, dir string, snapEvery uint64, logs *bytes.Buffer, mu *sync.Mutex) *Service {
	t.Helper()
	cfg := testConfig(Config{DataDir: dir, SnapshotEvery: snapEvery})
	if logs != nil {
		cfg.Logger = slog.New(slog.NewTextHandler(lockedWriter{mu, logs}, nil))
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestSnapshotAtStartup: a node killed before it ever reached the snapshot
// threshold takes a raft snapshot at the applied index when it starts, so
// the next start reads only what follows; raft starts from that snapshot
// with the right configuration (it elects itself and takes writes).
func TestSnapshotAtStartup(t *testing.T) {
	dir := t.TempDir()
	ctx := rootCtx()
	s := withHistory(t, dir, 120)
	applied := s.st.AppliedIndex()
	s.crashClose()

	var logs bytes.Buffer
	var mu sync.Mutex
	s = svcWith(t, dir, 100, &logs, &mu)
	if err := s.Open(ctx, []byte(pass)); err != nil {
		t.Fatal(err)
	}
	snap, _ := s.node.SnapshotIndex()
	if snap != applied {
		t.Fatalf("raft snapshot at %d after the start, want the applied index %d", snap, applied)
	}
	mu.Lock()
	if !strings.Contains(logs.String(), "raft snapshot taken at startup") {
		t.Errorf("not logged:\n%s", logs.String())
	}
	mu.Unlock()
	if _, err := s.Objects.PutSecret(ctx, "default", "after", []byte("v")); err != nil {
		t.Fatal(err)
	}
	s.crashClose()

	// Below the threshold since that snapshot: none taken, and the node
	// starts from it with everything readable.
	s = svcWith(t, dir, 100, nil, nil)
	defer s.Close()
	if err := s.Open(ctx, []byte(pass)); err != nil {
		t.Fatal(err)
	}
	if again, _ := s.node.SnapshotIndex(); again != snap {
		t.Fatalf("snapshot moved from %d to %d below the threshold", snap, again)
	}
	for _, name := range []string{"a0", "a119", "after"} {
		if _, err := s.GetSecret(ctx, name, 0); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
}

// TestSnapshotAtStartupWithoutRecordedConfiguration: a state written before
// the raft configuration was recorded in it still gets its snapshot (the
// configuration is found in the raft log), and raft starts from it.
func TestSnapshotAtStartupWithoutRecordedConfiguration(t *testing.T) {
	dir := t.TempDir()
	ctx := rootCtx()
	s := withHistory(t, dir, 120)
	applied := s.st.AppliedIndex()
	if _, _, ok := s.st.RaftConfiguration(); !ok {
		t.Fatal("the raft configuration was not recorded")
	}
	s.crashClose()
	db, err := bolt.Open(datadir.StatePath(dir), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("meta")).Delete([]byte("raft_configuration")) }); err != nil {
		t.Fatal(err)
	}
	db.Close()

	s = svcWith(t, dir, 100, nil, nil)
	defer s.Close()
	if err := s.Open(ctx, []byte(pass)); err != nil {
		t.Fatal(err)
	}
	if snap, _ := s.node.SnapshotIndex(); snap != applied {
		t.Fatalf("raft snapshot at %d, want %d", snap, applied)
	}
	if _, err := s.Objects.PutSecret(ctx, "default", "after", []byte("v")); err != nil {
		t.Fatal(err)
	}
}

// TestSnapshotAtCleanStop: a clean stop with at least stopSnapshotMin
// entries since the last snapshot takes one; a kill leaves none, and a stop
// after few entries takes none.
func TestSnapshotAtCleanStop(t *testing.T) {
	ctx := rootCtx()
	build := func() (string, *Service) {
		dir := t.TempDir()
		s := withHistory(t, dir, stopSnapshotMin+10)
		return dir, s
	}
	snapshotOf := func(dir string) uint64 {
		s := svcWith(t, dir, 1<<40, nil, nil)
		defer s.Close()
		idx, err := s.node.SnapshotIndex()
		if err != nil {
			t.Fatal(err)
		}
		return idx
	}

	dir, s := build()
	last, _ := s.node.LastIndex()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if got := snapshotOf(dir); got < last {
		t.Fatalf("snapshot at %d after a clean stop, raft log at %d", got, last)
	}

	dir, s = build()
	s.crashClose()
	if got := snapshotOf(dir); got != 0 {
		t.Fatalf("snapshot at %d after a kill", got)
	}

	// Few entries since the last snapshot: the stop takes none.
	s = svcWith(t, dir, 1<<40, nil, nil)
	if err := s.Open(ctx, []byte(pass)); err != nil {
		t.Fatal(err)
	}
	if err := s.node.Snapshot(); err != nil {
		t.Fatal(err)
	}
	first, _ := s.node.SnapshotIndex()
	putMany(t, s, "b", 10)
	s.Close()
	if got := snapshotOf(dir); got != first {
		t.Fatalf("snapshot moved from %d to %d after 10 entries", first, got)
	}
}

// TestSnapshotAtStartupIsComplete: the data of the snapshot made at startup,
// written in the background, is the whole state: a node whose state.db is
// lost afterwards is rebuilt from it.
func TestSnapshotAtStartupIsComplete(t *testing.T) {
	dir := t.TempDir()
	ctx := rootCtx()
	s := withHistory(t, dir, 120)
	s.crashClose()

	s = svcWith(t, dir, 100, nil, nil)
	if err := s.Open(ctx, []byte(pass)); err != nil {
		t.Fatal(err)
	}
	if err := s.node.WaitSnapshot(); err != nil {
		t.Fatal(err)
	}
	snap, _ := s.node.SnapshotIndex()
	s.crashClose()
	if err := os.Remove(datadir.StatePath(dir)); err != nil {
		t.Fatal(err)
	}

	var logs bytes.Buffer
	var mu sync.Mutex
	s = svcWith(t, dir, 1<<40, &logs, &mu)
	defer s.Close()
	if err := s.Open(ctx, []byte(pass)); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	restored := strings.Contains(logs.String(), "restoring it from the snapshot")
	mu.Unlock()
	if !restored || s.st.AppliedIndex() < snap {
		t.Fatalf("state not restored from the snapshot at %d (applied %d)", snap, s.st.AppliedIndex())
	}
	for _, name := range []string{"a0", "a57", "a119"} {
		if _, err := s.GetSecret(ctx, name, 0); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
}

// TestUnfinishedSnapshotRemoved: a snapshot directory a kill left half
// written is removed at the next start (raft would keep it forever, and a
// node killed during every snapshot at startup would fill its disk).
func TestUnfinishedSnapshotRemoved(t *testing.T) {
	dir := t.TempDir()
	ctx := rootCtx()
	s := initSvc(t, dir)
	s.crashClose()
	tmp := filepath.Join(datadir.RaftDir(dir), "snapshots", "2-99-1796620730656.tmp")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(tmp, "state.bin"), []byte("half a state"), 0o600)
	s = newSvc(t, dir)
	defer s.Close()
	if err := s.Open(ctx, []byte(pass)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Fatalf("unfinished snapshot still there: %v", err)
	}
}
