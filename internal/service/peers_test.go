package service

import (
	"errors"
	"testing"
)

// A cluster member makes node-to-node calls: without a peer client it is
// refused at construction, not at its first join or health probe.
func TestNewClusterMemberNeedsPeers(t *testing.T) {
	_, err := New(Config{DataDir: t.TempDir(), ClusterBind: "127.0.0.1:0"})
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("clustered without Config.Peers: %v", err)
	}
}
