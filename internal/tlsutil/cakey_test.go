package tlsutil

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestParseCARefusesAnotherKey(t *testing.T) {
	a, b := filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")
	for _, d := range []string{a, b} {
		if _, err := EnsureGenerated(d, nil); err != nil {
			t.Fatal(err)
		}
	}
	cert, _ := os.ReadFile(filepath.Join(a, CAFile))
	key, _ := os.ReadFile(filepath.Join(b, CAKey))
	if _, err := ParseCA(cert, key); err == nil {
		t.Fatal("a CA with another CA's key")
	}
	ca, err := ParseCA(cert, nil)
	if err != nil || ca.HasKey() {
		t.Fatalf("certificate only: %v %v", ca, err)
	}
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if _, err := ca.IssueNodeCert(&k.PublicKey, "n1"); !errors.Is(err, ErrNoCAKey) {
		t.Fatalf("signed without a key: %v", err)
	}
	full, err := LoadCA(a)
	if err != nil {
		t.Fatal(err)
	}
	pemKey, err := full.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	again, err := ParseCA(cert, pemKey)
	if err != nil || !again.HasKey() || !again.SameCert(full) {
		t.Fatalf("round trip of the key: %v", err)
	}
}

// TestServerCertWithoutCAKey: a CA certificate without its key gives a
// self-signed server certificate; signing it anew with the CA keeps its
// names.
func TestServerCertWithoutCAKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	if _, err := EnsureGenerated(dir, []string{"kms.example", "10.0.0.7"}); err != nil {
		t.Fatal(err)
	}
	ca, err := LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{CAKey, CertFile, KeyFile} {
		os.Remove(filepath.Join(dir, f))
	}
	if created, err := EnsureGenerated(dir, []string{"kms.example", "10.0.0.7"}); err != nil || !created {
		t.Fatalf("without the CA key: %v %v", created, err)
	}
	interim, err := ServerCert(dir)
	if err != nil || ca.Signs(interim) {
		t.Fatalf("interim certificate: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, CAKey)); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a CA key file appeared")
	}
	if err := ca.ReissueServerCert(dir); err != nil {
		t.Fatal(err)
	}
	c, err := ServerCert(dir)
	if err != nil || !ca.Signs(c) {
		t.Fatalf("reissued certificate: %v", err)
	}
	if !slices.Contains(c.DNSNames, "kms.example") || !slices.ContainsFunc(c.IPAddresses, func(ip net.IP) bool { return ip.Equal(net.ParseIP("10.0.0.7")) }) {
		t.Fatalf("names lost: %v %v", c.DNSNames, c.IPAddresses)
	}
	if _, err := NewReloader(filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile)); err != nil {
		t.Fatalf("the reissued pair does not load: %v", err)
	}
	// A joining node's request names the same hosts.
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := ServerCSR(dir, k)
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := x509.ParseCertificateRequest(der)
	if !slices.Equal(csr.DNSNames, c.DNSNames) || len(csr.IPAddresses) != len(c.IPAddresses) {
		t.Fatalf("request names %v %v, certificate %v %v", csr.DNSNames, csr.IPAddresses, c.DNSNames, c.IPAddresses)
	}
	many := make([]string, maxServerNames+1)
	for i := range many {
		many[i] = "h" + string(rune('a'+i%26))
	}
	if _, err := ca.IssueServerCert(&k.PublicKey, many, nil); err == nil {
		t.Fatal("a server certificate for too many names")
	}
}

// TestReissueServerCertKeepsTheKey: re-signing the server certificate (at
// open, or before it expires) keeps server.key and replaces only
// server.crt, in one atomic write: a crash cannot leave a new key beside the
// old certificate, a pair the server would refuse to load at its next
// start. Without a usable key file a new pair is made, key first.
func TestReissueServerCertKeepsTheKey(t *testing.T) {
	dir := t.TempDir()
	if _, err := EnsureGenerated(dir, []string{"kms.example"}); err != nil {
		t.Fatal(err)
	}
	ca, err := LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, KeyFile)
	key, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	old, err := ServerCert(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.ReissueServerCert(dir); err != nil {
		t.Fatal(err)
	}
	if now, _ := os.ReadFile(keyFile); !slices.Equal(now, key) {
		t.Fatal("re-signing the server certificate replaced server.key")
	}
	c, err := ServerCert(dir)
	if err != nil || c.Equal(old) || !ca.Signs(c) || !slices.Contains(c.DNSNames, "kms.example") {
		t.Fatalf("re-signed certificate: %v", err)
	}
	if _, err := NewReloader(filepath.Join(dir, CertFile), keyFile); err != nil {
		t.Fatalf("the re-signed pair does not load: %v", err)
	}
	// No key file: a new pair.
	os.Remove(keyFile)
	if err := ca.ReissueServerCert(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := NewReloader(filepath.Join(dir, CertFile), keyFile); err != nil {
		t.Fatalf("the new pair does not load: %v", err)
	}
}

// TestIssuedCertsEndWithTheCA: no certificate the CA signs outlives the CA
// certificate: past its end nothing verifies against the CA, so a later
// NotAfter (what coffer endpoint show reports) would promise days that
// cannot be.
func TestIssuedCertsEndWithTheCA(t *testing.T) {
	dir := t.TempDir()
	if _, err := EnsureGenerated(dir, nil); err != nil {
		t.Fatal(err)
	}
	ca, err := LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	caEnd := ca.cert.NotAfter
	ca.Valid = 20 * 365 * 24 * time.Hour // longer than the CA's ten years
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, k)
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := x509.ParseCertificateRequest(csrDER)
	client, _, err := ca.IssueClientCert(csr, "db1")
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(client)
	if err != nil {
		t.Fatal(err)
	}
	if c.NotAfter.After(caEnd) {
		t.Fatalf("client certificate until %s, after the CA's end %s", c.NotAfter, caEnd)
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, CurrentTime: c.NotAfter.Add(-time.Minute)}); err != nil {
		t.Fatalf("the client certificate does not verify on its last day: %v", err)
	}
}

// TestInterimServerCertIsKnown: the self-signed server certificate written
// while the CA key is sealed away is told apart from any other.
func TestInterimServerCertIsKnown(t *testing.T) {
	dir := t.TempDir()
	if err := writeInterimServerCert(dir, nil); err != nil {
		t.Fatal(err)
	}
	c, err := ServerCert(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !IsInterimServerCert(c) {
		t.Fatal("the interim server certificate is not recognised")
	}
	gen := t.TempDir()
	if _, err := EnsureGenerated(gen, nil); err != nil {
		t.Fatal(err)
	}
	if c, err := ServerCert(gen); err != nil || IsInterimServerCert(c) {
		t.Fatalf("a CA-signed server certificate taken for the interim one: %v", err)
	}
}
