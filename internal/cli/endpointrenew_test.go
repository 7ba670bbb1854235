package cli

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// renewPair is a key (PKCS #8 PEM) and a certificate for it (PEM).
func renewPair(t *testing.T, serial int64) (keyPEM, certPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "db1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// TestRenewFinishesAnInterruptedRenewal: coffer endpoint renew stopped
// between its writes (a crash) leaves the new key and certificate as .new
// files, or the new key already in place beside the old certificate (which
// the server refuses). Running it again puts the new pair in place, and a
// usable pair is there at the end whatever step was reached.
func TestRenewFinishesAnInterruptedRenewal(t *testing.T) {
	oldKey, oldCert := renewPair(t, 1)
	newKey, newCert := renewPair(t, 2)
	write := func(dir, name string, b []byte) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		name     string
		files    map[string][]byte
		finished bool
	}{
		{"key and certificate written, none renamed", map[string][]byte{"client.key": oldKey, "client.crt": oldCert, "client.key.new": newKey, "client.crt.new": newCert}, true},
		{"key renamed, certificate not", map[string][]byte{"client.key": newKey, "client.crt": oldCert, "client.crt.new": newCert}, true},
		{"only the new key written (no certificate came back)", map[string][]byte{"client.key": oldKey, "client.crt": oldCert, "client.key.new": newKey}, false},
		{"nothing left over", map[string][]byte{"client.key": oldKey, "client.crt": oldCert}, false},
	} {
		dir := t.TempDir()
		for n, b := range c.files {
			write(dir, n, b)
		}
		finished, err := finishRenewal(dir, "client.crt", "client.key")
		if err != nil || finished != c.finished {
			t.Fatalf("%s: finished %v, %v; want finished %v", c.name, finished, err, c.finished)
		}
		wantKey, wantCert := oldKey, oldCert
		if c.finished {
			wantKey, wantCert = newKey, newCert
		}
		if b, _ := os.ReadFile(filepath.Join(dir, "client.key")); !bytes.Equal(b, wantKey) {
			t.Fatalf("%s: client.key is not the key wanted", c.name)
		}
		if b, _ := os.ReadFile(filepath.Join(dir, "client.crt")); !bytes.Equal(b, wantCert) {
			t.Fatalf("%s: client.crt is not the certificate wanted", c.name)
		}
		for _, n := range []string{"client.key.new", "client.crt.new"} {
			if _, err := os.Stat(filepath.Join(dir, n)); err == nil {
				t.Fatalf("%s: %s left in the directory", c.name, n)
			}
		}
	}

	// A certificate.new that goes with no key there is not put in place.
	dir := t.TempDir()
	write(dir, "client.key", oldKey)
	write(dir, "client.crt", oldCert)
	write(dir, "client.crt.new", newCert)
	if _, err := finishRenewal(dir, "client.crt", "client.key"); err == nil {
		t.Fatal("a client.crt.new matching no key was not refused")
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "client.crt")); !bytes.Equal(b, oldCert) {
		t.Fatal("client.crt was replaced by a certificate matching no key")
	}
}
