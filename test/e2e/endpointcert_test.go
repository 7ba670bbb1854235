package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestEndpointCertRenewAndDeny: renewing an endpoint's certificate keeps
// its grants, and the replaced certificate is refused at the TLS handshake
// on HTTPS and KMIP; revoking the endpoint puts its current certificate on
// the same deny-list.
func TestEndpointCertRenewAndDeny(t *testing.T) {
	n := initialisedNode(t, filepath.Join(t.TempDir(), "data"), "kmip:\n  listen: 127.0.0.1:0\n")
	dir := n.enrollKMIP("app", "default", "read")
	load := func() tls.Certificate {
		t.Helper()
		c, err := tls.LoadX509KeyPair(filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key"))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	roots := x509.NewCertPool()
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	roots.AppendCertsFromPEM(caPEM)
	// readWallet: the status of reading wallet default with cert alone
	// (mutual TLS, no token), or -1 when the connection failed.
	// A session cache lets a later connection resume the TLS session of an
	// earlier one with the same certificate (no certificate is sent then).
	sessions := map[string]tls.ClientSessionCache{}
	readWallet := func(cert tls.Certificate) (int, error) {
		cache := sessions[string(cert.Certificate[0])]
		if cache == nil {
			cache = tls.NewLRUClientSessionCache(8)
			sessions[string(cert.Certificate[0])] = cache
		}
		hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}, ClientSessionCache: cache}}}
		defer hc.CloseIdleConnections()
		resp, err := hc.Get(n.url + "/api/v1/wallets/default")
		if err != nil {
			return -1, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	// kmipRefuses: the KMIP listener ends the connection of cert at the
	// handshake instead of waiting for a request.
	kmipRefuses := func(cert tls.Certificate, wait time.Duration) bool {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", n.kmipAddr(), &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", InsecureSkipVerify: true, Certificates: []tls.Certificate{cert}})
		if err != nil {
			return true
		}
		defer conn.Close()
		conn.SetReadDeadline(time.Now().Add(wait))
		_, err = conn.Read(make([]byte, 1))
		var ne net.Error
		return !(errors.As(err, &ne) && ne.Timeout())
	}

	old := load()
	if code, err := readWallet(old); code != http.StatusOK {
		t.Fatalf("the enrolled certificate reading its granted wallet: %d %v", code, err)
	}
	if kmipRefuses(old, 3*time.Second) {
		t.Fatal("KMIP refused the enrolled certificate")
	}
	if out, err := coffer(t, nil, "endpoint", "renew", "app", "--dir", dir, "--data-dir", n.dataDir); err != nil || !strings.Contains(out, "renewed") {
		t.Fatalf("renew: %v\n%s", err, out)
	}
	renewed := load()
	if string(renewed.Certificate[0]) == string(old.Certificate[0]) {
		t.Fatal("renew left the same certificate in the directory")
	}
	if code, err := readWallet(renewed); code != http.StatusOK {
		t.Fatalf("the renewed certificate reading the wallet granted before the renewal: %d %v", code, err)
	}
	// Also when the client resumes the session it had before the renewal.
	if code, err := readWallet(old); !refusedAtHandshake(err) {
		t.Fatalf("the replaced certificate (resuming its session): status %d, error %v; want the TLS handshake refused", code, err)
	}
	if !kmipRefuses(old, 30*time.Second) {
		t.Fatal("KMIP kept a connection with the replaced certificate")
	}
	if out, err := coffer(t, nil, "endpoint", "renew", "app", "--dir", filepath.Join(t.TempDir(), "nowhere"), "--data-dir", n.dataDir); err == nil || !strings.Contains(out, "not an enrolled directory") {
		t.Fatalf("renew into a directory that is not enrolled: %v\n%s", err, out)
	}
	if out, err := coffer(t, nil, "endpoint", "revoke", "app", "--data-dir", n.dataDir); err != nil {
		t.Fatalf("revoke: %v\n%s", err, out)
	}
	if code, err := readWallet(renewed); !refusedAtHandshake(err) {
		t.Fatalf("a revoked endpoint's certificate: status %d, error %v; want the TLS handshake refused", code, err)
	}
	if !kmipRefuses(renewed, 30*time.Second) {
		t.Fatal("KMIP kept a connection with a revoked endpoint's certificate")
	}
}

// refusedAtHandshake: a request got no HTTP answer because the server
// refused the client certificate. With TLS 1.3 the client finishes its side
// of the handshake before the server has checked the certificate, so the
// refusal reaches it either as the server's alert or, when the server has
// already closed the connection as the request is written, as a broken
// pipe or reset; any HTTP answer (even 401) means it was not refused.
func refusedAtHandshake(err error) bool {
	if err == nil {
		return false
	}
	return strings.Contains(err.Error(), "tls") || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF)
}
