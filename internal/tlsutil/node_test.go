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
