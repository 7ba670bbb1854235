// Package tlsutil creates Coffer's certificate authority and server
// certificate, and serves a certificate that can be reloaded on SIGHUP.
package tlsutil

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coffer-kms/coffer/internal/fsutil"
)

// Files of the generated TLS material inside <data-dir>/tls.
const (
	CAFile   = "ca.crt"
	CAKey    = "ca.key"
	CertFile = "server.crt"
	KeyFile  = "server.key"
)

// EnsureGenerated creates a CA and a server certificate in dir unless they
// exist. hosts are DNS names or IPs for the server certificate (localhost,
// 127.0.0.1 and ::1 are always included).
func EnsureGenerated(dir string, hosts []string) (created bool, err error) {
	if _, err := os.Stat(filepath.Join(dir, CertFile)); err == nil {
		return false, nil
	}
	if err := fsutil.EnsureDir(dir); err != nil {
		return false, err
	}
	now := time.Now()
	// A CA already there (restored from a backup) is kept: endpoints'
	// client certificates and clients' CA files stay valid; only the server
	// certificate is made anew.
	var (
		ca     *x509.Certificate
		caSign crypto.Signer
		caDER  []byte
	)
	if old, err := LoadCA(dir); err == nil {
		ca, caSign = old.cert, old.key
	} else if _, serr := os.Stat(filepath.Join(dir, CAFile)); serr == nil {
		if _, kerr := os.Stat(filepath.Join(dir, CAKey)); errors.Is(kerr, os.ErrNotExist) {
			// The CA key is held sealed in the replicated state: until the
			// keystore opens and a certificate is signed with it, the server
			// presents a self-signed one (the local control socket needs none).
			return true, writeInterimServerCert(dir, hosts)
		}
		return false, fmt.Errorf("TLS: %s exists but cannot be used: %w", filepath.Join(dir, CAFile), err)
	}
	if ca == nil {
		caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return false, err
		}
		caSign = caKey
		caTmpl := &x509.Certificate{
			SerialNumber:          serial(),
			Subject:               pkix.Name{CommonName: "Coffer CA", Organization: []string{"Coffer"}},
			NotBefore:             now.Add(-time.Hour),
			NotAfter:              now.AddDate(10, 0, 0),
			KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
			BasicConstraintsValid: true,
			IsCA:                  true,
			MaxPathLenZero:        true,
		}
		caDER, err = x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
		if err != nil {
			return false, fmt.Errorf("create CA certificate: %w", err)
		}
		ca, _ = x509.ParseCertificate(caDER)
	}
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return false, err
	}
	tmpl := serverTemplate(now)
	tmpl.DNSNames, tmpl.IPAddresses = serverNames(hosts)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &srvKey.PublicKey, caSign)
	if err != nil {
		return false, fmt.Errorf("create server certificate: %w", err)
	}
	write := func(name, typ string, b []byte) error {
		return fsutil.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}))
	}
	srvKeyDER, _ := x509.MarshalECPrivateKey(srvKey)
	type file struct {
		n, t string
		b    []byte
	}
	var files []file
	if caDER != nil {
		caKeyDER, _ := x509.MarshalECPrivateKey(caSign.(*ecdsa.PrivateKey))
		files = append(files, file{CAKey, "EC PRIVATE KEY", caKeyDER}, file{CAFile, "CERTIFICATE", caDER})
	}
	// Server cert last: its presence marks the set complete.
	files = append(files, file{KeyFile, "EC PRIVATE KEY", srvKeyDER}, file{CertFile, "CERTIFICATE", der})
	for _, f := range files {
		if err := write(f.n, f.t, f.b); err != nil {
			return false, err
		}
	}
	return true, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

// Reloader serves the current certificate and reloads it from files on demand.
type Reloader struct {
	certFile, keyFile string
	cur               atomic.Pointer[tls.Certificate]
}

// NewReloader loads the key pair.
func NewReloader(certFile, keyFile string) (*Reloader, error) {
	r := &Reloader{certFile: certFile, keyFile: keyFile}
	return r, r.Reload()
}

// Reload re-reads the files; on error the old certificate stays in use.
func (r *Reloader) Reload() error {
	c, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("load TLS certificate %s: %w", r.certFile, err)
	}
	r.cur.Store(&c)
	return nil
}

// GetCertificate implements tls.Config.GetCertificate.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c := r.cur.Load()
	if c == nil {
		return nil, errors.New("no certificate loaded")
	}
	return c, nil
}

// ServerConfig is a TLS 1.2+ server config using r, offering AEAD cipher
// suites only.
func (r *Reloader) ServerConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, CipherSuites: AEADSuites(), GetCertificate: r.GetCertificate}
}

// AEADSuites are the TLS 1.2 cipher suites every Coffer listener and node
// client offers: forward-secret ECDHE with an AEAD (AES-GCM or
// ChaCha20-Poly1305). The CBC-SHA1 suites Go would also accept are left out.
// TLS 1.3 suites are not configurable in Go and are all AEAD.
func AEADSuites() []uint16 {
	return []uint16{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
		tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
	}
}

// CA signs endpoint client certificates with the generated CA in a TLS dir.
type CA struct {
	cert  *x509.Certificate
	key   crypto.Signer
	pem   []byte
	Valid time.Duration // lifetime of issued client certificates
}

// LoadCA reads ca.crt and ca.key from dir.
func LoadCA(dir string) (*CA, error) {
	return LoadCAFiles(filepath.Join(dir, CAFile), filepath.Join(dir, CAKey))
}

// LoadPool reads a PEM bundle of CA certificates.
func LoadPool(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read client CA: %w", err)
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("client CA %s: no PEM certificate found", file)
	}
	return p, nil
}

// LoadCAFiles reads a CA certificate and its EC private key (PEM).
func LoadCAFiles(certFile, keyFile string) (*CA, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("read CA certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("read CA key: %w", err)
	}
	defer clear(keyPEM)
	ca, err := ParseCA(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("CA %s, %s: %w", certFile, keyFile, err)
	}
	return ca, nil
}

// Pool is a cert pool holding the CA (to verify client certificates).
func (c *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.cert)
	return p
}

// IssueClientCert signs a client-authentication certificate for commonName
// with the public key of csr. The CSR's own subject and extensions are
// ignored: the server decides what it certifies.
func (c *CA) IssueClientCert(csr *x509.CertificateRequest, commonName string) ([]byte, []byte, error) {
	switch csr.PublicKey.(type) {
	case *ecdsa.PublicKey, *rsa.PublicKey, ed25519.PublicKey:
	default:
		return nil, nil, fmt.Errorf("unsupported CSR public key type %T", csr.PublicKey)
	}
	if c.key == nil {
		return nil, nil, ErrNoCAKey
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: commonName, Organization: []string{"Coffer endpoint"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     c.notAfter(now.Add(c.Valid)),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, csr.PublicKey, c.key)
	if err != nil {
		return nil, nil, fmt.Errorf("sign client certificate: %w", err)
	}
	return der, c.pem, nil
}

// Node certificates: the identity of a cluster node on the raft transport
// and when it forwards a client's request to the leader.
const (
	NodeCertFile = "node.crt"
	NodeKeyFile  = "node.key"
	// NodeOU is the organizational unit that marks a node certificate;
	// endpoint certificates from the same CA never carry it.
	NodeOU = "coffer-node"
)

// IssueNodeCert signs a node certificate for nodeID (server and client
// authentication, OU NodeOU).
func (c *CA) IssueNodeCert(pub crypto.PublicKey, nodeID string) ([]byte, error) {
	if c.key == nil {
		return nil, ErrNoCAKey
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: nodeID, Organization: []string{"Coffer"}, OrganizationalUnit: []string{NodeOU}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     c.notAfter(now.AddDate(5, 0, 0)),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     []string{nodeID},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, pub, c.key)
	if err != nil {
		return nil, fmt.Errorf("sign node certificate: %w", err)
	}
	return der, nil
}

// notAfter is t, or the end of the CA certificate if that comes first: past
// it nothing the CA signed verifies.
func (c *CA) notAfter(t time.Time) time.Time {
	if end := c.cert.NotAfter; end.Before(t) {
		return end
	}
	return t
}

// NotAfter is the end of the CA certificate.
func (c *CA) NotAfter() time.Time { return c.cert.NotAfter }

// CertPEM is the CA certificate (PEM).
func (c *CA) CertPEM() []byte { return c.pem }

// Fingerprint is the hex SHA-256 of the CA certificate (DER): join tokens
// carry it so that a joining node can trust the leader it contacts.
func (c *CA) Fingerprint() string {
	sum := sha256.Sum256(c.cert.Raw)
	return hex.EncodeToString(sum[:])
}

// KeyFingerprint is the hex SHA-256 of a certificate's public key
// (SubjectPublicKeyInfo): the replicated membership binds each node to it,
// so that a certificate minted with a member's name but another key, by
// anyone holding the CA key, is not that member.
func KeyFingerprint(c *x509.Certificate) string {
	if c == nil {
		return ""
	}
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return hex.EncodeToString(sum[:])
}

// NodeKeyFingerprint is KeyFingerprint of the node certificate in dir.
func NodeKeyFingerprint(dir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, NodeCertFile))
	if err != nil {
		return "", fmt.Errorf("node certificate: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return "", fmt.Errorf("node certificate %s: no PEM block", filepath.Join(dir, NodeCertFile))
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return "", fmt.Errorf("node certificate %s: %w", filepath.Join(dir, NodeCertFile), err)
	}
	return KeyFingerprint(c), nil
}

// EnsureNodeCert makes dir/node.crt and node.key for nodeID with the CA in
// dir, unless a certificate for nodeID is there.
func EnsureNodeCert(dir, nodeID string) error {
	return EnsureNodeCertWith(dir, nodeID, func() (*CA, error) { return LoadCA(dir) })
}

// NodeTLS is the mutual-TLS configuration of a node: its node certificate,
// and the CA in dir as the only root for peers.
//
// The certificate is read again when node.crt is replaced (ReissueNodeCert),
// so a renewed one is presented without a restart.
func NodeTLS(dir string) (*tls.Config, error) {
	certFile := filepath.Join(dir, NodeCertFile)
	st, _ := os.Stat(certFile) // before the load: a file replaced in between is loaded again (nil: at the first handshake)
	r, err := NewReloader(certFile, filepath.Join(dir, NodeKeyFile))
	if err != nil {
		return nil, fmt.Errorf("node certificate: %w", err)
	}
	src := &pairSource{r: r, certFile: certFile, seen: st}
	pool, err := LoadPool(filepath.Join(dir, CAFile))
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		GetCertificate:       func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return src.get() },
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return src.get() },
		RootCAs:              pool, ClientCAs: pool, MinVersion: tls.VersionTLS12, CipherSuites: AEADSuites(),
	}, nil
}

// pairSource is a Reloader reloaded when the certificate file is replaced
// (another file, or another modification time); a pair that does not load
// leaves the previous one in use.
type pairSource struct {
	r        *Reloader
	certFile string
	mu       sync.Mutex
	seen     os.FileInfo
}

func (p *pairSource) get() (*tls.Certificate, error) {
	if st, err := os.Stat(p.certFile); err == nil {
		p.mu.Lock()
		if p.seen == nil || !os.SameFile(st, p.seen) || !st.ModTime().Equal(p.seen.ModTime()) {
			if p.r.Reload() == nil {
				p.seen = st
			}
		}
		p.mu.Unlock()
	}
	return p.r.GetCertificate(nil)
}

// NodeCert reads the node certificate in dir.
func NodeCert(dir string) (*x509.Certificate, error) {
	return ReadCert(filepath.Join(dir, NodeCertFile))
}
