// Package client is Coffer's public Go client. It speaks the native REST API
// over HTTPS (with a token) or over a server's local control socket
// (addresses "unix:///path/to/coffer.sock"), and never links server code.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// Environment variables, as Vault's CLI has them.
const (
	EnvAddr       = "COFFER_ADDR"
	EnvToken      = "COFFER_TOKEN"
	EnvCACert     = "COFFER_CACERT"
	EnvClientCert = "COFFER_CLIENT_CERT"
	EnvClientKey  = "COFFER_CLIENT_KEY"
)

// Config of a client.
type Config struct {
	// Addresses are tried in order until one answers (https://host:port or unix:///path).
	Addresses []string
	Token     string
	CACert    string // PEM file with the CA that signed the server certificate
	// ClientCert and ClientKey are PEM files of an enrolled endpoint's client
	// certificate and private key, for mutual TLS. Give both or neither.
	ClientCert string
	ClientKey  string
	Timeout    time.Duration // per request; 0 = 30s
	// Linearizable makes every read confirmed by the cluster's leader (a
	// follower forwards it): it sees every write acknowledged before it
	// started. Default: reads are served by the node asked, which may lag
	// the leader by a few milliseconds.
	Linearizable bool
	// MaxIdleConns is how many idle keep-alive connections are kept per
	// server (0 = 64). Raise it to the number of concurrent callers.
	MaxIdleConns int
}

// FromEnv fills a Config from COFFER_ADDR (comma-separated), COFFER_TOKEN,
// COFFER_CACERT, COFFER_CLIENT_CERT and COFFER_CLIENT_KEY.
func FromEnv() Config {
	c := Config{Token: os.Getenv(EnvToken), CACert: os.Getenv(EnvCACert),
		ClientCert: os.Getenv(EnvClientCert), ClientKey: os.Getenv(EnvClientKey)}
	if a := os.Getenv(EnvAddr); a != "" {
		for _, p := range strings.Split(a, ",") {
			if p = strings.TrimSpace(p); p != "" {
				c.Addresses = append(c.Addresses, p)
			}
		}
	}
	return c
}

// Client calls a Coffer server.
type Client struct {
	cfg   Config
	bases []base
}

type base struct {
	url string
	hc  *http.Client
}

// New builds a client.
func New(cfg Config) (*Client, error) {
	if len(cfg.Addresses) == 0 {
		return nil, errors.New("no server address: set COFFER_ADDR or --address")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CACert != "" {
		pem, err := os.ReadFile(cfg.CACert)
		if err != nil {
			return nil, fmt.Errorf("read CA certificate: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA certificate %s: no PEM certificate found", cfg.CACert)
		}
		tlsConf.RootCAs = pool
	}
	switch {
	case cfg.ClientCert != "" && cfg.ClientKey != "":
		cert, err := tls.LoadX509KeyPair(cfg.ClientCert, cfg.ClientKey)
		if err != nil {
			return nil, fmt.Errorf("client certificate %s with key %s: %w", cfg.ClientCert, cfg.ClientKey, err)
		}
		tlsConf.Certificates = []tls.Certificate{cert}
	case cfg.ClientCert != "" || cfg.ClientKey != "":
		return nil, errors.New("mutual TLS needs both a client certificate and its key (ClientCert and ClientKey)")
	}
	if cfg.MaxIdleConns <= 0 {
		cfg.MaxIdleConns = 64
	}
	c := &Client{cfg: cfg}
	tcp := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConf, MaxIdleConnsPerHost: cfg.MaxIdleConns,
		IdleConnTimeout: 90 * time.Second, ForceAttemptHTTP2: true}}
	for _, a := range cfg.Addresses {
		if strings.HasPrefix(a, "unix://") {
			path := strings.TrimPrefix(a, "unix://")
			hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: cfg.MaxIdleConns, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", path)
			}}}
			c.bases = append(c.bases, base{url: "http://coffer", hc: hc})
			continue
		}
		u, err := url.Parse(a)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return nil, fmt.Errorf("server address %q: use https://host:port or unix:///path", a)
		}
		c.bases = append(c.bases, base{url: strings.TrimRight(a, "/"), hc: tcp})
	}
	return c, nil
}

// WithToken returns a copy of the client that sends tok (e.g. the token of a
// session from Login). The copy shares the connections.
func (c *Client) WithToken(tok string) *Client {
	cp := *c
	cp.cfg.Token = tok
	return &cp
}

// Token returns the token the client sends.
func (c *Client) Token() string { return c.cfg.Token }

// Addresses returns the configured server addresses, in failover order.
func (c *Client) Addresses() []string { return append([]string(nil), c.cfg.Addresses...) }

// Error is an API error: HTTP status plus the server's code and message.
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("%s (%d %s)", e.Message, e.Status, e.Code) }

// IsCode reports whether err is an API error with this code.
func IsCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// retryable reports whether a failed request may be sent to the next
// address: only when it never reached a server (dial failed), or for reads,
// or when the server refused it before doing anything (a cluster node
// without quorum: read-only restricted mode). A write that may have reached
// a server is never re-sent, so a timeout can not turn into a duplicate
// version.
func retryable(method string, err error) bool {
	var apiErr *Error
	if errors.As(err, &apiErr) {
		return apiErr.Status == http.StatusServiceUnavailable && (notApplied(apiErr) || method == http.MethodGet)
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	return method == http.MethodGet
}

// Do sends one request and decodes the JSON answer into out (if non-nil).
// Connection failures fail over to the next address; API errors do not.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return err
		}
	}
	var lastErr error
	// A cluster refusing a write it certainly did not apply (no quorum
	// here, or the leadership moving) gets it again, on every address, for
	// a few seconds: long enough for an election or a switchover.
	deadline := time.Now().Add(c.cfg.Timeout)
	for round := 0; ; round++ {
		for _, b := range c.bases {
			err := c.do(ctx, b, method, path, body, out)
			if err == nil || ctx.Err() != nil || !retryable(method, err) {
				return err
			}
			lastErr = err
		}
		var apiErr *Error
		if !errors.As(lastErr, &apiErr) || !notApplied(apiErr) || time.Now().After(deadline) {
			return lastErr
		}
		select {
		case <-ctx.Done():
			return lastErr
		case <-time.After(time.Duration(min(round+1, 5)) * 100 * time.Millisecond):
		}
	}
}

// notApplied: the server refused the request before doing anything.
func notApplied(e *Error) bool {
	return e.Status == http.StatusServiceUnavailable && (e.Code == "read_only_restricted" || e.Code == "not_leader")
}

func (c *Client) do(ctx context.Context, b base, method, path string, body []byte, out any) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, b.url+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.cfg.Token)
	}
	if c.cfg.Linearizable && method == http.MethodGet {
		req.Header.Set("X-Coffer-Consistency", "linearizable")
	}
	resp, err := b.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read response: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		var eb struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if json.Unmarshal(data, &eb) == nil && eb.Error.Code != "" {
			return &Error{Status: resp.StatusCode, Code: eb.Error.Code, Message: eb.Error.Message}
		}
		if path == "/api/v1/sys/health" && out != nil {
			return json.Unmarshal(data, out) // health uses status codes for state
		}
		return &Error{Status: resp.StatusCode, Code: "http_error", Message: strings.TrimSpace(string(data))}
	}
	if out == nil || len(data) == 0 {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: decode response: %w", method, path, err)
	}
	return nil
}
