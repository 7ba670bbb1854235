// Package servicetest builds a service.Service for tests: a cheap KDF, a
// fixed machine identity, a data dir in t.TempDir() and Close at cleanup.
// Only test code imports it (internal/layers checks this); the service's
// own tests cannot (the import would be a cycle) and keep their one helper
// beside them.
package servicetest

import (
	"context"
	"crypto/tls"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/keystore"
	"github.com/coffer-kms/coffer/internal/service"
	"github.com/coffer-kms/coffer/internal/tlsutil"
)

// KDF is a keystore KDF cheap enough for tests and far too cheap for keys
// that matter.
var KDF = keystore.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}

// PasswordKDF is the administrator-password KDF of the same cost.
var PasswordKDF = service.PasswordKDF{Time: 1, MemoryKiB: 64, Threads: 1}

// Machine is the machine identity auto-open keystores are bound to.
const Machine = "test-machine"

// MachineIdentity returns Machine; it is the fixture's
// service.Config.MachineIdentity, for tests that open its keystore directly.
func MachineIdentity() ([]byte, error) { return []byte(Machine), nil }

// Passphrase is the keystore passphrase NewOpen initialises with.
const Passphrase = "servicetest-passphrase"

// Option changes the fixture's service.Config; any func(*service.Config)
// is one.
type Option = func(*service.Config)

// DataDir puts the service's data in dir instead of a fresh t.TempDir().
func DataDir(dir string) Option {
	return func(c *service.Config) { c.DataDir = dir }
}

// ClusterBind makes the node listen for raft on addr (host:port, e.g.
// testutil.FreeAddr) and advertise the same address, instead of an
// in-memory transport. Without a TLSDir, Config gives the node a CA in
// <data dir>/tls, as the server does.
func ClusterBind(addr string) Option {
	return func(c *service.Config) { c.ClusterBind, c.ClusterAdvertise, c.Peers = addr, addr, noPeers{} }
}

// Config is the fixture's configuration: a fresh data dir, the cheap KDFs,
// Machine, writes retried after 100ms; then opts in order (and a CA for a
// clustered node, see ClusterBind).
func Config(t testing.TB, opts ...Option) service.Config {
	t.Helper()
	cfg := service.Config{
		DataDir:         t.TempDir(),
		KDF:             KDF,
		PasswordKDF:     PasswordKDF,
		MachineIdentity: MachineIdentity,
		WriteRetryDelay: 100 * time.Millisecond,
	}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.ClusterBind != "" && cfg.TLSDir == "" {
		cfg.TLSDir = filepath.Join(cfg.DataDir, "tls")
		if _, err := tlsutil.EnsureGenerated(cfg.TLSDir, []string{"127.0.0.1"}); err != nil {
			t.Fatalf("servicetest: cluster CA: %v", err)
		}
	}
	return cfg
}

// New is an uninitialised service with Config(t, opts...), closed when the
// test ends (closing it earlier is fine).
func New(t testing.TB, opts ...Option) *service.Service {
	t.Helper()
	svc, err := service.New(Config(t, opts...))
	if err != nil {
		t.Fatalf("servicetest: new service: %v", err)
	}
	t.Cleanup(func() { svc.Close() }) // #nosec G104 -- cleanup only: Close is idempotent, and a test that checks its result calls it itself
	return svc
}

// NewOpen is New, initialised with Passphrase and open; it returns the
// root token too.
func NewOpen(t testing.TB, opts ...Option) (*service.Service, string) {
	t.Helper()
	svc := New(t, opts...)
	tok, err := svc.Init(context.Background(), service.LocalRoot(), []byte(Passphrase))
	if err != nil {
		t.Fatalf("servicetest: init: %v", err)
	}
	return svc, tok
}

// Root is a context whose caller is the local root (service.LocalRoot).
func Root() context.Context {
	return service.WithIdentity(context.Background(), service.LocalRoot())
}

// noPeers is the fixture's service.Peers: one in-process node has no other
// node to call (joins and promotions are tested against real servers in
// test/e2e), so every call says so.
type noPeers struct{}

var errNoPeers = errors.New("servicetest: no other node to call")

func (noPeers) FetchCA(context.Context, string) ([]byte, error) { return nil, errNoPeers }
func (noPeers) Join(context.Context, string, *tls.Config, service.JoinRequest) (service.JoinResponse, error) {
	return service.JoinResponse{}, errNoPeers
}
func (noPeers) Promote(context.Context, string, *tls.Config, string) error { return errNoPeers }
func (noPeers) Health(context.Context, string, *tls.Config) (service.PeerHealth, error) {
	return service.PeerHealth{}, errNoPeers
}
