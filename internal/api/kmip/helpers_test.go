package kmip

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ovh/kmip-go"
	"github.com/ovh/kmip-go/kmipclient"
	"github.com/ovh/kmip-go/ttlv"

	"github.com/coffer-kms/coffer/internal/service"
	"github.com/coffer-kms/coffer/internal/service/servicetest"
	"github.com/coffer-kms/coffer/internal/tlsutil"
)

// fixture is a service with wallets w and w2, a KMIP server on 127.0.0.1
// and enrolled endpoints: ep-read, ep-rm and ep-manage on w, ep-none
// without grants, ep-two with read_modify on w and w2.
type fixture struct {
	t     testing.TB
	svc   *service.Service
	srv   *Server
	addr  string
	caPEM []byte
	root  context.Context
	creds map[string]tls.Certificate
	pems  map[string][2][]byte // cert, key PEM
	done  chan error
}

func newFixture(t testing.TB, opts Options) *fixture {
	t.Helper()
	dir := t.TempDir()
	tlsDir := filepath.Join(dir, "tls")
	if _, err := tlsutil.EnsureGenerated(tlsDir, []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	ca, err := tlsutil.LoadCA(tlsDir)
	if err != nil {
		t.Fatal(err)
	}
	ca.Valid = 24 * time.Hour
	svc := servicetest.New(t, servicetest.DataDir(filepath.Join(dir, "data")), func(c *service.Config) { c.CertIssuer = ca })
	if _, err := svc.Init(context.Background(), service.Identity{Local: true}, []byte("kmip-test-passphrase")); err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, svc: svc, root: service.WithIdentity(context.Background(), service.LocalRoot()),
		creds: map[string]tls.Certificate{}, pems: map[string][2][]byte{}}
	for _, w := range []string{"w", "w2"} {
		if _, err := svc.Access.CreateWallet(f.root, w, ""); err != nil {
			t.Fatal(err)
		}
	}
	for name, grants := range map[string]map[string]service.Permission{
		"ep-read": {"w": service.PermRead}, "ep-rm": {"w": service.PermReadModify}, "ep-manage": {"w": service.PermManage},
		"ep-none": nil, "ep-two": {"w": service.PermReadModify, "w2": service.PermReadModify},
	} {
		f.enroll(name)
		for w, p := range grants {
			if _, err := svc.Access.SetGrant(f.root, w, name, p); err != nil {
				t.Fatal(err)
			}
		}
	}
	f.caPEM, err = os.ReadFile(filepath.Join(tlsDir, tlsutil.CAFile))
	if err != nil {
		t.Fatal(err)
	}
	reloader, err := tlsutil.NewReloader(filepath.Join(tlsDir, tlsutil.CertFile), filepath.Join(tlsDir, tlsutil.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	base := reloader.ServerConfig()
	base.ClientCAs = ca.Pool()
	conf, err := TLSConfig(base)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = ln.Addr().String()
	f.srv = New(svc, opts)
	f.done = make(chan error, 1)
	go func() { f.done <- f.srv.Serve(ln, conf) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		f.srv.Shutdown(ctx)
	})
	return f
}

// enroll enrols an endpoint with a fresh key and keeps its credentials.
func (f *fixture) enroll(name string) {
	f.t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}}, key)
	if err != nil {
		f.t.Fatal(err)
	}
	enr, err := f.svc.Access.EnrollEndpoint(f.root, name, "", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}))
	if err != nil {
		f.t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
	cert, err := tls.X509KeyPair([]byte(enr.Certificate), keyPEM)
	if err != nil {
		f.t.Fatal(err)
	}
	f.creds[name] = cert
	f.pems[name] = [2][]byte{[]byte(enr.Certificate), keyPEM}
}

// client dials the KMIP server as endpoint name.
func (f *fixture) client(name string, extra ...kmipclient.Option) *kmipclient.Client {
	f.t.Helper()
	opts := append([]kmipclient.Option{kmipclient.WithRootCAPem(f.caPEM), kmipclient.WithClientCertPEM(f.pems[name][0], f.pems[name][1])}, extra...)
	c, err := kmipclient.Dial(f.addr, opts...)
	if err != nil {
		f.t.Fatalf("dial as %s: %v", name, err)
	}
	f.t.Cleanup(func() { c.Close() })
	return c
}

// rawConn is a TLS connection as endpoint name, for hand-made messages.
func (f *fixture) rawConn(name string) *tls.Conn {
	f.t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(f.caPEM)
	c, err := tls.Dial("tcp", f.addr, &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{f.creds[name]}, ServerName: "127.0.0.1"})
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { c.Close() })
	return c
}

// readResponse reads one TTLV response message from c.
func readResponse(c net.Conn) (*kmip.ResponseMessage, error) {
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var hdr [8]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[4:])
	if n > 1<<20 {
		return nil, errors.New("response too large")
	}
	buf := make([]byte, 8+(n+7)/8*8)
	copy(buf, hdr[:])
	if _, err := io.ReadFull(c, buf[8:]); err != nil {
		return nil, err
	}
	var resp kmip.ResponseMessage
	if err := ttlv.UnmarshalTTLV(buf, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// expectClosed checks that the server closes c (EOF or reset) in time.
func expectClosed(t *testing.T, c net.Conn, within time.Duration) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(within))
	var b [1]byte
	_, err := c.Read(b[:])
	var ne net.Error
	if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("connection still open after %s (err %v)", within, err)
	}
}

// reason runs payload as one batch item and returns its result reason
// (0 on success).
func reason(t *testing.T, c *kmipclient.Client, payload kmip.OperationPayload) kmip.ResultReason {
	t.Helper()
	res, err := c.Batch(context.Background(), payload)
	if err != nil {
		t.Fatalf("%T: %v", payload, err)
	}
	if res[0].ResultStatus == kmip.ResultStatusSuccess {
		return 0
	}
	return res[0].ResultReason
}

// must runs payload and fails the test unless it succeeds.
func must[T kmip.OperationPayload](t *testing.T, c *kmipclient.Client, payload kmip.OperationPayload) T {
	t.Helper()
	resp, err := c.Request(context.Background(), payload)
	if err != nil {
		t.Fatalf("%T: %v", payload, err)
	}
	out, ok := resp.(T)
	if !ok {
		t.Fatalf("%T: response %T", payload, resp)
	}
	return out
}
