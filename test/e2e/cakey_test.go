package e2e

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/coffer-kms/coffer/client"
	"github.com/coffer-kms/coffer/internal/datadir"
	"github.com/coffer-kms/coffer/internal/tlsutil"
)

// noCAKeyFile fails when any file in dataDir holds, as a PEM private key,
// the private key of the CA in dataDir/tls/ca.crt.
func noCAKeyFile(t *testing.T, dataDir string) {
	t.Helper()
	ca, err := tlsutil.LoadCACert(filepath.Join(dataDir, "tls"))
	if err != nil {
		t.Fatal(err)
	}
	caPub := caPublicKey(t, ca)
	if _, err := os.Stat(filepath.Join(dataDir, "tls", tlsutil.CAKey)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s: tls/%s exists (%v)", dataDir, tlsutil.CAKey, err)
	}
	if _, err := tlsutil.LoadCA(filepath.Join(dataDir, "tls")); err == nil {
		t.Fatalf("%s: the data dir can sign with the CA", dataDir)
	}
	err = filepath.WalkDir(dataDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for rest := b; ; {
			var blk *pem.Block
			blk, rest = pem.Decode(rest)
			if blk == nil {
				break
			}
			if !strings.Contains(blk.Type, "PRIVATE KEY") {
				continue
			}
			var key any
			if k, err := x509.ParseECPrivateKey(blk.Bytes); err == nil {
				key = k
			} else if k, err := x509.ParsePKCS8PrivateKey(blk.Bytes); err == nil {
				key = k
			}
			if s, ok := key.(crypto.Signer); ok && caPub.Equal(s.Public()) {
				t.Errorf("%s holds the CA private key", p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func caPublicKey(t *testing.T, ca *tlsutil.CA) interface{ Equal(crypto.PublicKey) bool } {
	t.Helper()
	blk, _ := pem.Decode(ca.CertPEM())
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
}

// enrolWithCert enrols name with a certificate request through c and
// checks the certificate against the CA in caFile.
func enrolWithCert(t *testing.T, c *client.Client, name, caFile string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}}, key)
	csr := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	var enr client.Enrollment
	waitUntil(t, 30*time.Second, func() bool {
		var err error
		enr, err = c.EnrollEndpoint(context.Background(), client.EnrollRequest{Name: name, CSR: csr})
		if err != nil {
			t.Logf("enrol %s: %v", name, err)
		}
		return err == nil
	}, "enrolment of "+name)
	verifyClientCert(t, enr.Certificate, caFile)
	ren, err := c.RenewEndpoint(context.Background(), name, csr)
	if err != nil {
		t.Fatalf("renew %s: %v", name, err)
	}
	verifyClientCert(t, ren.Certificate, caFile)
}

func verifyClientCert(t *testing.T, certPEM, caFile string) {
	t.Helper()
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	blk, _ := pem.Decode([]byte(certPEM))
	if blk == nil {
		t.Fatalf("no certificate in %q", certPEM)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("the endpoint certificate does not verify against the cluster CA: %v", err)
	}
}

// TestClusterCAKeySealed: after init and after a join no node keeps the CA
// private key in a file (a follower's data dir cannot mint a certificate);
// enrolment, renewal and joins still work after the leader is killed, the
// new leader signing with the key from the replicated state.
func TestClusterCAKeySealed(t *testing.T) {
	nodes, _ := startCluster(t, 3)
	ctx := context.Background()
	for _, n := range nodes {
		noCAKeyFile(t, n.dataDir)
	}
	_, leader := leaderOf(t, nodes)
	leader.kill9()
	var rest []*node
	for _, n := range nodes {
		if n != leader {
			rest = append(rest, n)
		}
	}
	var next *node
	waitUntil(t, 60*time.Second, func() bool {
		for _, n := range rest {
			if h, err := n.local().Health(ctx); err == nil && h.Role == "leader" {
				next = n
				return true
			}
		}
		return false
	}, "a new leader")
	// Through a follower (forwarded) and the new leader.
	for i, n := range rest {
		enrolWithCert(t, withToken(t, n, nodes[0].token), []string{"app-a", "app-b"}[i], n.caFile)
	}
	// A node joins through the new leader; its server certificate is
	// signed by the cluster CA.
	tok, err := withToken(t, next, nodes[0].token).CreateJoinToken(ctx, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	fresh := clusterNode(t, filepath.Dir(nodes[0].dataDir), 4, "")
	joinNode(t, fresh, next.url, tok.Token)
	noCAKeyFile(t, fresh.dataDir)
	caPEM, err := os.ReadFile(nodes[0].caFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	conn, err := tls.Dial("tcp", strings.TrimPrefix(fresh.url, "https://"), &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatalf("the joined node's server certificate against the cluster CA: %v", err)
	}
	conn.Close()
}

// TestClusterCAKeyMigration: data dirs of a cluster whose CA key is a plain
// file on every node (as older builds left them): the leader seals it into
// the replicated state when its keystore opens, every node then removes its
// file, and enrolment signs with the sealed key.
func TestClusterCAKeyMigration(t *testing.T) {
	var keyPEM []byte
	nodes, _ := startClusterWith(t, 2, func(n *node) {
		b, err := os.ReadFile(filepath.Join(n.dataDir, "tls", tlsutil.CAKey))
		if err != nil {
			t.Fatalf("the first node's CA key before init: %v", err)
		}
		keyPEM = b
	})
	for _, n := range nodes {
		noCAKeyFile(t, n.dataDir)
		n.stop()
	}
	for _, n := range nodes {
		if err := os.WriteFile(filepath.Join(n.dataDir, "tls", tlsutil.CAKey), keyPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		db, err := bolt.Open(datadir.StatePath(n.dataDir), 0o600, &bolt.Options{Timeout: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		err = db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket([]byte("meta"))
			if b == nil || b.Get([]byte("cluster_ca")) == nil {
				return errors.New("no cluster CA record in the state")
			}
			return b.Delete([]byte("cluster_ca"))
		})
		db.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range nodes {
		n.start()
	}
	for _, n := range nodes {
		n.waitState("open")
	}
	for _, n := range nodes {
		waitUntil(t, 60*time.Second, func() bool {
			_, err := os.Stat(filepath.Join(n.dataDir, "tls", tlsutil.CAKey))
			return errors.Is(err, os.ErrNotExist)
		}, "the plain CA key removed on "+n.dataDir)
		noCAKeyFile(t, n.dataDir)
	}
	for i, n := range nodes {
		enrolWithCert(t, withToken(t, n, nodes[0].token), []string{"app-a", "app-b"}[i], n.caFile)
	}
}
