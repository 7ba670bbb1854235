package cluster

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	bolt "go.etcd.io/bbolt"
)

// logKeys lists the indexes in the log bucket of the database at path.
func logKeys(t *testing.T, path string) []uint64 {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var keys []uint64
	err = db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketLogs).ForEach(func(k, _ []byte) error {
			keys = append(keys, binary.BigEndian.Uint64(k))
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// DeleteRange deletes through a cursor (Delete then Next): over ranges that
// span many full leaf pages (the log bucket's pages are split full), from
// the head, the tail, the middle, and bounds outside the log, it removes
// exactly [min, max], as raft-boltdb does for the same calls.
func TestLogStoreDeleteRangeSpanningManyPages(t *testing.T) {
	const n = 20000
	ranges := []struct{ min, max uint64 }{
		{1, 6000},               // head (compaction), many pages
		{15001, math.MaxUint64}, // tail (a conflicting suffix), to the end
		{9000, 9000},            // one entry
		{7000, 12000},           // middle, many pages
		{0, 6500},               // below the first key
		{12000, 12000},          // already gone
		{20000, 30000},          // past the last key
		{14000, 13000},          // min > max: nothing
	}
	dir := t.TempDir()
	opts := func() *bolt.Options {
		return &bolt.Options{NoFreelistSync: true, FreelistType: bolt.FreelistMapType}
	}
	s, err := openLogStore(filepath.Join(dir, "new.db"), opts())
	if err != nil {
		t.Fatal(err)
	}
	old, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "old.db"), BoltOptions: opts()})
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(0); i < n/100; i++ {
		// Entries of mixed sizes, a few larger than a page.
		logs := testLogs(1+100*i, 100, 40+int(i%7)*150)
		logs[0].Data = bytes.Repeat([]byte{1}, 5000)
		if err := s.StoreLogs(logs); err != nil {
			t.Fatal(err)
		}
		if err := old.StoreLogs(logs); err != nil {
			t.Fatal(err)
		}
	}
	var leaves int
	if err := s.db.View(func(tx *bolt.Tx) error {
		leaves = tx.Bucket(bucketLogs).Stats().LeafPageN
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if leaves < 200 {
		t.Fatalf("%d leaf pages: the ranges do not span many pages", leaves)
	}
	want := map[uint64]bool{}
	for i := uint64(1); i <= n; i++ {
		want[i] = true
	}
	for _, r := range ranges {
		if err := s.DeleteRange(r.min, r.max); err != nil {
			t.Fatal(err)
		}
		if err := old.DeleteRange(r.min, r.max); err != nil {
			t.Fatal(err)
		}
		for i := range want {
			if i >= r.min && i <= r.max {
				delete(want, i)
			}
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	got, oldGot := logKeys(t, filepath.Join(dir, "new.db")), logKeys(t, filepath.Join(dir, "old.db"))
	var wantKeys []uint64
	for i := range want {
		wantKeys = append(wantKeys, i)
	}
	slices.Sort(wantKeys)
	if !slices.Equal(got, wantKeys) {
		t.Fatalf("%d keys left, want %d (first left %v)", len(got), len(wantKeys), got[:min(len(got), 5)])
	}
	if !slices.Equal(got, oldGot) {
		t.Fatalf("%d keys left, raft-boltdb left %d", len(got), len(oldGot))
	}
	db, err := bolt.Open(filepath.Join(dir, "new.db"), 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			return err
		}
		return nil
	}); err != nil {
		t.Fatalf("bbolt consistency after the deletions: %v", err)
	}
}

// A decoded entry owns its bytes: Data and Extensions do not point into
// bbolt's memory map (which a later write or Close invalidates).
func TestLogStoreGetLogCopiesOutOfTheMap(t *testing.T) {
	s, err := openLogStore(filepath.Join(t.TempDir(), "raft.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	logs := testLogs(1, 3, 3000)
	if err := s.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
	var got raft.Log
	if err := s.GetLog(2, &got); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRange(1, 3); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil { // unmaps the file
		t.Fatal(err)
	}
	sameLog(t, &got, logs[1])
}

// Entries with the AppendedAt raft sets (time.Now: local zone, monotonic
// reading) and in other zones encode to raft-boltdb's bytes.
func TestLogStoreBytesOfRaftTimes(t *testing.T) {
	dir := t.TempDir()
	zone := time.FixedZone("X", -(3*3600 + 30*60))
	logs := testLogs(1, 4, 10)
	logs[0].AppendedAt = time.Now()
	logs[1].AppendedAt = time.Now().In(zone)
	logs[2].AppendedAt = time.Date(1969, 7, 20, 20, 17, 40, 1, time.UTC)
	logs[3].AppendedAt = time.Now().Round(0).Local()
	old, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "old.db")})
	if err != nil {
		t.Fatal(err)
	}
	if err := old.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
	old.Close()
	s, err := openLogStore(filepath.Join(dir, "new.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
	for _, want := range logs {
		var got raft.Log
		if err := s.GetLog(want.Index, &got); err != nil {
			t.Fatal(err)
		}
		sameLog(t, &got, want)
	}
	s.Close()
	read := func(name string) map[uint64][]byte {
		db, err := bolt.Open(filepath.Join(dir, name), 0o600, &bolt.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		m := map[uint64][]byte{}
		db.View(func(tx *bolt.Tx) error { // #nosec G104 -- the function returns nil
			return tx.Bucket(bucketLogs).ForEach(func(k, v []byte) error {
				m[binary.BigEndian.Uint64(k)] = bytes.Clone(v)
				return nil
			})
		})
		return m
	}
	want, got := read("old.db"), read("new.db")
	for i, v := range want {
		if !bytes.Equal(got[i], v) {
			t.Fatalf("entry %d: %x, raft-boltdb wrote %x", i, got[i], v)
		}
	}
}

// Stable keys written by one store read with the other: raft's term and
// vote, and the seed a restore writes (Seed, readSeed).
func TestLogStoreStableKeysBothWays(t *testing.T) {
	dir := t.TempDir()
	if err := Seed(dir, "n1", 42, 5); err != nil {
		t.Fatal(err)
	}
	s, err := openLogStore(filepath.Join(dir, "raft.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetUint64([]byte("LastVoteTerm"), 5); err != nil {
		t.Fatal(err)
	}
	if err := s.Set([]byte("LastVoteCand"), []byte("127.0.0.1:7000")); err != nil {
		t.Fatal(err)
	}
	seedVal, err := s.Get(seedKey)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()

	old, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db")})
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]uint64{"CurrentTerm": 5, "LastVoteTerm": 5} {
		if v, err := old.GetUint64([]byte(k)); err != nil || v != want {
			t.Fatalf("raft-boltdb reads %s = %d, %v; want %d", k, v, err, want)
		}
	}
	if v, err := old.Get([]byte("LastVoteCand")); err != nil || string(v) != "127.0.0.1:7000" {
		t.Fatalf("raft-boltdb reads LastVoteCand = %q, %v", v, err)
	}
	if v, err := old.Get(seedKey); err != nil || !bytes.Equal(v, seedVal) {
		t.Fatalf("raft-boltdb reads the seed %x, %v; want %x", v, err, seedVal)
	}
	// raft-boltdb writes them, logStore (and readSeed) reads them.
	if err := old.SetUint64([]byte("CurrentTerm"), 9); err != nil {
		t.Fatal(err)
	}
	if err := old.Set([]byte("LastVoteCand"), []byte("node-2")); err != nil {
		t.Fatal(err)
	}
	old.Close()
	s, err = openLogStore(filepath.Join(dir, "raft.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if v, err := s.GetUint64([]byte("CurrentTerm")); err != nil || v != 9 {
		t.Fatalf("CurrentTerm = %d, %v; want 9", v, err)
	}
	if v, err := s.Get([]byte("LastVoteCand")); err != nil || string(v) != "node-2" {
		t.Fatalf("LastVoteCand = %q, %v", v, err)
	}
	meta, err := readSeed(s)
	if err != nil || meta == nil || meta.Index != 42 || meta.Term != 5 || len(meta.Configuration.Servers) != 1 {
		t.Fatalf("readSeed = %+v, %v", meta, err)
	}
	// A stable value that is not 8 bytes is an error, not a panic.
	if err := s.Set([]byte("LastVoteTerm"), []byte{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetUint64([]byte("LastVoteTerm")); err == nil || err.Error() == "not found" {
		t.Fatalf("GetUint64 of 3 bytes: %v", err)
	}
	if _, err := s.Get([]byte("nope")); !errors.Is(err, errKeyNotFound) || err.Error() != "not found" {
		t.Fatalf("missing key: %v", err)
	}
}

// A raft directory written wholly by raft-boltdb (a node of an earlier
// release) is started by raft on the log store: it replays the log, keeps
// its term, and goes on; raft-boltdb then reads what raft appended.
func TestNodeStartsOnARaftBoltDBDirectory(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	n := openNode(t, Config{Dir: src, NodeID: "n1"})
	if err := n.Start(&listFSM{}, false); err != nil {
		t.Fatal(err)
	}
	if err := n.WaitLeader(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	apply(t, n, "a")
	apply(t, n, "b")
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	// Rewrite every key and entry with raft-boltdb into dst.
	in, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(src, "raft.db")})
	if err != nil {
		t.Fatal(err)
	}
	out, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dst, "raft.db")})
	if err != nil {
		t.Fatal(err)
	}
	first, _ := in.FirstIndex()
	last, _ := in.LastIndex()
	if first == 0 || last < first+2 {
		t.Fatalf("source log [%d, %d]", first, last)
	}
	for i := first; i <= last; i++ {
		var l raft.Log
		if err := in.GetLog(i, &l); err != nil {
			t.Fatalf("raft-boltdb reads entry %d: %v", i, err)
		}
		if err := out.StoreLog(&l); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range []string{"CurrentTerm", "LastVoteTerm"} {
		v, err := in.GetUint64([]byte(k))
		if err != nil {
			t.Fatalf("raft-boltdb reads %s: %v", k, err)
		}
		if err := out.SetUint64([]byte(k), v); err != nil {
			t.Fatal(err)
		}
	}
	cand, err := in.Get([]byte("LastVoteCand"))
	if err != nil {
		t.Fatalf("raft-boltdb reads LastVoteCand: %v", err)
	}
	if err := out.Set([]byte("LastVoteCand"), cand); err != nil {
		t.Fatal(err)
	}
	term, _ := in.GetUint64([]byte("CurrentTerm"))
	in.Close()
	out.Close()
	if ents, err := os.ReadDir(filepath.Join(src, "snapshots")); err == nil && len(ents) > 0 {
		t.Fatalf("source has snapshots %v: the copy would not hold them", ents)
	}

	n = openNode(t, Config{Dir: dst, NodeID: "n1"})
	fsm := &listFSM{}
	if err := n.Start(fsm, false); err != nil {
		t.Fatal(err)
	}
	if err := n.WaitLeader(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if got := apply(t, n, "c"); got != 3 {
		t.Fatalf("apply c answered %v after replaying %q, want 3", got, fsm.list())
	}
	if st := n.Status(); st.Term <= term {
		t.Fatalf("term %d after the restart, was %d", st.Term, term)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	back, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dst, "raft.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	l2, _ := back.LastIndex()
	var cmds []string
	for i := first; i <= l2; i++ {
		var l raft.Log
		if err := back.GetLog(i, &l); err != nil {
			t.Fatalf("raft-boltdb reads entry %d: %v", i, err)
		}
		if l.Type == raft.LogCommand {
			cmds = append(cmds, string(l.Data))
		}
	}
	if !slices.Equal(cmds, []string{"a", "b", "c"}) {
		t.Fatalf("raft-boltdb reads commands %q, want [a b c]", cmds)
	}
}
