package cli

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/coffer-kms/coffer/client"
	"github.com/coffer-kms/coffer/internal/tlsutil"
)

// vaultOps are the bench operations on the Vault-compatible API (/v1/).
var vaultOps = []string{"vault-read", "vault-write", "transit-encrypt"}

// benchHTTP is what the Vault-compatible operations send with: one
// HTTP/1.1 keep-alive connection per worker, as Vault clients use.
type benchHTTP struct {
	hc    *http.Client
	base  string
	token string
}

// newBenchTransport is an HTTP/1.1 transport keeping one connection per
// worker; tlsConf nil: the default.
func newBenchTransport(workers int, tlsConf *tls.Config) *http.Transport {
	return &http.Transport{TLSClientConfig: tlsConf, MaxIdleConnsPerHost: workers, MaxConnsPerHost: workers,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout: 10 * time.Second, IdleConnTimeout: 90 * time.Second}
}

func newBenchHTTP(cfg client.Config, workers int) (*benchHTTP, error) {
	if len(cfg.Addresses) == 0 {
		return nil, errors.New("no server address: set COFFER_ADDR or --address")
	}
	addr := cfg.Addresses[0]
	if path, ok := strings.CutPrefix(addr, "unix://"); ok {
		tr := newBenchTransport(workers, nil)
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "unix", path)
		}
		return &benchHTTP{hc: &http.Client{Transport: tr, Timeout: 30 * time.Second}, base: "http://coffer", token: cfg.Token}, nil
	}
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CACert != "" {
		pem, err := os.ReadFile(cfg.CACert)
		if err != nil {
			return nil, fmt.Errorf("read CA certificate: %w", err)
		}
		tlsConf.RootCAs = x509.NewCertPool()
		if !tlsConf.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA certificate %s: no PEM certificate found", cfg.CACert)
		}
	}
	if cfg.ClientCert != "" && cfg.ClientKey != "" {
		cert, err := tls.LoadX509KeyPair(cfg.ClientCert, cfg.ClientKey)
		if err != nil {
			return nil, fmt.Errorf("client certificate %s: %w", cfg.ClientCert, err)
		}
		tlsConf.Certificates = []tls.Certificate{cert}
	}
	return &benchHTTP{hc: &http.Client{Transport: newBenchTransport(workers, tlsConf), Timeout: 30 * time.Second},
		base: strings.TrimRight(addr, "/"), token: cfg.Token}, nil
}

// benchRequest is one HTTP request of a bench operation.
type benchRequest struct {
	method, path string
	body         []byte
}

// captured is a response as the peer answers it.
type captured struct {
	status int
	header http.Header
	body   []byte
}

// do sends r and reads the whole answer; a status other than 2xx is an
// error naming the status and the start of the body.
func (b *benchHTTP) do(ctx context.Context, r benchRequest) (captured, error) {
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, b.base+r.path, body)
	if err != nil {
		return captured{}, err
	}
	req.Header.Set("X-Vault-Token", b.token)
	if r.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := b.hc.Do(req)
	if err != nil {
		return captured{}, err
	}
	defer res.Body.Close()
	got, err := io.ReadAll(res.Body)
	if err != nil {
		return captured{}, fmt.Errorf("%s %s: read the answer: %w", r.method, r.path, err)
	}
	if res.StatusCode/100 != 2 {
		return captured{status: res.StatusCode}, fmt.Errorf("%s %s: %d %.200s", r.method, r.path, res.StatusCode, got)
	}
	return captured{status: res.StatusCode, header: res.Header, body: got}, nil
}

// ensureMount enables mount with type typ in wallet unless it exists.
func (b *benchHTTP) ensureMount(ctx context.Context, mount, typ, wallet string) error {
	if _, err := b.do(ctx, benchRequest{method: "GET", path: "/v1/sys/mounts/" + mount + "/tune"}); err == nil {
		return nil
	}
	body, _ := json.Marshal(map[string]any{"type": typ, "options": map[string]string{"wallet": wallet}})
	if _, err := b.do(ctx, benchRequest{method: "POST", path: "/v1/sys/mounts/" + mount, body: body}); err != nil {
		return fmt.Errorf("enable mount %s (%s): %w", mount, typ, err)
	}
	return nil
}

// vaultBench prepares what the operation reads (a KV mount and --keys
// keys, a transit mount and key) and returns the request of iteration i
// of worker w.
func vaultBench(ctx context.Context, b *benchHTTP, o *benchOptions, val []byte) (func(w, i int) benchRequest, error) {
	run := fmt.Sprintf("%x", time.Now().UnixNano())
	switch o.op {
	case "vault-read", "vault-write":
		mount := o.mount
		if mount == "" {
			mount = "secret"
		}
		if err := b.ensureMount(ctx, mount, "kv-v2", o.wallet); err != nil {
			return nil, err
		}
		put, _ := json.Marshal(map[string]any{"data": map[string]string{"value": string(val)}})
		if o.op == "vault-write" {
			return func(w, i int) benchRequest {
				return benchRequest{method: "POST", path: fmt.Sprintf("/v1/%s/data/bench-%s-%d-%d", mount, run, w, i), body: put}
			}, nil
		}
		for k := 0; k < o.keys; k++ {
			if _, err := b.do(ctx, benchRequest{method: "POST", path: fmt.Sprintf("/v1/%s/data/bench-%d", mount, k), body: put}); err != nil {
				return nil, fmt.Errorf("prepare keys: %w", err)
			}
		}
		return func(w, i int) benchRequest {
			return benchRequest{method: "GET", path: fmt.Sprintf("/v1/%s/data/bench-%d", mount, (w*7919+i)%o.keys)}
		}, nil
	case "transit-encrypt":
		mount := o.mount
		if mount == "" {
			mount = "transit"
		}
		if err := b.ensureMount(ctx, mount, "transit", o.wallet); err != nil {
			return nil, err
		}
		if _, err := b.do(ctx, benchRequest{method: "GET", path: "/v1/" + mount + "/keys/bench"}); err != nil {
			if _, err := b.do(ctx, benchRequest{method: "POST", path: "/v1/" + mount + "/keys/bench", body: []byte(`{}`)}); err != nil {
				return nil, fmt.Errorf("create transit key bench: %w", err)
			}
		}
		enc, _ := json.Marshal(map[string]string{"plaintext": base64.StdEncoding.EncodeToString(val)})
		return func(int, int) benchRequest {
			return benchRequest{method: "POST", path: "/v1/" + mount + "/encrypt/bench", body: enc}
		}, nil
	}
	return nil, fmt.Errorf("--op %q is not a Vault-compatible operation", o.op)
}

// runVaultBench measures a Vault-compatible operation and, with
// --peer-fixed, the same load against a bare TLS server answering the
// bytes Coffer answered to the same request.
func runVaultBench(g *globals, cfg client.Config, o *benchOptions, val []byte) (benchResult, *benchResult, error) {
	b, err := newBenchHTTP(cfg, o.workers)
	if err != nil {
		return benchResult{}, nil, err
	}
	ctx, cancel := g.ctx()
	req, err := vaultBench(ctx, b, o, val)
	if err != nil {
		cancel()
		return benchResult{}, nil, err
	}
	var answer captured
	if o.peerFixed {
		if !strings.HasPrefix(b.base, "https://") {
			cancel()
			return benchResult{}, nil, errors.New("--peer-fixed compares against a TLS server: use an https:// address")
		}
		r := req(0, 0)
		if o.op == "vault-write" {
			r.path += "-capture"
		}
		if answer, err = b.do(ctx, r); err != nil {
			cancel()
			return benchResult{}, nil, fmt.Errorf("capture the answer the peer repeats: %w", err)
		}
	}
	cancel()
	load := func(b *benchHTTP) benchResult {
		return runLoad(o.workers, o.duration, func(ctx context.Context, w, i int) error {
			_, err := b.do(ctx, req(w, i))
			return err
		})
	}
	res := load(b)
	if !o.peerFixed {
		return res, nil, nil
	}
	peer, err := startFixedPeer(answer, o.workers)
	if err != nil {
		return res, nil, err
	}
	defer peer.close()
	pr := load(peer.client)
	return res, &pr, nil
}

// fixedPeer is a bare Go TLS server (net/http, the TLS settings of Coffer's
// listeners) answering every request with one captured answer: the
// ceiling of this machine for the same bytes over the same client.
type fixedPeer struct {
	srv    *http.Server
	client *benchHTTP
}

func (p *fixedPeer) close() { p.srv.Close() } // #nosec G104 -- stopping the in-process peer after the measurement: nothing to lose

func startFixedPeer(answer captured, workers int) (*fixedPeer, error) {
	tc, err := selfSigned()
	if err != nil {
		return nil, err
	}
	cert := tc.Leaf
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("peer listener: %w", err)
	}
	header := answer.header.Clone()
	header.Del("Date")
	header.Del("Content-Length")
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // #nosec G104 -- a load peer drains the request; a failed read shows as the client's error
		if r.Header.Get("X-Vault-Token") == "" {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		for k, v := range header {
			w.Header()[k] = v
		}
		w.WriteHeader(answer.status)
		w.Write(answer.body) // #nosec G104 -- a load peer: a failed write is a client that has gone, which the bench counts on its side
	})
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second}
	tlsLn := tls.NewListener(ln, &tls.Config{MinVersion: tls.VersionTLS12, CipherSuites: tlsutil.AEADSuites(),
		Certificates: []tls.Certificate{tc}})
	go srv.Serve(tlsLn)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &fixedPeer{srv: srv, client: &benchHTTP{
		hc:   &http.Client{Transport: newBenchTransport(workers, &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}), Timeout: 30 * time.Second},
		base: "https://" + ln.Addr().String(), token: "peer"}}, nil
}

// selfSigned is a fresh ECDSA P-256 certificate for 127.0.0.1 (server
// and client use), kept in memory.
func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "coffer bench peer"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("peer certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}, nil
}
