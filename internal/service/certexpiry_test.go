package service

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/fsutil"
	"github.com/coffer-kms/coffer/internal/testutil"
	"github.com/coffer-kms/coffer/internal/tlsutil"
)

// certTestService is an open single server using Coffer's CA in dir/tls,
// on a test clock, logging into a buffer.
func certTestService(t *testing.T, node bool) (s *Service, tlsDir string, clock *testutil.Clock, logged func(string) int) {
	t.Helper()
	dir := t.TempDir()
	tlsDir = filepath.Join(dir, "tls")
	if _, err := tlsutil.EnsureGenerated(tlsDir, []string{"kms.example.net"}); err != nil {
		t.Fatal(err)
	}
	if node {
		ca, err := tlsutil.LoadCA(tlsDir)
		if err != nil {
			t.Fatal(err)
		}
		if err := tlsutil.EnsureNodeCertWith(tlsDir, "n1", func() (*tlsutil.CA, error) { return ca, nil }); err != nil {
			t.Fatal(err)
		}
	}
	clock = &testutil.Clock{}
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
	t.Cleanup(func() { s.Close() })
	if _, err := s.Init(rootCtx(), local, []byte(pass)); err != nil {
		t.Fatal(err)
	}
	logged = func(text string) int {
		mu.Lock()
		defer mu.Unlock()
		return strings.Count(logs.String(), text)
	}
	return s, tlsDir, clock, logged
}

// certExpiring returns the certificate_expiring warnings status shows.
func certExpiring(s *Service) []Alert {
	var out []Alert
	for _, a := range s.Status().Warnings {
		if a.Code == AlertCertExpiring {
			out = append(out, a)
		}
	}
	return out
}

func wantCertExpiring(t *testing.T, s *Service, file string, end time.Time) {
	t.Helper()
	var as []Alert
	for _, a := range certExpiring(s) {
		if strings.Contains(a.Message, file+" ") {
			as = append(as, a)
		}
	}
	if len(as) != 1 {
		t.Fatalf("%d certificate_expiring warnings for %s, want 1: %+v", len(as), file, certExpiring(s))
	}
	a := as[0]
	if !strings.Contains(a.Message, file) || !strings.Contains(a.Message, end.UTC().Format(time.RFC3339)) || a.Runbook != "docs/runbooks/certificates-expiring.md" {
		t.Fatalf("the warning does not name %s, its end %s and the runbook: %+v", file, end.UTC().Format(time.RFC3339), a)
	}
}

// TestNodeAndCACertExpiringAlerts: status warns certificate_expiring of
// the node certificate only once the hourly renewal has had its chance
// (in its last 30 days, not renewed), reads the renewed one, and of
// the CA certificate from 180 days before its end; the log's CA warning is
// written once a day, not at every hourly round.
func TestNodeAndCACertExpiringAlerts(t *testing.T) {
	s, tlsDir, clock, logged := certTestService(t, true)
	if as := certExpiring(s); len(as) != 0 {
		t.Fatalf("certificate_expiring years before any end: %+v", as)
	}
	first, err := tlsutil.NodeCert(tlsDir)
	if err != nil {
		t.Fatal(err)
	}
	// In the renewal window, before the hourly round ran: no warning yet.
	clock.Advance(time.Until(first.NotAfter) - nodeCertRenewBefore + time.Hour)
	if as := certExpiring(s); len(as) != 0 {
		t.Fatalf("certificate_expiring before the renewal had its chance: %+v", as)
	}
	// Still not renewed 30 days before its end: warned.
	clock.Advance(nodeCertRenewBefore - nodeCertAlertBefore)
	wantCertExpiring(t, s, filepath.Join(tlsDir, tlsutil.NodeCertFile), first.NotAfter)
	s.tendServerCert()
	second, err := tlsutil.NodeCert(tlsDir)
	if err != nil || second.Equal(first) {
		t.Fatal("the node certificate was not renewed")
	}
	// tlsutil signs on the wall clock, this test's clock is 5 years ahead:
	// the renewed certificate is as close to its end, and status reads it.
	wantCertExpiring(t, s, filepath.Join(tlsDir, tlsutil.NodeCertFile), second.NotAfter)
	ca, err := tlsutil.LoadCACert(tlsDir)
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(ca.NotAfter().Sub(clock.Now()) - caWarnBefore + time.Hour)
	wantCertExpiring(t, s, filepath.Join(tlsDir, tlsutil.CAFile), ca.NotAfter())
	const caLog = "the cluster CA certificate expires soon"
	s.tendServerCert()
	clock.Advance(time.Hour)
	s.tendServerCert()
	if n := logged(caLog); n != 1 {
		t.Fatalf("the CA's expiry logged %d times in two hourly rounds, want once a day", n)
	}
	clock.Advance(24 * time.Hour)
	s.tendServerCert()
	if n := logged(caLog); n != 2 {
		t.Fatalf("the CA's expiry logged %d times after a day, want 2", n)
	}
}

// TestOwnServerCertExpiringAlert: an operator's own server.crt (another
// CA's, which Coffer never renews) is warned about in status from 30 days
// before its end; Coffer's interim certificate and one its CA signed are
// not (they are renewed).
func TestOwnServerCertExpiringAlert(t *testing.T) {
	s, tlsDir, clock, _ := certTestService(t, false)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "kms.example.net"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(90 * 24 * time.Hour).Truncate(time.Second),
		DNSNames: []string{"kms.example.net"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	if as := certExpiring(s); len(as) != 0 {
		t.Fatalf("certificate_expiring for Coffer's own server certificate: %+v", as)
	}
	if err := tlsutil.WriteServerPair(tlsDir, key, der); err != nil {
		t.Fatal(err)
	}
	clock.Advance(59 * 24 * time.Hour)
	if as := certExpiring(s); len(as) != 0 {
		t.Fatalf("certificate_expiring 31 days before the end: %+v", as)
	}
	clock.Advance(2 * 24 * time.Hour)
	wantCertExpiring(t, s, filepath.Join(tlsDir, tlsutil.CertFile), tmpl.NotAfter)
}

// TestCertWatchRereadsOnlyChangedFiles: status's certificates are parsed
// once and again only when the file is replaced.
func TestCertWatchRereadsOnlyChangedFiles(t *testing.T) {
	file := filepath.Join(t.TempDir(), "c.crt")
	write := func(days int) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(days)), Subject: pkix.Name{CommonName: "c"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Duration(days) * 24 * time.Hour)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		if err := fsutil.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})); err != nil {
			t.Fatal(err)
		}
	}
	var w certWatch
	write(10)
	a, err := w.cert(file)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := w.cert(file); err != nil || b != a {
		t.Fatalf("an unchanged certificate file was parsed again (%v)", err)
	}
	write(20)
	b, err := w.cert(file)
	if err != nil || b == a || !b.NotAfter.After(a.NotAfter) {
		t.Fatalf("the replaced certificate file was not read again (%v)", err)
	}
}

// TestNodeCertExpiringAfterFailedRenewalIsNotFromTheFuture: once the node
// certificate's renewal failed, status warns of it in its last 60 days;
// the warning's since is then not a time still to come.
func TestNodeCertExpiringAfterFailedRenewalIsNotFromTheFuture(t *testing.T) {
	s, tlsDir, clock, _ := certTestService(t, true)
	c, err := tlsutil.NodeCert(tlsDir)
	if err != nil {
		t.Fatal(err)
	}
	s.certs.setNodeRenewFailed(true)
	clock.Advance(time.Until(c.NotAfter) - 45*24*time.Hour)
	wantCertExpiring(t, s, filepath.Join(tlsDir, tlsutil.NodeCertFile), c.NotAfter)
	for _, a := range certExpiring(s) {
		if a.Since.After(clock.Now()) {
			t.Fatalf("certificate_expiring since %s, after now (%s): %+v", a.Since, clock.Now(), a)
		}
	}
}

// TestOtherCofferServerCertIsNotTheOperators: a server.crt another Coffer
// CA signed (a node's own from before it joined) is replaced by Coffer once
// the keystore opens, so status does not tell the operator to replace it.
func TestOtherCofferServerCertIsNotTheOperators(t *testing.T) {
	s, tlsDir, clock, _ := certTestService(t, false)
	other := filepath.Join(t.TempDir(), "tls")
	if _, err := tlsutil.EnsureGenerated(other, []string{"kms.example.net"}); err != nil {
		t.Fatal(err)
	}
	c, err := tlsutil.ServerCert(other)
	if err != nil || !tlsutil.IsCofferServerCert(c) {
		t.Fatalf("no Coffer server certificate from another CA: %v", err)
	}
	for _, f := range []string{tlsutil.CertFile, tlsutil.KeyFile} {
		b, err := os.ReadFile(filepath.Join(other, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := fsutil.WriteFile(filepath.Join(tlsDir, f), b); err != nil {
			t.Fatal(err)
		}
	}
	clock.Advance(time.Until(c.NotAfter) - 10*24*time.Hour)
	for _, a := range certExpiring(s) {
		if strings.Contains(a.Message, tlsutil.CertFile+" ") {
			t.Fatalf("status calls another Coffer CA's server certificate the operator's own: %+v", a)
		}
	}
}
