package tlsutil

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"os"
	"path/filepath"
	"testing"
)

func TestGeneratedCAIssuesClientCertificates(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	created, err := EnsureGenerated(dir, []string{"kms.example"})
	if err != nil || !created {
		t.Fatalf("generate: %v %v", created, err)
	}
	if again, err := EnsureGenerated(dir, nil); err != nil || again {
		t.Fatalf("second call regenerated: %v %v", again, err)
	}
	for _, f := range []string{CAKey, KeyFile} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s mode %v %v", f, st.Mode(), err)
		}
	}
	ca, err := LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "admin", Organization: []string{"evil"}}}, key)
	csr, _ := x509.ParseCertificateRequest(der)
	certDER, caPEM, err := ca.IssueClientCert(csr, "db1")
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(certDER)
	if cert.Subject.CommonName != "db1" || len(cert.Subject.Organization) != 1 || cert.Subject.Organization[0] != "Coffer endpoint" {
		t.Fatalf("the CSR's subject leaked into the certificate: %v", cert.Subject)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("CA bundle is not PEM")
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("client certificate does not verify: %v", err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Fatal("a client certificate is usable as a server certificate")
	}
	if _, err := LoadCA(t.TempDir()); err == nil {
		t.Fatal("LoadCA of an empty dir succeeded")
	}
}
