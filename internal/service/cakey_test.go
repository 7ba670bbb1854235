package service

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/tlsutil"
)

func newSvcOwnCA(t *testing.T, dir string, reloads *atomic.Int32) *Service {
	t.Helper()
	tlsDir := filepath.Join(dir, "tls")
	s, err := New(Config{DataDir: dir, KDF: cheapKDF, WriteRetryDelay: 100 * time.Millisecond, PasswordKDF: PasswordKDF{Time: 1, MemoryKiB: 64, Threads: 1},
		MachineIdentity: func() ([]byte, error) { return []byte("test-machine"), nil },
		TLSDir:          tlsDir, OwnCA: true, CACert: filepath.Join(tlsDir, tlsutil.CAFile), CAKey: filepath.Join(tlsDir, tlsutil.CAKey),
		OnCAChanged: func() error { reloads.Add(1); return nil }})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func testCSR(t *testing.T, name string) []byte {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

// assertNoCAKeyFile fails when a file in dir holds the private key of ca
// (PEM) or when the CA in tls/ can sign.
func assertNoCAKeyFile(t *testing.T, dir string, ca *tlsutil.CA) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(dir, "tls", tlsutil.CAKey)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("tls/ca.key still there: %v", err)
	}
	if _, err := tlsutil.LoadCA(filepath.Join(dir, "tls")); err == nil {
		t.Fatal("the data dir can still sign with the CA")
	}
	pub := caKeyOf(t, ca)
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		b, _ := os.ReadFile(p)
		for rest := b; ; {
			var blk *pem.Block
			if blk, rest = pem.Decode(rest); blk == nil {
				break
			}
			if !strings.Contains(blk.Type, "PRIVATE KEY") {
				continue
			}
			var k any
			if ek, err := x509.ParseECPrivateKey(blk.Bytes); err == nil {
				k = ek
			} else {
				k, _ = x509.ParsePKCS8PrivateKey(blk.Bytes)
			}
			if s, ok := k.(crypto.Signer); ok && pub.Equal(s.Public()) {
				t.Errorf("%s holds the CA private key", p)
			}
		}
		return nil
	})
}

func caKeyOf(t *testing.T, ca *tlsutil.CA) interface{ Equal(crypto.PublicKey) bool } {
	t.Helper()
	blk, _ := pem.Decode(ca.CertPEM())
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
}

func verifiesAgainst(t *testing.T, certPEM string, ca *tlsutil.CA) {
	t.Helper()
	blk, _ := pem.Decode([]byte(certPEM))
	if blk == nil {
		t.Fatalf("no certificate: %q", certPEM)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("certificate does not verify against the CA: %v", err)
	}
}

// TestCAKeyMovesIntoTheState: a data dir with a plain tls/ca.key (first
// start, an older build, a restored older backup): the keystore's first
// open seals the key into the replicated state and removes the file;
// endpoint certificates are signed with it while open, not while sealed;
// a server certificate the CA did not sign (made while the key was
// sealed) is replaced at open.
func TestCAKeyMovesIntoTheState(t *testing.T) {
	dir := t.TempDir()
	tlsDir := filepath.Join(dir, "tls")
	if _, err := tlsutil.EnsureGenerated(tlsDir, nil); err != nil {
		t.Fatal(err)
	}
	ca, err := tlsutil.LoadCA(tlsDir)
	if err != nil {
		t.Fatal(err)
	}
	var reloads atomic.Int32
	s := newSvcOwnCA(t, dir, &reloads)
	if _, err := s.Init(rootCtx(), local, []byte(pass)); err != nil {
		t.Fatal(err)
	}
	assertNoCAKeyFile(t, dir, ca)
	if _, ok := s.st.ClusterCA(); !ok {
		t.Fatal("no CA record in the state")
	}
	if _, key := s.caFiles(); key != "" {
		t.Fatalf("a backup would carry the CA key file %q", key)
	}
	e, err := s.Access.EnrollEndpoint(rootCtx(), "db1", "", testCSR(t, "db1"))
	if err != nil {
		t.Fatal(err)
	}
	verifiesAgainst(t, e.Certificate, ca)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Started without the key and without a server certificate (a restore
	// of a backup whose state holds the key): a self-signed one until open.
	os.Remove(filepath.Join(tlsDir, tlsutil.CertFile))
	os.Remove(filepath.Join(tlsDir, tlsutil.KeyFile))
	if created, err := tlsutil.EnsureGenerated(tlsDir, nil); err != nil || !created {
		t.Fatalf("server certificate without the CA key: %v %v", created, err)
	}
	if c, err := tlsutil.ServerCert(tlsDir); err != nil || ca.Signs(c) {
		t.Fatalf("interim server certificate: %v", err)
	}
	s = newSvcOwnCA(t, dir, &reloads)
	defer s.Close()
	if _, err := s.Access.EnrollEndpoint(rootCtx(), "db2", "", testCSR(t, "db2")); !errors.Is(err, ErrSealed) {
		t.Fatalf("enrolment while sealed: %v", err)
	}
	if err := s.Open(rootCtx(), []byte(pass)); err != nil {
		t.Fatal(err)
	}
	if c, err := tlsutil.ServerCert(tlsDir); err != nil || !ca.Signs(c) {
		t.Fatalf("the server certificate is not signed by the CA after open: %v", err)
	}
	if reloads.Load() == 0 {
		t.Fatal("the server was not told to reload its certificate")
	}
	e, err = s.Access.EnrollEndpoint(rootCtx(), "db2", "", testCSR(t, "db2"))
	if err != nil {
		t.Fatal(err)
	}
	verifiesAgainst(t, e.Certificate, ca)
	r, err := s.Access.RenewEndpoint(rootCtx(), "db2", testCSR(t, "db2"))
	if err != nil {
		t.Fatal(err)
	}
	verifiesAgainst(t, r.Certificate, ca)
	assertNoCAKeyFile(t, dir, ca)
}

// TestCAKeyOfAnotherCAStays: a plain key that does not go with ca.crt is
// not taken into the state (and not removed).
func TestCAKeyOfAnotherCAStays(t *testing.T) {
	dir := t.TempDir()
	tlsDir := filepath.Join(dir, "tls")
	other := filepath.Join(t.TempDir(), "tls")
	for _, d := range []string{tlsDir, other} {
		if _, err := tlsutil.EnsureGenerated(d, nil); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := os.ReadFile(filepath.Join(other, tlsutil.CAKey))
	os.WriteFile(filepath.Join(tlsDir, tlsutil.CAKey), b, 0o600)
	var reloads atomic.Int32
	s := newSvcOwnCA(t, dir, &reloads)
	defer s.Close()
	if _, err := s.Init(rootCtx(), local, []byte(pass)); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.st.ClusterCA(); ok {
		t.Fatal("a key not of the CA was stored")
	}
	if _, err := os.Stat(filepath.Join(tlsDir, tlsutil.CAKey)); err != nil {
		t.Fatalf("the mismatched key file went: %v", err)
	}
}
