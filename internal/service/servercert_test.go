package service

import (
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/testutil"
	"github.com/coffer-kms/coffer/internal/tlsutil"
)

// TestServerCertRenewedBeforeItExpires: the server certificate the
// cluster CA signed (two years) is signed again, with the same names,
// once it expires within serverCertRenewBefore: by the hourly round while
// the keystore is open, and at open. Left alone, every TLS client of the
// API and KMIP would refuse the server the day it expires.
func TestServerCertRenewedBeforeItExpires(t *testing.T) {
	dir := t.TempDir()
	tlsDir := filepath.Join(dir, "tls")
	if _, err := tlsutil.EnsureGenerated(tlsDir, []string{"kms.example.net"}); err != nil {
		t.Fatal(err)
	}
	ca, err := tlsutil.LoadCA(tlsDir)
	if err != nil {
		t.Fatal(err)
	}
	clock := &testutil.Clock{}
	var reloads atomic.Int32
	s, err := New(Config{DataDir: dir, KDF: cheapKDF, WriteRetryDelay: 100 * time.Millisecond, PasswordKDF: PasswordKDF{Time: 1, MemoryKiB: 64, Threads: 1},
		MachineIdentity: func() ([]byte, error) { return []byte("test-machine"), nil }, Now: clock.Now,
		TLSDir: tlsDir, OwnCA: true, CACert: filepath.Join(tlsDir, tlsutil.CAFile), CAKey: filepath.Join(tlsDir, tlsutil.CAKey),
		OnCAChanged: func() error { reloads.Add(1); return nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Init(rootCtx(), local, []byte(pass)); err != nil {
		t.Fatal(err)
	}
	first, err := tlsutil.ServerCert(tlsDir)
	if err != nil || !ca.Signs(first) {
		t.Fatalf("server certificate after init: %v", err)
	}
	s.tendServerCert()
	if c, _ := tlsutil.ServerCert(tlsDir); !c.Equal(first) || reloads.Load() != 0 {
		t.Fatal("a server certificate far from its expiry was replaced")
	}
	clock.Advance(time.Until(first.NotAfter) - serverCertRenewBefore + time.Hour)
	s.tendServerCert()
	second, err := tlsutil.ServerCert(tlsDir)
	if err != nil || second.Equal(first) {
		t.Fatalf("a server certificate expiring in %s was not renewed by the round: %v", serverCertRenewBefore-time.Hour, err)
	}
	if !ca.Signs(second) || !second.NotAfter.After(first.NotAfter) || second.VerifyHostname("kms.example.net") != nil {
		t.Fatalf("renewed server certificate: until %s, names %v", second.NotAfter, second.DNSNames)
	}
	if reloads.Load() != 1 {
		t.Fatalf("the server was told to reload %d times, want 1", reloads.Load())
	}
	// At open: the certificate expired while the node was sealed.
	if err := s.Seal(rootCtx()); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Until(second.NotAfter) + time.Hour)
	if err := s.Open(rootCtx(), []byte(pass)); err != nil {
		t.Fatal(err)
	}
	if third, err := tlsutil.ServerCert(tlsDir); err != nil || third.Equal(second) || !ca.Signs(third) {
		t.Fatalf("an expired server certificate was not renewed at open: %v", err)
	}
}
