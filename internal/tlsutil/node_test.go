package tlsutil

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"testing"
)

// TestIsNodeCert: only the node OU marks a node certificate; an endpoint's
// certificate, whatever else its subject says, is not one.
func TestIsNodeCert(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    *x509.Certificate
		want bool
	}{
		{"node", &x509.Certificate{Subject: pkix.Name{CommonName: "n1", OrganizationalUnit: []string{NodeOU}}}, true},
		{"node OU among others", &x509.Certificate{Subject: pkix.Name{CommonName: "n1", OrganizationalUnit: []string{"ops", NodeOU}}}, true},
		{"endpoint", &x509.Certificate{Subject: pkix.Name{CommonName: "db1", Organization: []string{"Coffer endpoint"}}}, false},
		{"node name without the OU", &x509.Certificate{Subject: pkix.Name{CommonName: NodeOU, Organization: []string{NodeOU}}}, false},
		{"nil", nil, false},
	} {
		if got := IsNodeCert(tc.c); got != tc.want {
			t.Errorf("%s: IsNodeCert = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestReissueNodeCertKeepsTheKey: a node certificate signed again keeps the
// node's name and key (the cluster binds each member to its key), gets a
// new validity, and the node's TLS configuration presents it without a
// restart.
func TestReissueNodeCertKeepsTheKey(t *testing.T) {
	dir := t.TempDir()
	if _, err := EnsureGenerated(dir, nil); err != nil {
		t.Fatal(err)
	}
	if err := EnsureNodeCert(dir, "n1"); err != nil {
		t.Fatal(err)
	}
	first, err := NodeCert(dir)
	if err != nil {
		t.Fatal(err)
	}
	conf, err := NodeTLS(dir)
	if err != nil {
		t.Fatal(err)
	}
	presented := func() *x509.Certificate {
		t.Helper()
		c, err := conf.GetCertificate(nil)
		if err != nil {
			t.Fatal(err)
		}
		cc, err := conf.GetClientCertificate(nil)
		if err != nil || cc != c {
			t.Fatalf("client and server side present different certificates: %v", err)
		}
		leaf, err := x509.ParseCertificate(c.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		return leaf
	}
	if !presented().Equal(first) {
		t.Fatal("NodeTLS does not present node.crt")
	}
	ca, err := LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.ReissueNodeCert(dir); err != nil {
		t.Fatal(err)
	}
	second, err := NodeCert(dir)
	if err != nil {
		t.Fatal(err)
	}
	if second.Equal(first) || second.Subject.CommonName != "n1" || !IsNodeCert(second) || !ca.Signs(second) {
		t.Fatalf("re-signed node certificate: %v", second.Subject)
	}
	if KeyFingerprint(second) != KeyFingerprint(first) {
		t.Fatal("the re-signed node certificate has another key: the cluster would refuse the node")
	}
	if !presented().Equal(second) {
		t.Fatal("NodeTLS still presents the previous node certificate")
	}
}
