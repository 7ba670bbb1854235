package state

import (
	"path/filepath"
	"strings"
	"testing"

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
