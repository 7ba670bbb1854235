package state

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

// TestNodeKeyBinding: a node record keeps the key it was bound to through
// updates that do not name one (an address change, an older build's
// update); removing the node unbinds it; a record without a key (written
// by an older build) gets one recorded.
func TestNodeKeyBinding(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "state.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	keyA, keyB := strings.Repeat("a", 64), strings.Repeat("b", 64)
	apply := func(idx uint64, typ Type, body any) {
		t.Helper()
		if r := s.ApplyBatch([]*raft.Log{cmdLog(t, idx, typ, body)}); r[0] != nil {
			if e, ok := r[0].(error); ok {
				t.Fatalf("entry %d: %v", idx, e)
			}
		}
	}
	key := func() string {
		t.Helper()
		n, err := s.Node("n1")
		if err != nil {
			t.Fatal(err)
		}
		return n.KeySHA256
	}
	apply(1, TypeNodePut, Node{ID: "n1", RaftAddr: "10.0.0.1:7000"})
	if k := key(); k != "" {
		t.Fatalf("a record without a key has key %q", k)
	}
	apply(2, TypeNodePut, Node{ID: "n1", RaftAddr: "10.0.0.1:7000", KeySHA256: keyA})
	apply(3, TypeNodePut, Node{ID: "n1", RaftAddr: "10.0.0.2:7000"})
	if k := key(); k != keyA {
		t.Fatalf("an address update lost the bound key: %q", k)
	}
	apply(4, TypeNodeDelete, NodeDelete{ID: "n1"})
	if _, err := s.Node("n1"); err == nil {
		t.Fatal("removed node still has a record")
	}
	apply(5, TypeNodePut, Node{ID: "n1", RaftAddr: "10.0.0.3:7000", KeySHA256: keyB})
	if k := key(); k != keyB {
		t.Fatalf("a node joined again after removal is bound to %q, want its new key", k)
	}
	if r := s.ApplyBatch([]*raft.Log{cmdLog(t, 6, TypeNodePut, Node{ID: "n1", RaftAddr: "x:1", KeySHA256: strings.Repeat("c", 65)})}); r[0] == nil {
		t.Fatal("a key fingerprint longer than 64 characters was accepted")
	} else if e, ok := r[0].(error); !ok || !strings.Contains(e.Error(), "node key fingerprint") {
		t.Fatalf("an overlong key fingerprint: %v, want an error naming the node key fingerprint", r[0])
	}
}
