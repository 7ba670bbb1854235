package service

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/coffer-kms/coffer/internal/state"
)

// TestNodeKeys: a member bound to a key is accepted only with it; a record
// an older build wrote (no key) accepts the first key presented and then
// only that one, until the leader records it; no key at all is refused.
func TestNodeKeys(t *testing.T) {
	st, err := state.Open(filepath.Join(t.TempDir(), "state.db"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	keyA, keyB := strings.Repeat("a", 64), strings.Repeat("b", 64)
	for i, n := range []state.Node{{ID: "bound", RaftAddr: "h:1", KeySHA256: keyA}, {ID: "legacy", RaftAddr: "h:2"}} {
		c, err := state.NewCommand(state.TypeNodePut, time.Now(), n)
		if err != nil {
			t.Fatal(err)
		}
		if r := st.Apply(&raft.Log{Index: uint64(i + 1), Term: 1, Type: raft.LogCommand, Data: c.Marshal()}); r != nil {
			if e, ok := r.(error); ok {
				t.Fatal(e)
			}
		}
	}
	k := &nodeKeys{st: st}
	for _, tc := range []struct {
		id, key string
		want    bool
	}{
		{"bound", keyA, true},
		{"bound", keyB, false},
		{"bound", "", false},
		{"legacy", keyB, true},  // first seen: pinned
		{"legacy", keyA, false}, // another key after it
		{"legacy", keyB, true},
	} {
		if got := k.ok(tc.id, tc.key); got != tc.want {
			t.Errorf("node %s with key %.8s...: accepted %v, want %v", tc.id, tc.key, got, tc.want)
		}
	}
}
