package state

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func cmdLog(t *testing.T, idx uint64, typ Type, body any) *raft.Log {
	t.Helper()
	c, err := NewCommand(typ, time.Unix(1700000000, int64(idx)), body)
	if err != nil {
		t.Fatal(err)
	}
	return &raft.Log{Index: idx, Term: 1, Type: raft.LogCommand, Data: c.Marshal()}
}

// put writes version `version` of a secret-data object named name in wallet
// "w": a create for version 1, a rotation after.
func put(t *testing.T, idx uint64, name string, version uint64) *raft.Log {
	if version == 1 {
		return cmdLog(t, idx, TypeObjectCreate, ObjectCreate{Object: Object{ID: "id-" + name, Wallet: "w", Name: name,
			Type: TypeSecretData, Algorithm: "OPAQUE", State: "active"}, Material: []byte("sealed")})
	}
	return cmdLog(t, idx, TypeObjectRotate, ObjectRotate{ID: "id-" + name, Version: version, Material: []byte("sealed")})
}

// openWithWallet opens a fresh state whose entry 1 created wallet "w".
func openWithWallet(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if r := s.ApplyBatch([]*raft.Log{cmdLog(t, 1, TypeWalletCreate, Wallet{Name: "w"})}); r[0] != nil {
		if _, ok := r[0].(Wallet); !ok {
			t.Fatalf("create wallet: %v", r[0])
		}
	}
	return s
}

func latest(t *testing.T, r any) uint64 {
	t.Helper()
	o, ok := r.(Object)
	if !ok {
		return 0
	}
	return o.Latest
}

// TestApplyBatchIsIdempotent: raft replays entries after a crash; entries at
// or below the applied index must not be applied twice.
func TestApplyBatchIsIdempotent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s := openWithWallet(t, path)
	batch := []*raft.Log{put(t, 2, "a", 1), put(t, 3, "a", 2), put(t, 4, "b", 1)}
	res := s.ApplyBatch(batch)
	for i, r := range res {
		if e, ok := r.(error); ok {
			t.Fatalf("entry %d: %v", i, e)
		}
	}
	if s.AppliedIndex() != 4 {
		t.Fatalf("applied %d", s.AppliedIndex())
	}
	// Replay the same entries plus a new one (a restart replaying the log).
	res = s.ApplyBatch(append(batch, put(t, 5, "a", 3)))
	if res[0] != nil || res[1] != nil || res[2] != nil {
		t.Fatalf("replayed entries were applied again: %v", res)
	}
	if v := latest(t, res[3]); v != 3 {
		t.Fatalf("new entry result %v", res[3])
	}
	m, err := s.ObjectByName("w", "a")
	if err != nil || m.Latest != 3 || len(m.Versions) != 3 {
		t.Fatalf("object a after replay: %+v %v", m, err)
	}
	// The applied index survives a reopen.
	s.Close()
	s, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.AppliedIndex() != 5 {
		t.Fatalf("applied after reopen %d", s.AppliedIndex())
	}
}

// TestDomainErrorsChangeNothing: a conflicting put is a result, not a failure,
// and writes nothing.
func TestDomainErrorsChangeNothing(t *testing.T) {
	s := openWithWallet(t, filepath.Join(t.TempDir(), "state.db"))
	defer s.Close()
	res := s.ApplyBatch([]*raft.Log{
		put(t, 2, "a", 1),
		put(t, 3, "a", 5),   // wrong version
		put(t, 4, "new", 2), // no such object to rotate
		{Index: 5, Type: raft.LogCommand, Data: []byte{1}}, // undecodable
	})
	if latest(t, res[0]) != 1 {
		t.Fatalf("first put: %v", res[0])
	}
	if e, ok := res[1].(error); !ok || !errors.Is(e, ErrConflict) {
		t.Fatalf("wrong version: want conflict, got %v", res[1])
	}
	if e, ok := res[2].(error); !ok || !errors.Is(e, ErrNotFound) {
		t.Fatalf("rotate of a missing object: want not found, got %v", res[2])
	}
	if e, ok := res[3].(error); !ok || !errors.Is(e, ErrBadCommand) {
		t.Fatalf("bad command: %v", res[3])
	}
	if _, err := s.ObjectByName("w", "new"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("refused rotation wrote something: %v", err)
	}
	m, _ := s.ObjectByName("w", "a")
	if m.Latest != 1 {
		t.Fatalf("a latest %d", m.Latest)
	}
	if _, err := s.Material("id-a", 5); !errors.Is(err, ErrNotFound) {
		t.Fatal("material of a refused version was stored")
	}
	if s.AppliedIndex() != 5 {
		t.Fatalf("applied index %d: failed entries still count as applied", s.AppliedIndex())
	}
}

func TestCommandRoundTrip(t *testing.T) {
	c, _ := NewCommand(TypeObjectCreate, time.Unix(5, 6), map[string]int{"x": 1})
	d, err := UnmarshalCommand(c.Marshal())
	if err != nil || d.Type != TypeObjectCreate || !d.Time.Equal(c.Time) || string(d.Body) != `{"x":1}` {
		t.Fatalf("%+v %v", d, err)
	}
	if _, err := UnmarshalCommand([]byte{1, 2}); !errors.Is(err, ErrBadCommand) {
		t.Fatal(err)
	}
}

// TestAbandonedBatchBlocksLaterOnes: once a batch is given up (seal/stop while
// its write fails), no later batch may apply — it would move the applied
// index past the abandoned entries and lose them. Attach (next open) re-arms.
func TestAbandonedBatchBlocksLaterOnes(t *testing.T) {
	s := openWithWallet(t, filepath.Join(t.TempDir(), "state.db"))
	defer s.Close()
	s.ApplyBatch([]*raft.Log{put(t, 2, "a", 1)})
	s.abandoned.Store(true) // as after Interrupt during a failing write of entry 3
	res := s.ApplyBatch([]*raft.Log{put(t, 4, "b", 1)})
	if e, ok := res[0].(error); !ok || !errors.Is(e, ErrAbandoned) {
		t.Fatalf("batch after an abandoned one: %v", res[0])
	}
	if s.AppliedIndex() != 2 {
		t.Fatalf("applied index moved to %d past abandoned entries", s.AppliedIndex())
	}
	if _, err := s.Snapshot(); err == nil {
		t.Fatal("snapshot allowed after an abandoned batch")
	}
	s.Attach(nil, nil, nil)
	res = s.ApplyBatch([]*raft.Log{put(t, 3, "c", 1), put(t, 4, "b", 1)})
	if latest(t, res[0]) != 1 || latest(t, res[1]) != 1 || s.AppliedIndex() != 4 {
		t.Fatalf("replay after re-open: %v, applied %d", res, s.AppliedIndex())
	}
}

// TestWriteBackupIsConsistent: the copy opens as a state database holding
// exactly the entries up to the index it reports.
func TestWriteBackupIsConsistent(t *testing.T) {
	dir := t.TempDir()
	s := openWithWallet(t, filepath.Join(dir, "state.db"))
	defer s.Close()
	s.ApplyBatch([]*raft.Log{put(t, 2, "a", 1), put(t, 3, "a", 2)})
	f, err := os.Create(filepath.Join(dir, "copy.db"))
	if err != nil {
		t.Fatal(err)
	}
	var size int64
	p, err := s.WriteBackup(func(_ BackupPoint, n int64) (io.Writer, error) { size = n; return f, nil })
	f.Close()
	if st, _ := os.Stat(filepath.Join(dir, "copy.db")); err != nil || p.Index != 3 || st.Size() != size {
		t.Fatalf("backup point %+v %v", p, err)
	}
	s.ApplyBatch([]*raft.Log{put(t, 4, "a", 3)}) // after the copy
	c, err := Open(filepath.Join(dir, "copy.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	o, err := c.ObjectByName("w", "a")
	if err != nil || o.Latest != 2 || c.AppliedIndex() != 3 {
		t.Fatalf("copy: latest %d applied %d %v", o.Latest, c.AppliedIndex(), err)
	}
}

// The existence checks of a create see what earlier entries of the same
// batch wrote (they seek with cursors kept for the transaction, after the
// Puts of those entries), and a wallet created in the batch.
func TestCreateChecksSeeTheirOwnBatch(t *testing.T) {
	s := openWithWallet(t, filepath.Join(t.TempDir(), "state.db"))
	defer s.Close()
	create := func(idx uint64, id, wallet, name string) *raft.Log {
		return cmdLog(t, idx, TypeObjectCreate, ObjectCreate{Object: Object{ID: id, Wallet: wallet, Name: name,
			Type: TypeSecretData, Algorithm: "OPAQUE", State: "active"}, Material: []byte("sealed")})
	}
	res := s.ApplyBatch([]*raft.Log{
		create(2, "id-1", "w", "a"),
		create(3, "id-2", "w", "a"),  // the name entry 2 wrote
		create(4, "id-1", "w", "b"),  // the id entry 2 wrote
		create(5, "id-3", "w2", "c"), // no such wallet yet
		cmdLog(t, 6, TypeWalletCreate, Wallet{Name: "w2"}),
		create(7, "id-3", "w2", "c"), // the wallet entry 6 wrote
		create(8, "id-4", "w", "d"),
	})
	if _, ok := res[0].(Object); !ok {
		t.Fatalf("first create: %v", res[0])
	}
	for i, want := range map[int]error{1: ErrExists, 2: ErrExists, 3: ErrNotFound} {
		if e, ok := res[i].(error); !ok || !errors.Is(e, want) {
			t.Errorf("entry %d: %v, want %v", i+2, res[i], want)
		}
	}
	for _, i := range []int{5, 6} {
		if _, ok := res[i].(Object); !ok {
			t.Errorf("entry %d: %v, want a created object", i+2, res[i])
		}
	}
	if o, err := s.ObjectByName("w", "a"); err != nil || o.ID != "id-1" {
		t.Errorf("w/a: %+v %v", o, err)
	}
}
