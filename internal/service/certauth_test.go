package service

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/coffer-kms/coffer/internal/tlsutil"
)

// enrollWithCert enrols endpoint name with a fresh key's CSR and returns
// its certificate's DER.
func enrollWithCert(t *testing.T, s *Service, name string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}}, key)
	if err != nil {
		t.Fatal(err)
	}
	e, err := s.Access.EnrollEndpoint(rootCtx(), name, "", csr)
	if err != nil {
		t.Fatalf("enrol %s: %v", name, err)
	}
	blk, _ := pem.Decode([]byte(e.Certificate))
	if blk == nil {
		t.Fatalf("enrol %s: no certificate", name)
	}
	return blk.Bytes
}

// TestAuthenticateCertWith: the remembered identity answers while nothing
// is applied, a revocation is seen on the next call, and another
// certificate is never answered from what was remembered.
func TestAuthenticateCertWith(t *testing.T) {
	dir := t.TempDir()
	if _, err := tlsutil.EnsureGenerated(filepath.Join(dir, "tls"), nil); err != nil {
		t.Fatal(err)
	}
	var reloads atomic.Int32
	s := newSvcOwnCA(t, dir, &reloads)
	defer s.Close()
	if _, err := s.Init(rootCtx(), local, []byte(pass)); err != nil {
		t.Fatal(err)
	}
	a := enrollWithCert(t, s, "app")
	b := enrollWithCert(t, s, "other")
	var c CertAuth
	for range 2 {
		id, err := s.Access.AuthenticateCertWith(&c, a)
		if err != nil || id.Kind != KindEndpoint || id.Name != "app" {
			t.Fatalf("authenticate app: %+v, %v", id, err)
		}
	}
	if c.at != s.st.AppliedIndex() || c.id.Name != "app" {
		t.Fatalf("not remembered: %+v", c)
	}
	if id, err := s.Access.AuthenticateCertWith(&c, b); err != nil || id.Name != "other" {
		t.Fatalf("another certificate: %+v, %v", id, err)
	}
	if id, err := s.Access.AuthenticateCertWith(&c, a); err != nil || id.Name != "app" {
		t.Fatalf("back to app: %+v, %v", id, err)
	}
	if _, err := s.Access.RevokeEndpoint(rootCtx(), "app"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Access.AuthenticateCertWith(&c, a); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("revoked endpoint still authenticated: %v", err)
	}
	if _, err := s.Access.AuthenticateCertWith(nil, b); err != nil {
		t.Fatalf("without memory: %v", err)
	}
}
