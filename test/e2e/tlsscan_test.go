package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/tlsutil"
)

var raftListenRE = regexp.MustCompile(`cluster:\n  listen: (\S+)`)

// TestTLSListenersOfferAEADOnly scans every TLS listener of a running node
// (HTTPS API, KMIP, raft) with each TLS 1.2 cipher suite Go knows, one at a
// time: only the AEAD suites may be negotiated (no CBC-SHA1, no RSA key
// exchange).
func TestTLSListenersOfferAEADOnly(t *testing.T) {
	nodes, _ := startCluster(t, 1, "kmip:\n  listen: 127.0.0.1:0\n")
	n := nodes[0]
	cfg, err := os.ReadFile(n.config)
	if err != nil {
		t.Fatal(err)
	}
	m := raftListenRE.FindStringSubmatch(string(cfg))
	if m == nil {
		t.Fatalf("no cluster.listen in the node's config %s:\n%s", n.config, cfg)
	}
	listeners := map[string]string{
		"https": strings.TrimPrefix(n.url, "https://"),
		"kmip":  n.kmipAddr(),
		"raft":  m[1],
	}
	var all []*tls.CipherSuite
	all = append(all, tls.CipherSuites()...)
	all = append(all, tls.InsecureCipherSuites()...)
	for name, addr := range listeners {
		var accepted []string
		for _, cs := range all {
			if !slices.Contains(cs.SupportedVersions, tls.VersionTLS12) {
				continue
			}
			if negotiated(t, addr, cs.ID) {
				accepted = append(accepted, cs.Name)
				if !slices.Contains(tlsutil.AEADSuites(), cs.ID) {
					t.Errorf("%s listener %s accepted %s, which is not an AEAD suite", name, addr, cs.Name)
				}
			}
		}
		if len(accepted) == 0 {
			t.Errorf("%s listener %s negotiated no TLS 1.2 suite at all", name, addr)
		}
		t.Logf("%s %s accepts: %s", name, addr, strings.Join(accepted, ", "))
	}
}

// negotiated reports whether a TLS 1.2 client offering only suite gets as
// far as the server's certificate (the suite was chosen; a listener that
// requires a client certificate may still refuse the handshake after that).
func negotiated(t *testing.T, addr string, suite uint16) bool {
	t.Helper()
	chosen := false
	conf := &tls.Config{
		MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS12,
		CipherSuites:       []uint16{suite},
		InsecureSkipVerify: true, // the scan looks at the suite, not at who answers
		VerifyPeerCertificate: func([][]byte, [][]*x509.Certificate) error {
			chosen = true
			return nil
		},
	}
	d := &net.Dialer{Timeout: 10 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, conf)
	if err == nil {
		c.Close()
		return true
	}
	return chosen
}
