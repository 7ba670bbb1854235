package service_test

import (
	"errors"
	"testing"

	"github.com/coffer-kms/coffer/internal/service"
	"github.com/coffer-kms/coffer/internal/service/servicetest"
	"github.com/coffer-kms/coffer/internal/testutil"
)

// TestRemoveUnknownNodeIsNotFound: removing a node that is not a member (a
// typo, or one removed already) is refused with not found, and the
// membership is unchanged, instead of answering success while nothing
// happened.
func TestRemoveUnknownNodeIsNotFound(t *testing.T) {
	svc, _ := servicetest.NewOpen(t, servicetest.ClusterBind(testutil.FreeAddr(t)))
	err := svc.Cluster.RemoveNode(servicetest.Root(), "node-nosuch")
	if !errors.Is(err, service.ErrNotFound) {
		t.Fatalf("remove of a node that is not a member: %v, want not found", err)
	}
	st, err := svc.Cluster.ClusterStatus(servicetest.Root())
	if err != nil || len(st.Nodes) != 1 || !st.Nodes[0].Self {
		t.Fatalf("membership after the refused remove: %+v, %v", st, err)
	}
}

// TestClusterStatusOfASealedNodeSaysSealed: raft runs only while the
// keystore is open; the cluster status of a sealed node says that, not
// that the cluster is not running.
func TestClusterStatusOfASealedNodeSaysSealed(t *testing.T) {
	svc, _ := servicetest.NewOpen(t, servicetest.ClusterBind(testutil.FreeAddr(t)))
	if err := svc.Seal(servicetest.Root()); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Cluster.ClusterStatus(servicetest.Root()); !errors.Is(err, service.ErrSealed) {
		t.Fatalf("cluster status of a sealed node: %v, want sealed", err)
	}
}
