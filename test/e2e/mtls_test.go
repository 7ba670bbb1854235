package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestEndpointMutualTLS: an endpoint enrolled with a CSR authenticates with
// its client certificate alone; a self-signed certificate is refused at the
// TLS handshake; after revocation the certificate no longer works.
func TestEndpointMutualTLS(t *testing.T) {
	n := initialisedNode(t, filepath.Join(t.TempDir(), "data"), "")
	api := newRawAPI(t, n)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "ignored"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	csrPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER})
	body, _ := json.Marshal(map[string]string{"name": "db1", "csr": string(csrPEM)})
	var enr struct {
		Certificate string
		CA          string
		Endpoint    struct {
			CertFingerprint string `json:"cert_fingerprint"`
		}
	}
	api.call(n.token, "POST", "/api/v1/endpoints", string(body), 201, &enr)
	if enr.Certificate == "" || enr.CA == "" || len(enr.Endpoint.CertFingerprint) != 64 {
		t.Fatalf("enrolment without certificate: %+v", enr)
	}
	block, _ := pem.Decode([]byte(enr.Certificate))
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if cert.Subject.CommonName != "db1" || cert.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
		t.Fatalf("certificate subject %q usage %v", cert.Subject.CommonName, cert.ExtKeyUsage)
	}
	api.call(n.token, "POST", "/api/v1/objects", `{"wallet":"default","name":"k","type":"symmetric_key"}`, 201, nil)
	api.call(n.token, "PUT", "/api/v1/wallets/default/grants/db1", `{"permission":"read"}`, 200, nil)

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(enr.CA))
	withCert := func(c tls.Certificate) *rawAPI {
		return &rawAPI{t: t, url: n.url, hc: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{c}}}}}
	}
	good := withCert(tls.Certificate{Certificate: [][]byte{block.Bytes}, PrivateKey: key})
	var who struct{ Kind, Name string }
	good.call("", "GET", "/api/v1/auth/whoami", "", 200, &who)
	if who.Kind != "endpoint" || who.Name != "db1" {
		t.Fatalf("whoami with certificate: %+v", who)
	}
	good.call("", "GET", "/api/v1/wallets/default/objects/k", "", 200, nil)
	good.call("", "POST", "/api/v1/objects", `{"wallet":"default","name":"k2","type":"symmetric_key"}`, 403, nil)
	// A certificate never lends its trust to another identity's token.
	good.call(n.token, "GET", "/api/v1/auth/whoami", "", 401, nil)

	// A self-signed certificate is refused during the handshake.
	selfTmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "db1"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	selfDER, _ := x509.CreateCertificate(rand.Reader, selfTmpl, selfTmpl, &key.PublicKey, key)
	// GetClientCertificate forces it out: with Certificates alone Go's client
	// would not send a certificate whose issuer the server did not ask for.
	selfCert := tls.Certificate{Certificate: [][]byte{selfDER}, PrivateKey: key}
	bad := &rawAPI{t: t, url: n.url, hc: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &selfCert, nil }}}}}
	req, _ := http.NewRequest("GET", n.url+"/api/v1/auth/whoami", nil)
	if resp, err := bad.hc.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("self-signed client certificate accepted: %d", resp.StatusCode)
	} else if !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("self-signed certificate refused for another reason: %v", err)
	}

	api.call(n.token, "POST", "/api/v1/endpoints/db1/revoke", "", 200, nil)
	good.call("", "GET", "/api/v1/wallets/default/objects/k", "", 401, nil)
}
