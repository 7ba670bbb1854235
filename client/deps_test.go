package client

import (
	"os/exec"
	"strings"
	"testing"
)

// TestClientLinksNoServerCode: the public client must not import server,
// raft or storage packages (etcd keeps its client apart the same way).
func TestClientLinksNoServerCode(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{"coffer/internal/", "hashicorp/raft", "go.etcd.io/bbolt", "boltdb"} {
			if strings.Contains(dep, banned) {
				t.Errorf("client depends on %s", dep)
			}
		}
	}
}
