package state

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// TestReadMemo: KVEntry and ObjectMaterialGrant read again give what the
// state holds after every applied command (a rotation, a grant taken
// away), and what a caller changes in a result is not seen by the next.
func TestReadMemo(t *testing.T) {
	s := openWithWallet(t, filepath.Join(t.TempDir(), "state.db"))
	defer s.Close()
	apply := func(logs ...*raft.Log) {
		t.Helper()
		for i, r := range s.ApplyBatch(logs) {
			if e, ok := r.(error); ok {
				t.Fatalf("entry %d: %v", i, e)
			}
		}
	}
	apply(put(t, 2, "a", 1),
		cmdLog(t, 3, TypeEndpointEnroll, EndpointEnroll{Endpoint: Endpoint{Name: "app"}, TokenHash: strings.Repeat("a", 64)}),
		cmdLog(t, 4, TypeGrant, Grant{Wallet: "w", Endpoint: "app", Permission: "read"}))

	kv := func(wantLatest uint64, wantSealed string) {
		t.Helper()
		for range 2 { // the second from the memo
			o, _, sealed, err := s.KVEntry("w", "a", true, 0)
			if err != nil || o.Latest != wantLatest || string(sealed) != wantSealed || len(o.Versions) != int(wantLatest) {
				t.Fatalf("KVEntry: latest %d, versions %d, sealed %q, %v; want %d, %q", o.Latest, len(o.Versions), sealed, err, wantLatest, wantSealed)
			}
			o.Versions[0].Version, o.Latest, sealed[0] = 99, 99, 'X' // a caller's changes stay its own
		}
	}
	omg := func(wantSealed, wantGrant string) {
		t.Helper()
		for range 2 {
			o, sealed, grant, gerr, err := s.ObjectMaterialGrant("id-a", 0, "app")
			if err != nil || gerr != nil || string(sealed) != wantSealed || grant != wantGrant || o.Name != "a" {
				t.Fatalf("ObjectMaterialGrant: sealed %q, grant %q, %v, %v; want %q, %q", sealed, grant, gerr, err, wantSealed, wantGrant)
			}
			o.Name, sealed[0] = "changed", 'X'
		}
	}
	kv(1, "sealed")
	omg("sealed", "read")
	apply(cmdLog(t, 5, TypeObjectRotate, ObjectRotate{ID: "id-a", Version: 2, Material: []byte("sealed-2")}))
	kv(2, "sealed-2")
	omg("sealed-2", "read")
	apply(cmdLog(t, 6, TypeGrant, Grant{Wallet: "w", Endpoint: "app", Permission: ""}))
	omg("sealed-2", "")
}

// TestReadMemoBounds: the memo holds only entries of the current applied
// index (a newer read drops the older ones, and with them sealed material
// of versions destroyed since), a read that started before a newer one
// stored is not kept, and an object too large to be worth remembering
// (thousands of versions) is read again instead of being kept.
func TestReadMemoBounds(t *testing.T) {
	var m AppliedMemo[string, int]
	st := &Store{}
	m.Put(st, 5, "a", 1)
	m.Put(st, 5, "b", 2)
	if len(m.m) != 2 || m.at != 5 {
		t.Fatalf("memo at %d holds %v", m.at, m.m)
	}
	m.Put(st, 7, "c", 3)
	if len(m.m) != 1 || m.at != 7 {
		t.Fatalf("after a read at a newer index the memo at %d holds %v; want only c", m.at, m.m)
	}
	m.Put(st, 6, "d", 4) // read before the read at 7 stored: stale already
	if _, ok := m.m["d"]; ok || m.at != 7 {
		t.Fatalf("a read at an older index was kept: at %d, %v", m.at, m.m)
	}
	m.Put(&Store{}, 3, "e", 5) // another store (the state replaced): its reads replace the others
	if len(m.m) != 1 || m.at != 3 {
		t.Fatalf("after a read of another store the memo at %d holds %v; want only e", m.at, m.m)
	}

	small := Object{ID: "x", Versions: make([]Version, 3)}
	big := Object{ID: "y", Versions: make([]Version, 5000)}
	if !memoWorth(objectFootprint(small)) {
		t.Fatal("an object of three versions is not remembered")
	}
	if memoWorth(objectFootprint(big)) {
		t.Fatal("an object of 5000 versions is remembered")
	}
	attrs := map[string]string{}
	for i := range 200 {
		attrs[strings.Repeat("k", 40)+string(rune('a'+i%26))+strings.Repeat("v", i)] = strings.Repeat("v", 100)
	}
	if memoWorth(objectFootprint(Object{ID: "z", Attributes: attrs})) {
		t.Fatal("an object with 200 long attributes is remembered")
	}
	if memoWorth(kvMetaFootprint(KVMeta{Deleted: make(map[uint64]time.Time, 0)}) + objectFootprint(small) + 10000) {
		t.Fatal("an entry over the limit is remembered")
	}
}

// TestReadMemoDroppedByACommand: once a command is applied, the memos hold
// nothing read before it (the sealed material of a version destroyed by
// that command included), whichever memo the next read goes through.
func TestReadMemoDroppedByACommand(t *testing.T) {
	s := openWithWallet(t, filepath.Join(t.TempDir(), "state.db"))
	defer s.Close()
	for i, r := range s.ApplyBatch([]*raft.Log{put(t, 2, "a", 1),
		cmdLog(t, 3, TypeEndpointEnroll, EndpointEnroll{Endpoint: Endpoint{Name: "app"}, TokenHash: strings.Repeat("a", 64)}),
		cmdLog(t, 4, TypeGrant, Grant{Wallet: "w", Endpoint: "app", Permission: "read"})}) {
		if e, ok := r.(error); ok {
			t.Fatalf("entry %d: %v", i, e)
		}
	}
	o, _, _, err := s.KVEntry("w", "a", true, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, _, err := s.ObjectMaterialGrant(o.ID, 1, "app"); err != nil {
		t.Fatal(err)
	}
	if len(s.kvMemo.m) != 1 || len(s.omgMemo.m) != 1 {
		t.Fatalf("memos hold %d and %d entries after a read each", len(s.kvMemo.m), len(s.omgMemo.m))
	}
	if r := s.ApplyBatch([]*raft.Log{put(t, 5, "a", 2)}); r[0] != nil {
		if e, ok := r[0].(error); ok {
			t.Fatal(e)
		}
	}
	if len(s.kvMemo.m) != 0 || len(s.omgMemo.m) != 0 {
		t.Fatalf("after a command the memos hold %d and %d entries", len(s.kvMemo.m), len(s.omgMemo.m))
	}
}
