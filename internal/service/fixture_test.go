package service

import (
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/keystore"
)

// The service's own tests build their services here (servicetest, which the
// other packages' tests use, would be an import cycle).

var cheapKDF = keystore.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}

const pass = "service-test-pass"

// testConfig is cfg with what every test service has unless cfg says
// otherwise: a cheap keystore and password KDF and a fixed machine identity.
func testConfig(cfg Config) Config {
	if cfg.KDF == (keystore.KDFParams{}) {
		cfg.KDF = cheapKDF
	}
	if cfg.PasswordKDF == (PasswordKDF{}) {
		cfg.PasswordKDF = PasswordKDF{Time: 1, MemoryKiB: 64, Threads: 1}
	}
	if cfg.MachineIdentity == nil {
		cfg.MachineIdentity = func() ([]byte, error) { return []byte("test-machine"), nil }
	}
	return cfg
}

// newSvc is a new, uninitialised service on dir.
func newSvc(t testing.TB, dir string) *Service {
	t.Helper()
	return newSvcWith(t, testConfig(Config{DataDir: dir, WriteRetryDelay: 100 * time.Millisecond}))
}

// newSvcWith is a new service with cfg (see testConfig).
func newSvcWith(t testing.TB, cfg Config) *Service {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// initSvc is a new, initialised and open service on dir.
func initSvc(t testing.TB, dir string) *Service {
	t.Helper()
	s := newSvc(t, dir)
	if _, err := s.Init(rootCtx(), local, []byte(pass)); err != nil {
		t.Fatal(err)
	}
	return s
}
