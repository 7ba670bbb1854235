package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/raft"

	"github.com/coffer-kms/coffer/internal/tlsutil"
)

// tlsStream is raft's stream layer over mutual TLS: both sides present node
// certificates from the cluster CA. Outgoing connections leave from the bind
// address's IP, so that a node's traffic is recognisable by source (the
// partition tests cut links by source IP).
type tlsStream struct {
	net.Listener
	advertise net.Addr
	conf      *tls.Config
	local     *net.TCPAddr
}

func newTLSStream(bind, advertise string, conf *tls.Config, member func(id string) bool, key func(id, keySHA256 string) bool) (*tlsStream, error) {
	if conf == nil || len(conf.Certificates) == 0 && conf.GetCertificate == nil {
		return nil, errors.New("cluster transport: no node certificate")
	}
	c := conf.Clone()
	if c.RootCAs == nil || c.ClientCAs == nil {
		return nil, errors.New("cluster transport: no cluster CA")
	}
	c.ClientAuth = tls.RequireAndVerifyClientCert
	c.MinVersion = tls.VersionTLS12
	c.CipherSuites = tlsutil.AEADSuites()
	// Nodes are identified by their certificate, not by the address they
	// are reached at (a proxy or NAT may sit in between): the client side
	// verifies the chain itself instead of matching a host name.
	c.InsecureSkipVerify = true // #nosec G402 -- the chain and the node identity are verified in VerifyConnection
	// VerifyConnection, not VerifyPeerCertificate: it also runs on resumed
	// sessions, so a node removed since it got a session ticket is refused.
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		raw := make([][]byte, len(cs.PeerCertificates))
		for i, pc := range cs.PeerCertificates {
			raw[i] = pc.Raw
		}
		leaf, err := verifyNode(raw, cs.VerifiedChains, c.RootCAs)
		if err != nil {
			return err
		}
		id := leaf.Subject.CommonName
		if member != nil && !member(id) {
			return fmt.Errorf("node %s is not a member of this cluster (removed?)", id)
		}
		if key != nil && !key(id, tlsutil.KeyFingerprint(leaf)) {
			return fmt.Errorf("node %s presented a certificate whose key is not the one the cluster recorded for it", id)
		}
		return nil
	}
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("cluster transport: listen on %s: %w", bind, err)
	}
	adv, err := net.ResolveTCPAddr("tcp", advertise)
	if err != nil || adv.IP == nil || adv.IP.IsUnspecified() {
		ln.Close() // #nosec G104 -- closing after an earlier error, which is the one returned
		return nil, fmt.Errorf("cluster transport: advertise address %q must be a reachable host:port (%v)", advertise, err)
	}
	s := &tlsStream{Listener: tls.NewListener(ln, c), advertise: adv, conf: c}
	if ta, ok := ln.Addr().(*net.TCPAddr); ok && !ta.IP.IsUnspecified() {
		s.local = &net.TCPAddr{IP: ta.IP}
	}
	return s, nil
}

func (s *tlsStream) Addr() net.Addr { return s.advertise }

func (s *tlsStream) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout, LocalAddr: s.local}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	td := &tls.Dialer{NetDialer: d, Config: s.conf}
	return td.DialContext(ctx, "tcp", string(address))
}

// VerifyNode checks that a peer presented a node certificate from the
// cluster CA: chains are the verified chains when the TLS stack verified
// them (server side), else raw is verified against roots.
func VerifyNode(raw [][]byte, chains [][]*x509.Certificate, roots *x509.CertPool) error {
	_, err := verifyNode(raw, chains, roots)
	return err
}

func verifyNode(raw [][]byte, chains [][]*x509.Certificate, roots *x509.CertPool) (*x509.Certificate, error) {
	var leaf *x509.Certificate
	if len(chains) > 0 {
		leaf = chains[0][0]
	} else {
		if len(raw) == 0 {
			return nil, errors.New("no peer certificate")
		}
		certs := make([]*x509.Certificate, len(raw))
		for i, r := range raw {
			c, err := x509.ParseCertificate(r)
			if err != nil {
				return nil, fmt.Errorf("peer certificate: %w", err)
			}
			certs[i] = c
		}
		inter := x509.NewCertPool()
		for _, c := range certs[1:] {
			inter.AddCert(c)
		}
		if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			return nil, fmt.Errorf("peer certificate is not a node certificate from the cluster CA: %w", err)
		}
		leaf = certs[0]
	}
	if !tlsutil.IsNodeCert(leaf) {
		return nil, fmt.Errorf("peer certificate %q is not a Coffer node certificate", leaf.Subject.CommonName)
	}
	return leaf, nil
}
