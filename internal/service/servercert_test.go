package service

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
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
	if !ca.Signs(second) || second.NotAfter.Before(first.NotAfter) || second.VerifyHostname("kms.example.net") != nil {
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

// TestOwnServerCertIsNeverReplaced: an operator may put their own
// certificate in server.crt/server.key (docs/reference/config.md). Neither
// open nor the hourly round replaces it, even near its expiry: the server
// warns instead. The interim certificate Coffer writes itself is still
// replaced at open (TestCAKeyMovesIntoTheState).
func TestOwnServerCertIsNeverReplaced(t *testing.T) {
	dir := t.TempDir()
	tlsDir := filepath.Join(dir, "tls")
	if _, err := tlsutil.EnsureGenerated(tlsDir, []string{"kms.example.net"}); err != nil {
		t.Fatal(err)
	}
	clock := &testutil.Clock{}
	var mu sync.Mutex
	var logs bytes.Buffer
	var reloads atomic.Int32
	s, err := New(Config{DataDir: dir, KDF: cheapKDF, WriteRetryDelay: 100 * time.Millisecond, PasswordKDF: PasswordKDF{Time: 1, MemoryKiB: 64, Threads: 1},
		MachineIdentity: func() ([]byte, error) { return []byte("test-machine"), nil }, Now: clock.Now,
		Logger: slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil)),
		TLSDir: tlsDir, OwnCA: true, CACert: filepath.Join(tlsDir, tlsutil.CAFile), CAKey: filepath.Join(tlsDir, tlsutil.CAKey),
		OnCAChanged: func() error { reloads.Add(1); return nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Init(rootCtx(), local, []byte(pass)); err != nil {
		t.Fatal(err)
	}
	// The operator's own certificate, from another CA (self-signed here).
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "kms.example.net"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(90 * 24 * time.Hour),
		DNSNames: []string{"kms.example.net"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := tlsutil.WriteServerPair(tlsDir, key, der); err != nil {
		t.Fatal(err)
	}
	own, err := tlsutil.ServerCert(tlsDir)
	if err != nil {
		t.Fatal(err)
	}
	unchanged := func(when string) {
		t.Helper()
		c, err := tlsutil.ServerCert(tlsDir)
		if err != nil || !c.Equal(own) {
			t.Fatalf("%s: the operator's own server certificate was replaced (%v)", when, err)
		}
		if reloads.Load() != 0 {
			t.Fatalf("%s: the server was told to reload %d times", when, reloads.Load())
		}
	}
	s.tendServerCert()
	unchanged("hourly round")
	if err := s.Seal(rootCtx()); err != nil {
		t.Fatal(err)
	}
	if err := s.Open(rootCtx(), []byte(pass)); err != nil {
		t.Fatal(err)
	}
	unchanged("open")
	mu.Lock()
	warned := strings.Contains(logs.String(), "not signed by Coffer's CA")
	mu.Unlock()
	if warned {
		t.Fatal("a warning about the operator's certificate far from its expiry")
	}
	clock.Advance(time.Until(own.NotAfter) - serverCertRenewBefore + time.Hour)
	s.tendServerCert()
	unchanged("hourly round near its expiry")
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(logs.String(), "not signed by Coffer's CA") || !strings.Contains(logs.String(), "level=WARN") {
		t.Fatalf("no warning that the operator's certificate expires soon:\n%s", logs.String())
	}
}

// TestNodeCertRenewedAndCAExpiryWarned: the node certificate (five years)
// is signed again, with the same key (the cluster binds each member to
// it), once it expires within nodeCertRenewBefore; the CA certificate (ten
// years), which nothing renews, is warned about in the log from
// caWarnBefore before its end.
func TestNodeCertRenewedAndCAExpiryWarned(t *testing.T) {
	dir := t.TempDir()
	tlsDir := filepath.Join(dir, "tls")
	if _, err := tlsutil.EnsureGenerated(tlsDir, []string{"kms.example.net"}); err != nil {
		t.Fatal(err)
	}
	ca, err := tlsutil.LoadCA(tlsDir)
	if err != nil {
		t.Fatal(err)
	}
	if err := tlsutil.EnsureNodeCertWith(tlsDir, "n1", func() (*tlsutil.CA, error) { return ca, nil }); err != nil {
		t.Fatal(err)
	}
	first, err := tlsutil.NodeCert(tlsDir)
	if err != nil {
		t.Fatal(err)
	}
	clock := &testutil.Clock{}
	var mu sync.Mutex
	var logs bytes.Buffer
	s, err := New(Config{DataDir: dir, KDF: cheapKDF, WriteRetryDelay: 100 * time.Millisecond, PasswordKDF: PasswordKDF{Time: 1, MemoryKiB: 64, Threads: 1},
		MachineIdentity: func() ([]byte, error) { return []byte("test-machine"), nil }, Now: clock.Now,
		Logger: slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil)),
		TLSDir: tlsDir, OwnCA: true, CACert: filepath.Join(tlsDir, tlsutil.CAFile), CAKey: filepath.Join(tlsDir, tlsutil.CAKey),
		OnCAChanged: func() error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Init(rootCtx(), local, []byte(pass)); err != nil {
		t.Fatal(err)
	}
	logged := func(text string) bool {
		mu.Lock()
		defer mu.Unlock()
		return strings.Contains(logs.String(), text)
	}
	s.tendServerCert()
	if c, _ := tlsutil.NodeCert(tlsDir); !c.Equal(first) {
		t.Fatal("a node certificate far from its expiry was replaced")
	}
	if logged("expires") {
		t.Fatal("an expiry warning years before any expiry")
	}
	clock.Advance(time.Until(first.NotAfter) - nodeCertRenewBefore + time.Hour)
	s.tendServerCert()
	second, err := tlsutil.NodeCert(tlsDir)
	if err != nil || second.Equal(first) {
		t.Fatalf("a node certificate expiring within %s was not renewed: %v", nodeCertRenewBefore, err)
	}
	if !ca.Signs(second) || second.Subject.CommonName != "n1" || tlsutil.KeyFingerprint(second) != tlsutil.KeyFingerprint(first) {
		t.Fatal("the renewed node certificate is not the same node's, with the same key, signed by the CA")
	}
	if !logged("node certificate renewed") {
		t.Fatal("the node certificate's renewal was not logged")
	}
	clock.Advance(ca.NotAfter().Sub(clock.Now()) - caWarnBefore + time.Hour)
	s.tendServerCert()
	if !logged("the cluster CA certificate expires") {
		t.Fatalf("no warning %s before the CA certificate expires:\n%s", caWarnBefore, logs.String())
	}
}

// TestServerCertOfAnotherCofferCAIsReplaced: a node that joined a cluster
// with a build that sent the CA key kept the server certificate its own
// pre-join CA (removed since) had signed. That certificate is Coffer's,
// not the operator's: open replaces it with one the cluster CA signs.
func TestServerCertOfAnotherCofferCAIsReplaced(t *testing.T) {
	dir := t.TempDir()
	tlsDir := filepath.Join(dir, "tls")
	if _, err := tlsutil.EnsureGenerated(tlsDir, []string{"kms.example.net"}); err != nil {
		t.Fatal(err)
	}
	cluster := t.TempDir()
	if _, err := tlsutil.EnsureGenerated(cluster, nil); err != nil {
		t.Fatal(err)
	}
	// The join wrote the cluster's CA over this node's own.
	for _, f := range []string{tlsutil.CAFile, tlsutil.CAKey} {
		b, err := os.ReadFile(filepath.Join(cluster, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(tlsDir, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ca, err := tlsutil.LoadCA(tlsDir)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := tlsutil.ServerCert(tlsDir); err != nil || ca.Signs(c) {
		t.Fatalf("set-up: the server certificate is not the pre-join CA's: %v", err)
	}
	var reloads atomic.Int32
	s, err := New(Config{DataDir: dir, KDF: cheapKDF, WriteRetryDelay: 100 * time.Millisecond, PasswordKDF: PasswordKDF{Time: 1, MemoryKiB: 64, Threads: 1},
		MachineIdentity: func() ([]byte, error) { return []byte("test-machine"), nil },
		TLSDir:          tlsDir, OwnCA: true, CACert: filepath.Join(tlsDir, tlsutil.CAFile), CAKey: filepath.Join(tlsDir, tlsutil.CAKey),
		OnCAChanged: func() error { reloads.Add(1); return nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Init(rootCtx(), local, []byte(pass)); err != nil {
		t.Fatal(err)
	}
	c, err := tlsutil.ServerCert(tlsDir)
	if err != nil || !ca.Signs(c) || c.VerifyHostname("kms.example.net") != nil {
		t.Fatalf("the server certificate of the pre-join CA was not replaced by one the cluster CA signs, for the same names: %v", err)
	}
	if reloads.Load() == 0 {
		t.Fatal("the server was not told to reload its certificate")
	}
}
