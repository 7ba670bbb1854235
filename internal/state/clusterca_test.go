package state

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
)

// TestClusterCARecord: the CA record needs a certificate and a sealed key;
// the first one stored stands when two nodes store it at once.
func TestClusterCARecord(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "state.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	apply := func(idx uint64, c ClusterCA) any {
		t.Helper()
		return s.ApplyBatch([]*raft.Log{cmdLog(t, idx, TypeClusterCA, c)})[0]
	}
	cert := []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
	for i, bad := range []ClusterCA{{Version: 1, Cert: cert}, {Version: 0, Cert: cert, Sealed: []byte("x")}, {Version: 1, Cert: []byte("no pem"), Sealed: []byte("x")}} {
		if _, ok := apply(uint64(i+1), bad).(error); !ok {
			t.Fatalf("malformed record %d accepted", i)
		}
	}
	if _, ok := s.ClusterCA(); ok {
		t.Fatal("a malformed record was stored")
	}
	if r := apply(4, ClusterCA{Version: 1, Cert: cert, Sealed: []byte("first")}); r != nil {
		if e, ok := r.(error); ok {
			t.Fatal(e)
		}
	}
	apply(5, ClusterCA{Version: 1, Cert: cert, Sealed: []byte("second")})
	if c, ok := s.ClusterCA(); !ok || !bytes.Equal(c.Sealed, []byte("first")) {
		t.Fatalf("record %+v %v, want the first one", c, ok)
	}
}
