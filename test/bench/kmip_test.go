package bench

// KMIP Get throughput: Coffer's KMIP server against Debian's
// pykmip-server (python3-pykmip 0.10), with the same client (kmip-go's
// kmipclient, KMIP 1.4, one TLS connection per worker), the same number of
// concurrent workers and the same operation: Get of one AES-256 key created
// through KMIP by the same client identity. scripts/bench.sh prints the ratio.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ovh/kmip-go"
	"github.com/ovh/kmip-go/kmipclient"
	"github.com/ovh/kmip-go/payloads"

	kmipapi "github.com/coffer-kms/coffer/internal/api/kmip"
	"github.com/coffer-kms/coffer/internal/service"
	"github.com/coffer-kms/coffer/internal/service/servicetest"
	"github.com/coffer-kms/coffer/internal/testutil"
	"github.com/coffer-kms/coffer/internal/tlsutil"
)

// KMIPWorkers is the number of concurrent clients (connections) in both runs.
const KMIPWorkers = 8

// BenchmarkKMIPGetCoffer: Get through Coffer's KMIP listener (service in
// process, state on disk, endpoint certificate from Coffer's CA).
func BenchmarkKMIPGetCoffer(b *testing.B) {
	addr, caPEM, certPEM, keyPEM := startCofferKMIP(b)
	kmipGets(b, addr, caPEM, certPEM, keyPEM)
}

// BenchmarkKMIPGetPeer: the same against pykmip-server on 127.0.0.1.
func BenchmarkKMIPGetPeer(b *testing.B) {
	addr, caPEM, certPEM, keyPEM := startPyKMIPServer(b)
	kmipGets(b, addr, caPEM, certPEM, keyPEM)
}

func kmipGets(b *testing.B, addr string, caPEM, certPEM, keyPEM []byte) {
	dial := func() *kmipclient.Client {
		c, err := kmipclient.Dial(addr, kmipclient.WithRootCAPem(caPEM), kmipclient.WithClientCertPEM(certPEM, keyPEM),
			kmipclient.WithKmipVersions(kmip.V1_4), kmipclient.EnforceVersion(kmip.V1_4))
		if err != nil {
			b.Fatalf("dial %s: %v", addr, err)
		}
		return c
	}
	setup := dial()
	defer setup.Close()
	resp, err := setup.Request(context.Background(), &payloads.CreateRequestPayload{ObjectType: kmip.ObjectTypeSymmetricKey,
		TemplateAttribute: kmip.TemplateAttribute{Attribute: []kmip.Attribute{
			{AttributeName: kmip.AttributeNameCryptographicAlgorithm, AttributeValue: kmip.CryptographicAlgorithmAES},
			{AttributeName: kmip.AttributeNameCryptographicLength, AttributeValue: int32(256)},
			{AttributeName: kmip.AttributeNameCryptographicUsageMask, AttributeValue: kmip.CryptographicUsageEncrypt | kmip.CryptographicUsageDecrypt},
		}}})
	if err != nil {
		b.Fatalf("create: %v", err)
	}
	id := resp.(*payloads.CreateResponsePayload).UniqueIdentifier
	clients := make([]*kmipclient.Client, KMIPWorkers)
	for i := range clients {
		clients[i] = dial()
		defer clients[i].Close()
		// Warm up each connection (and check the Get works).
		if _, err := clients[i].Request(context.Background(), &payloads.GetRequestPayload{UniqueIdentifier: id}); err != nil {
			b.Fatalf("get: %v", err)
		}
	}
	b.ResetTimer()
	per := (b.N + KMIPWorkers - 1) / KMIPWorkers
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Add(1)
		go func(c *kmipclient.Client) {
			defer wg.Done()
			for i := 0; i < per; i++ {
				r, err := c.Request(context.Background(), &payloads.GetRequestPayload{UniqueIdentifier: id})
				if err != nil {
					b.Error(err)
					return
				}
				if k, err := r.(*payloads.GetResponsePayload).Object.(*kmip.SymmetricKey).KeyMaterial(); err != nil || len(k) != 32 {
					b.Errorf("get returned %d bytes (%v)", len(k), err)
					return
				}
			}
		}(c)
	}
	wg.Wait()
	b.ReportMetric(float64(per*KMIPWorkers)/b.Elapsed().Seconds(), "gets/s")
}

func startCofferKMIP(b *testing.B) (addr string, caPEM, certPEM, keyPEM []byte) {
	dir := b.TempDir()
	tlsDir := filepath.Join(dir, "tls")
	if _, err := tlsutil.EnsureGenerated(tlsDir, []string{"127.0.0.1"}); err != nil {
		b.Fatal(err)
	}
	ca, err := tlsutil.LoadCA(tlsDir)
	if err != nil {
		b.Fatal(err)
	}
	ca.Valid = 24 * time.Hour
	svc := servicetest.New(b, servicetest.DataDir(filepath.Join(dir, "data")), func(c *service.Config) { c.CertIssuer, c.NoAutoBackup = ca, true })
	ctx := context.Background()
	if _, err := svc.Init(ctx, service.Identity{Local: true}, []byte("bench-passphrase")); err != nil {
		b.Fatal(err)
	}
	root := service.WithIdentity(ctx, service.LocalRoot())
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "bench"}}, key)
	enr, err := svc.Access.EnrollEndpoint(root, "bench", "", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := svc.Access.SetGrant(root, "default", "bench", service.PermManage); err != nil {
		b.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	reloader, err := tlsutil.NewReloader(filepath.Join(tlsDir, tlsutil.CertFile), filepath.Join(tlsDir, tlsutil.KeyFile))
	if err != nil {
		b.Fatal(err)
	}
	base := reloader.ServerConfig()
	base.ClientCAs = ca.Pool()
	conf, err := kmipapi.TLSConfig(base)
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := kmipapi.New(svc, kmipapi.Options{})
	go srv.Serve(ln, conf)
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	caPEM, err = os.ReadFile(filepath.Join(tlsDir, tlsutil.CAFile))
	if err != nil {
		b.Fatal(err)
	}
	return ln.Addr().String(), caPEM, []byte(enr.Certificate), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

// startPyKMIPServer runs /usr/bin/pykmip-server in a temp dir with its own
// CA, server and client certificates on 127.0.0.1. Without it the benchmark
// is skipped (fails under CI=true).
func startPyKMIPServer(b *testing.B) (addr string, caPEM, certPEM, keyPEM []byte) {
	bin, err := exec.LookPath("pykmip-server")
	if err != nil {
		testutil.Unavailable(b, "pykmip-server not found: apt-get install -y python3-pykmip")
	}
	dir := b.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		b.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	issue := func(serial int64, cn string, usage x509.ExtKeyUsage) (certPEM, keyPEM []byte) {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now().Add(-time.Hour),
			NotAfter: time.Now().Add(24 * time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{usage}, KeyUsage: x509.KeyUsageDigitalSignature,
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
		if err != nil {
			b.Fatal(err)
		}
		kder, _ := x509.MarshalPKCS8PrivateKey(k)
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
	}
	caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	srvCert, srvKey := issue(2, "127.0.0.1", x509.ExtKeyUsageServerAuth)
	certPEM, keyPEM = issue(3, "bench", x509.ExtKeyUsageClientAuth)
	for name, data := range map[string][]byte{"ca.pem": caPEM, "server.pem": srvCert, "server.key": srvKey} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			b.Fatal(err)
		}
	}
	os.Mkdir(filepath.Join(dir, "policies"), 0o700)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	conf := fmt.Sprintf(`[server]
hostname=127.0.0.1
port=%d
certificate_path=%s
key_path=%s
ca_path=%s
auth_suite=TLS1.2
policy_path=%s
enable_tls_client_auth=True
logging_level=WARNING
database_path=%s
`, port, filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key"), filepath.Join(dir, "ca.pem"), filepath.Join(dir, "policies"), filepath.Join(dir, "pykmip.db"))
	if err := os.WriteFile(filepath.Join(dir, "server.conf"), []byte(conf), 0o600); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, "-f", filepath.Join(dir, "server.conf"), "-l", filepath.Join(dir, "server.log"))
	cmd.Dir = dir
	// pykmip-server forks a policy monitor: run it in its own process group
	// and end the whole group (only what this benchmark started).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, _ := os.Create(filepath.Join(dir, "stdout.log"))
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		out.Close()
	})
	addr = fmt.Sprintf("127.0.0.1:%d", port)
	if err := testutil.Poll(30*time.Second, func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err
	}); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "stdout.log"))
		b.Fatalf("pykmip-server did not start: %v\n%s", err, log)
	}
	return addr, caPEM, certPEM, keyPEM
}
