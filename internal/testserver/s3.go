package testserver

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/coffer-kms/coffer/internal/testutil"
)

// VersitygwVersion is the versitygw scripts/testservers.sh builds.
const VersitygwVersion = "v1.8.0"

// S3 is a running versitygw S3 gateway (posix backend) on 127.0.0.1,
// path-style, region us-east-1, with one empty bucket.
type S3 struct {
	Endpoint  string // 127.0.0.1:PORT
	AccessKey string
	SecretKey string // random per server
	Bucket    string
	Dir       string // the posix backend's root; the bucket is Dir/Bucket
	// CACertPEM is set by StartS3TLS: the CA that signed the server's
	// certificate (for 127.0.0.1). Empty means plain HTTP.
	CACertPEM []byte

	p *proc
}

// StartS3 starts versitygw over plain HTTP with its data in t.TempDir(),
// creates Bucket and stops the server when the test ends. The binary comes
// from the cache dir (see CacheDir; built by scripts/testservers.sh) or
// $PATH; without it the test is skipped, or fails under CI=true.
func StartS3(t testing.TB) *S3 {
	t.Helper()
	return startS3(t, t.TempDir(), false)
}

// StartS3On is StartS3 with the data in dir, such as a SmallTmpfs (the file
// system must support user xattrs).
func StartS3On(t testing.TB, dir string) *S3 {
	t.Helper()
	return startS3(t, dir, false)
}

// StartS3TLS is StartS3 over HTTPS, with a certificate from a fresh CA
// (S3.CACertPEM).
func StartS3TLS(t testing.TB) *S3 {
	t.Helper()
	return startS3(t, t.TempDir(), true)
}

func startS3(t testing.TB, dir string, useTLS bool) *S3 {
	t.Helper()
	bin := filepath.Join(CacheDir(), "versitygw")
	if _, err := os.Stat(bin); err != nil {
		if bin, err = exec.LookPath("versitygw"); err != nil {
			testutil.Unavailable(t, "versitygw not found in %s or $PATH: run scripts/testservers.sh (builds it with go install, about a minute)", CacheDir())
		}
	}
	s := &S3{AccessKey: "coffer-test", SecretKey: "sk-" + randomHex(16), Bucket: "coffer-test", Dir: dir}
	own := t.TempDir()
	logPath := filepath.Join(own, "versitygw.log")
	args := []string{"--access", s.AccessKey, "--secret", s.SecretKey, "-q"}
	client := http.DefaultClient
	scheme := "http://"
	if useTLS {
		ca, certPEM, keyPEM, err := makeCerts()
		if err != nil {
			t.Fatal(err)
		}
		s.CACertPEM = ca
		certFile, keyFile := filepath.Join(own, "cert.pem"), filepath.Join(own, "key.pem")
		if err := os.WriteFile(certFile, certPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--cert", certFile, "--key", keyFile)
		client = &http.Client{Transport: s.transport()}
		scheme = "https://"
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("versitygw log:\n%s", readLog(logPath))
		}
	})
	var err error
	for try := 0; try < 3; try++ {
		s.Endpoint = net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
		s.p, err = startProc(bin, append(args, "--port", s.Endpoint, "posix", s.Dir), logPath)
		if err != nil {
			t.Fatalf("testserver: start versitygw: %v", err)
		}
		err = waitReady(s.p, func() error {
			resp, err := client.Get(scheme + s.Endpoint + "/")
			if err == nil {
				resp.Body.Close() // #nosec G104 -- a readiness probe: the body was not read and holds no data to lose
			}
			return err
		})
		if err == nil {
			break
		}
		s.p.stop()
	}
	if err != nil {
		t.Fatalf("testserver: start versitygw: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Client(t).MakeBucket(ctx, s.Bucket, minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("testserver: create bucket: %v", err)
	}
	return s
}

func (s *S3) transport() *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if s.CACertPEM != nil {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(s.CACertPEM)
		tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	}
	return tr
}

// Client returns a minio-go client for the server with the root credentials.
func (s *S3) Client(t testing.TB) *minio.Client {
	t.Helper()
	c, err := minio.New(s.Endpoint, &minio.Options{
		Creds:        credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""),
		Secure:       s.CACertPEM != nil,
		Transport:    s.transport(),
		Region:       "us-east-1",
		BucketLookup: minio.BucketLookupPath,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Stop stops versitygw by its pid (also run by t.Cleanup).
func (s *S3) Stop() { s.p.stop() }

// makeCerts makes a CA and a server certificate for 127.0.0.1 signed by it.
func makeCerts() (caPEM, certPEM, keyPEM []byte, err error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "coffer test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, nil, nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, nil, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}
