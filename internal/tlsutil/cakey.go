package tlsutil

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/coffer-kms/coffer/internal/fsutil"
)

// ErrNoCAKey: the CA is known by its certificate only; nothing can be
// signed with it here.
var ErrNoCAKey = errors.New("the CA private key is not available here")

// ParseCA makes a CA from its certificate and private key (PEM; EC or
// PKCS#8). A nil or empty keyPEM gives a CA that verifies but cannot sign.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	cb, _ := pem.Decode(certPEM)
	if cb == nil || cb.Type != "CERTIFICATE" {
		return nil, errors.New("CA certificate: no PEM certificate")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	ca := &CA{cert: cert, pem: certPEM, Valid: 2 * 365 * 24 * time.Hour}
	if len(keyPEM) == 0 {
		return ca, nil
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, errors.New("CA key: no PEM block")
	}
	defer clear(kb.Bytes)
	if k, err := x509.ParseECPrivateKey(kb.Bytes); err == nil {
		ca.key = k
	} else if k, err2 := x509.ParsePKCS8PrivateKey(kb.Bytes); err2 == nil {
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, errors.New("CA key: not a signing key")
		}
		ca.key = s
	} else {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	if !publicKeysEqual(ca.key.Public(), cert.PublicKey) {
		return nil, errors.New("CA key: does not belong to the CA certificate")
	}
	return ca, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ea, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ea.Equal(b)
}

// LoadCACert reads the CA certificate in dir only: a CA that verifies
// peers and client certificates but cannot sign.
func LoadCACert(dir string) (*CA, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, CAFile))
	if err != nil {
		return nil, fmt.Errorf("read CA certificate: %w", err)
	}
	ca, err := ParseCA(certPEM, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, CAFile), err)
	}
	return ca, nil
}

// LoadCAKeyPEM reads the plain CA private key file in dir (PEM). ok is
// false when there is none.
func LoadCAKeyPEM(dir string) (key []byte, ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(dir, CAKey))
	if errors.Is(err, os.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read CA key: %w", err)
	}
	return b, true, nil
}

// HasKey reports whether c can sign.
func (c *CA) HasKey() bool { return c.key != nil }

// KeyPEM is the CA private key (PEM, PKCS#8): the caller seals it and
// clears the slice.
func (c *CA) KeyPEM() ([]byte, error) {
	if c.key == nil {
		return nil, ErrNoCAKey
	}
	der, err := x509.MarshalPKCS8PrivateKey(c.key)
	if err != nil {
		return nil, fmt.Errorf("encode the CA key: %w", err)
	}
	defer clear(der)
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// SameCert reports whether c and o are the same CA certificate.
func (c *CA) SameCert(o *CA) bool { return o != nil && c.cert.Equal(o.cert) }

// Signs reports whether cert was signed by c.
func (c *CA) Signs(cert *x509.Certificate) bool {
	return cert != nil && cert.CheckSignatureFrom(c.cert) == nil
}

func serverTemplate(now time.Time) *x509.Certificate {
	return &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "coffer server", Organization: []string{"Coffer"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(2, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
}

// serverNames are the subject alternative names of a server certificate
// for hosts: localhost, 127.0.0.1, ::1 and the host name are always there.
func serverNames(hosts []string) (dns []string, ips []net.IP) {
	all := append([]string{"localhost", "127.0.0.1", "::1"}, hosts...)
	if hn, err := os.Hostname(); err == nil && hn != "" {
		all = append(all, hn)
	}
	seen := map[string]bool{}
	for _, h := range all {
		if h == "" || seen[h] {
			continue
		}
		seen[h] = true
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
		} else {
			dns = append(dns, h)
		}
	}
	return dns, ips
}

// interimCN is the common name of the interim server certificate.
const interimCN = "coffer server (interim, until the keystore opens)"

// IsInterimServerCert reports whether c is the self-signed server
// certificate Coffer writes while the CA key is sealed away, which is
// replaced once the keystore opens; any other certificate not signed by
// Coffer's CA is the operator's own.
func IsInterimServerCert(c *x509.Certificate) bool {
	// Self-signed, though not a CA: CheckSignatureFrom would refuse it as
	// a parent.
	return c != nil && c.Subject.CommonName == interimCN && c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature) == nil
}

// IsCofferServerCert reports whether c is a server certificate a Coffer CA
// issued, though not necessarily the one in ca.crt now: the server
// certificate a node kept from the CA it made for itself before it joined
// a cluster (a join by a build that did not sign a server certificate) is
// Coffer's, not the operator's, and is replaced once the keystore opens.
func IsCofferServerCert(c *x509.Certificate) bool {
	return c != nil && c.Subject.CommonName == "coffer server" && slices.Equal(c.Subject.Organization, []string{"Coffer"}) &&
		c.Issuer.CommonName == "Coffer CA" && slices.Equal(c.Issuer.Organization, []string{"Coffer"})
}

// writeInterimServerCert writes a self-signed server certificate for hosts.
func writeInterimServerCert(dir string, hosts []string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := serverTemplate(time.Now())
	tmpl.Subject.CommonName = interimCN
	tmpl.DNSNames, tmpl.IPAddresses = serverNames(hosts)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("create the interim server certificate: %w", err)
	}
	return writeServerPair(dir, key, der)
}

func writeServerPair(dir string, key *ecdsa.PrivateKey, der []byte) error {
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	defer clear(kder)
	// The certificate last: its presence marks the pair complete.
	if err := fsutil.WriteFile(filepath.Join(dir, KeyFile), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})); err != nil {
		return err
	}
	return fsutil.WriteFile(filepath.Join(dir, CertFile), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// ServerCert reads the server certificate in dir.
func ServerCert(dir string) (*x509.Certificate, error) {
	return ReadCert(filepath.Join(dir, CertFile))
}

// ReadCert reads the first PEM certificate of file.
func ReadCert(file string) (*x509.Certificate, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s: no PEM certificate", file)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return c, nil
}

// maxServerNames bounds the names a server certificate request may carry.
const maxServerNames = 64

// IssueServerCert signs a server certificate for pub with the given names.
func (c *CA) IssueServerCert(pub crypto.PublicKey, dns []string, ips []net.IP) ([]byte, error) {
	if c.key == nil {
		return nil, ErrNoCAKey
	}
	if len(dns)+len(ips) == 0 || len(dns)+len(ips) > maxServerNames {
		return nil, fmt.Errorf("a server certificate names 1 to %d hosts, not %d", maxServerNames, len(dns)+len(ips))
	}
	tmpl := serverTemplate(time.Now())
	tmpl.NotAfter = c.notAfter(tmpl.NotAfter)
	tmpl.DNSNames, tmpl.IPAddresses = dns, ips
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, pub, c.key)
	if err != nil {
		return nil, fmt.Errorf("sign server certificate: %w", err)
	}
	return der, nil
}

// ReissueServerCert writes a new server key and certificate in dir signed
// by c, for the names of the server certificate there (the default names
// if there is none).
//
// The key in dir is kept when it is readable: only the certificate is
// written, in one atomic write, so a crash leaves the old certificate or
// the new one beside the key, never a new key beside the old certificate
// (a pair the server would refuse to load at its next start).
func (c *CA) ReissueServerCert(dir string) error {
	dns, ips := serverNames(nil)
	if old, err := ServerCert(dir); err == nil {
		dns, ips = old.DNSNames, old.IPAddresses
	}
	if pub, ok := serverPublicKey(dir); ok {
		der, err := c.IssueServerCert(pub, dns, ips)
		if err != nil {
			return err
		}
		return fsutil.WriteFile(filepath.Join(dir, CertFile), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	der, err := c.IssueServerCert(&key.PublicKey, dns, ips)
	if err != nil {
		return err
	}
	return writeServerPair(dir, key, der)
}

// ReissueNodeCert signs the node certificate in dir again, for the same
// node and the same key (node.key is not touched: the cluster binds each
// member to its key), with a new validity. Only node.crt is written, in one
// atomic write.
func (c *CA) ReissueNodeCert(dir string) error {
	old, err := NodeCert(dir)
	if err != nil {
		return fmt.Errorf("node certificate: %w", err)
	}
	pub, ok := publicKeyOf(filepath.Join(dir, NodeKeyFile))
	if !ok || !publicKeysEqual(pub, old.PublicKey) {
		return fmt.Errorf("%s is missing, unreadable or not the key of %s", filepath.Join(dir, NodeKeyFile), filepath.Join(dir, NodeCertFile))
	}
	der, err := c.IssueNodeCert(pub, old.Subject.CommonName)
	if err != nil {
		return err
	}
	return fsutil.WriteFile(filepath.Join(dir, NodeCertFile), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// serverPublicKey returns the public key of the server key in dir, if it
// is there and readable (SEC 1 EC or PKCS #8).
func serverPublicKey(dir string) (crypto.PublicKey, bool) {
	return publicKeyOf(filepath.Join(dir, KeyFile))
}

// publicKeyOf returns the public key of the private key in file, if it is
// there and readable (SEC 1 EC or PKCS #8).
func publicKeyOf(file string) (crypto.PublicKey, bool) {
	b, err := os.ReadFile(file) // #nosec G304 -- a key file of the data dir's tls directory
	if err != nil {
		return nil, false
	}
	defer clear(b)
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, false
	}
	defer clear(blk.Bytes)
	if k, err := x509.ParseECPrivateKey(blk.Bytes); err == nil {
		return k.Public(), true
	}
	if k, err := x509.ParsePKCS8PrivateKey(blk.Bytes); err == nil {
		if s, ok := k.(crypto.Signer); ok {
			return s.Public(), true
		}
	}
	return nil, false
}

// ServerCSR is a certificate request for key naming the hosts of the
// server certificate in dir: a joining node asks the cluster's CA to sign
// its server certificate with it.
func ServerCSR(dir string, key crypto.Signer) ([]byte, error) {
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: "coffer server"}}
	tmpl.DNSNames, tmpl.IPAddresses = serverNames(nil)
	if old, err := ServerCert(dir); err == nil {
		tmpl.DNSNames, tmpl.IPAddresses = old.DNSNames, old.IPAddresses
	}
	return x509.CreateCertificateRequest(rand.Reader, tmpl, key)
}

// WriteServerPair stores a server key and its certificate (DER) in dir.
func WriteServerPair(dir string, key *ecdsa.PrivateKey, certDER []byte) error {
	return writeServerPair(dir, key, certDER)
}

// EnsureNodeCertWith is EnsureNodeCert with the CA from ca, asked only
// when a certificate must be made.
func EnsureNodeCertWith(dir, nodeID string, ca func() (*CA, error)) error {
	if c, err := ReadCert(filepath.Join(dir, NodeCertFile)); err == nil && c.Subject.CommonName == nodeID {
		return nil
	}
	signer, err := ca()
	if err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	der, err := signer.IssueNodeCert(&key.PublicKey, nodeID)
	if err != nil {
		return err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	defer clear(kder)
	if err := fsutil.WriteFile(filepath.Join(dir, NodeKeyFile), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})); err != nil {
		return err
	}
	return fsutil.WriteFile(filepath.Join(dir, NodeCertFile), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}
