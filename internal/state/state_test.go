package state

import (
	"errors"
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

func put(t *testing.T, idx uint64, name string, version uint64) *raft.Log {
	return cmdLog(t, idx, TypeSecretPut, SecretPut{ID: "id-" + name, Name: name, Version: version, Value: []byte("sealed")})
}

// TestApplyBatchIsIdempotent: raft replays entries after a crash; entries at
// or below the applied index must not be applied twice.
func TestApplyBatchIsIdempotent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	batch := []*raft.Log{put(t, 1, "a", 1), put(t, 2, "a", 2), put(t, 3, "b", 1)}
	res := s.ApplyBatch(batch)
	for i, r := range res {
		if e, ok := r.(error); ok {
			t.Fatalf("entry %d: %v", i, e)
		}
	}
	if s.AppliedIndex() != 3 {
		t.Fatalf("applied %d", s.AppliedIndex())
	}
	// Replay the same entries plus a new one (a restart replaying the log).
	res = s.ApplyBatch(append(batch, put(t, 4, "a", 3)))
	if res[0] != nil || res[1] != nil || res[2] != nil {
		t.Fatalf("replayed entries were applied again: %v", res)
	}
	if v, ok := res[3].(uint64); !ok || v != 3 {
		t.Fatalf("new entry result %v", res[3])
	}
	m, err := s.Secret("a")
	if err != nil || m.Latest != 3 || len(m.Versions) != 3 {
		t.Fatalf("secret a after replay: %+v %v", m, err)
	}
	// The applied index survives a reopen.
	s.Close()
	s, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.AppliedIndex() != 4 {
		t.Fatalf("applied after reopen %d", s.AppliedIndex())
	}
}

// TestDomainErrorsChangeNothing: a conflicting put is a result, not a failure,
// and writes nothing.
func TestDomainErrorsChangeNothing(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "state.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	res := s.ApplyBatch([]*raft.Log{
		put(t, 1, "a", 1),
		put(t, 2, "a", 5),   // wrong version
		put(t, 3, "new", 2), // new secret must start at 1
		{Index: 4, Type: raft.LogCommand, Data: []byte{1}}, // undecodable
	})
	if res[0] != uint64(1) {
		t.Fatalf("first put: %v", res[0])
	}
	for i := 1; i <= 2; i++ {
		if e, ok := res[i].(error); !ok || !errors.Is(e, ErrConflict) {
			t.Fatalf("entry %d: want conflict, got %v", i, res[i])
		}
	}
	if e, ok := res[3].(error); !ok || !errors.Is(e, ErrBadCommand) {
		t.Fatalf("bad command: %v", res[3])
	}
	if _, err := s.Secret("new"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("conflicting create wrote something: %v", err)
	}
	m, _ := s.Secret("a")
	if m.Latest != 1 {
		t.Fatalf("a latest %d", m.Latest)
	}
	if _, err := s.SecretValue("id-a", 5); !errors.Is(err, ErrNotFound) {
		t.Fatal("value of a refused version was stored")
	}
	if s.AppliedIndex() != 4 {
		t.Fatalf("applied index %d: failed entries still count as applied", s.AppliedIndex())
	}
}

func TestCommandRoundTrip(t *testing.T) {
	c, _ := NewCommand(TypeSecretPut, time.Unix(5, 6), map[string]int{"x": 1})
	d, err := UnmarshalCommand(c.Marshal())
	if err != nil || d.Type != TypeSecretPut || !d.Time.Equal(c.Time) || string(d.Body) != `{"x":1}` {
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
	s, err := Open(filepath.Join(t.TempDir(), "state.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.ApplyBatch([]*raft.Log{put(t, 1, "a", 1)})
	s.abandoned.Store(true) // as after Interrupt during a failing write of entry 2
	res := s.ApplyBatch([]*raft.Log{put(t, 3, "b", 1)})
	if e, ok := res[0].(error); !ok || !errors.Is(e, ErrAbandoned) {
		t.Fatalf("batch after an abandoned one: %v", res[0])
	}
	if s.AppliedIndex() != 1 {
		t.Fatalf("applied index moved to %d past abandoned entries", s.AppliedIndex())
	}
	if _, err := s.Snapshot(); err == nil {
		t.Fatal("snapshot allowed after an abandoned batch")
	}
	s.Attach(nil, nil, nil)
	res = s.ApplyBatch([]*raft.Log{put(t, 2, "c", 1), put(t, 3, "b", 1)})
	if res[0] != uint64(1) || res[1] != uint64(1) || s.AppliedIndex() != 3 {
		t.Fatalf("replay after re-open: %v, applied %d", res, s.AppliedIndex())
	}
}
