package servicetest_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/coffer-kms/coffer/internal/datadir"
	"github.com/coffer-kms/coffer/internal/keystore"
	"github.com/coffer-kms/coffer/internal/service"
	"github.com/coffer-kms/coffer/internal/service/servicetest"
	"github.com/coffer-kms/coffer/internal/testutil"
)

func TestNewOpenIsOpenWithARootToken(t *testing.T) {
	svc, tok := servicetest.NewOpen(t)
	if got := svc.State(); got != service.StateOpen {
		t.Fatalf("state %q, want %q", got, service.StateOpen)
	}
	if _, err := svc.Access.Authenticate(tok); err != nil {
		t.Fatalf("root token: %v", err)
	}
	if _, err := svc.Objects.PutSecret(servicetest.Root(), service.DefaultWallet, "k", []byte("v")); err != nil {
		t.Fatalf("write through Root(): %v", err)
	}
}

func TestOptionsApplyInOrder(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	cfg := servicetest.Config(t, servicetest.DataDir(dir), servicetest.ClusterBind("127.0.0.1:1"),
		func(c *service.Config) { c.NoAutoBackup = true; c.DataDir += "2" })
	if cfg.DataDir != dir+"2" || cfg.ClusterBind != "127.0.0.1:1" || cfg.ClusterAdvertise != "127.0.0.1:1" || !cfg.NoAutoBackup {
		t.Fatalf("config %+v", cfg)
	}
	if cfg.KDF != servicetest.KDF || cfg.MachineIdentity == nil {
		t.Fatalf("defaults lost: %+v", cfg)
	}
}

// TestKeystoreOpensWithTheFixedIdentity: a test can open the fixture's
// keystore itself with KDF, MachineIdentity and Passphrase.
func TestKeystoreOpensWithTheFixedIdentity(t *testing.T) {
	dir := t.TempDir()
	svc, _ := servicetest.NewOpen(t, servicetest.DataDir(dir))
	if err := svc.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(datadir.KeystoreDir(dir)); err != nil {
		t.Fatal(err)
	}
	ks := keystore.New(datadir.KeystoreDir(dir), keystore.Options{KDF: servicetest.KDF, MachineIdentity: servicetest.MachineIdentity})
	if _, err := ks.Open([]byte(servicetest.Passphrase)); err != nil {
		t.Fatalf("open the fixture's keystore: %v", err)
	}
}

// TestClusterBindStartsARaftNode: with ClusterBind the fixture is a
// clustered single node on a real raft transport, with the CA it needs.
func TestClusterBindStartsARaftNode(t *testing.T) {
	addr := testutil.FreeAddr(t)
	svc, _ := servicetest.NewOpen(t, servicetest.ClusterBind(addr))
	if !svc.Cluster.Clustered() {
		t.Fatal("not clustered")
	}
	if _, err := svc.Objects.PutSecret(servicetest.Root(), service.DefaultWallet, "k", []byte("v")); err != nil {
		t.Fatalf("write on the clustered node: %v", err)
	}
	st, err := svc.Cluster.ClusterStatus(servicetest.Root())
	if err != nil || st.Role != "leader" || len(st.Nodes) != 1 || st.Nodes[0].RaftAddress != addr || !st.Nodes[0].Voter {
		t.Fatalf("cluster status %+v, %v: want this node the only voter at %s", st, err, addr)
	}
	if st.FailoverThreshold != service.DefaultFailoverThreshold.String() {
		t.Fatalf("cluster status shows failover threshold %q, want the default %s", st.FailoverThreshold, service.DefaultFailoverThreshold)
	}
}
