package tlsutil

import (
	"crypto/x509"
	"slices"
)

// IsNodeCert reports whether a verified certificate is a cluster node's
// (as opposed to an endpoint's client certificate from the same CA): only
// nodes may speak raft, or forward requests on a client's behalf.
func IsNodeCert(c *x509.Certificate) bool {
	return c != nil && slices.Contains(c.Subject.OrganizationalUnit, NodeOU)
}
