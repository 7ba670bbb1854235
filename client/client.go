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
	"net/http/httptrace"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

// Environment variables, as Vault's CLI has them.
const (
	EnvAddr       = "COFFER_ADDR"
	EnvToken      = "COFFER_TOKEN"
	EnvCACert     = "COFFER_CACERT"
	EnvClientCert = "COFFER_CLIENT_CERT"
	EnvClientKey  = "COFFER_CLIENT_KEY"
	// EnvRetryTimeout is Config.RetryTimeout as a Go duration ("10s", "1m").
	EnvRetryTimeout = "COFFER_RETRY_TIMEOUT"
)

// DefaultRetryTimeout is how long a request keeps trying the addresses by
// default (Config.RetryTimeout).
const DefaultRetryTimeout = 10 * time.Second

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
	// RetryTimeout is how long a request keeps going round the addresses
	// while none of them can take it now: a node that refuses the
	// connection, times out on a read, or answers 503 (a leader election,
	// a node without quorum). 0 = DefaultRetryTimeout; negative: one pass
	// over the addresses. A write that was sent and got no answer is never
	// sent again: it fails with ErrOutcomeUnknown.
	RetryTimeout time.Duration
	// Linearizable makes every read confirmed by the cluster's leader (a
	// follower forwards it): it sees every write acknowledged before it
	// started. Default: reads are served by the node asked, which may lag
	// the leader by a few milliseconds.
	Linearizable bool
	// MaxIdleConns is how many idle keep-alive connections are kept per
	// server (0 = 64). Raise it to the number of concurrent callers.
	MaxIdleConns int
	// envErr is a bad environment variable FromEnv found; New reports it.
	envErr error
}

// FromEnv fills a Config from COFFER_ADDR (comma-separated), COFFER_TOKEN,
// COFFER_CACERT, COFFER_CLIENT_CERT, COFFER_CLIENT_KEY and
// COFFER_RETRY_TIMEOUT (a bad value is reported by New).
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
	c.RetryTimeout, c.envErr = RetryTimeoutFromEnv()
	return c
}

// RetryTimeoutFromEnv reads COFFER_RETRY_TIMEOUT: 0 when it is not set, an
// error naming it when it is not a positive Go duration.
func RetryTimeoutFromEnv() (time.Duration, error) {
	v := os.Getenv(EnvRetryTimeout)
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	switch {
	case err != nil:
		return 0, fmt.Errorf("%s=%q: not a duration (e.g. 10s, 1m)", EnvRetryTimeout, v)
	case d <= 0:
		return 0, fmt.Errorf("%s=%q: must be more than 0", EnvRetryTimeout, v)
	}
	return d, nil
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
	if cfg.envErr != nil {
		return nil, cfg.envErr
	}
	if len(cfg.Addresses) == 0 {
		return nil, errors.New("no server address: set COFFER_ADDR or --address")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.RetryTimeout == 0 {
		cfg.RetryTimeout = DefaultRetryTimeout
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
	// A machine that is gone answers no connection attempt: give up on it
	// soon and try the next address.
	dialTimeout := min(cfg.Timeout, 5*time.Second)
	tcp := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConf, MaxIdleConnsPerHost: cfg.MaxIdleConns,
		DialContext:         (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout: min(cfg.Timeout, 10*time.Second), IdleConnTimeout: 90 * time.Second, ForceAttemptHTTP2: true}}
	for _, a := range cfg.Addresses {
		if strings.HasPrefix(a, "unix://") {
			path := strings.TrimPrefix(a, "unix://")
			hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: cfg.MaxIdleConns, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				d := net.Dialer{Timeout: dialTimeout}
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

// Is makes errors.Is(err, ErrOutcomeUnknown) true for the server's
// outcome_unknown answer.
func (e *Error) Is(target error) bool {
	return target == ErrOutcomeUnknown && e.Code == CodeOutcomeUnknown
}

// ErrOutcomeUnknown: a write was sent but no answer says whether it was
// applied (the server, or the leader it forwarded to, died or was cut off
// while handling it; or the request timed out). It may or may not have
// been applied: the client never sends it again by itself. Check (read the
// object) before sending it again. errors.Is(err, ErrOutcomeUnknown) holds
// both for the server's 503 outcome_unknown and for a connection lost
// after the request was sent.
var ErrOutcomeUnknown = errors.New("outcome unknown: the write may or may not have been applied")

// API error codes about availability (all with status 503).
const (
	// CodeNotLeader and CodeReadOnly: refused before anything happened
	// (the leadership is moving; no quorum). The client retries these.
	CodeNotLeader = "not_leader"
	CodeReadOnly  = "read_only_restricted"
	// CodeOutcomeUnknown: see ErrOutcomeUnknown. Never retried for a write.
	CodeOutcomeUnknown = "outcome_unknown"
)

// IsCode reports whether err is an API error with this code.
func IsCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// IsOutcomeUnknown reports whether err says a write may or may not have
// been applied (errors.Is(err, ErrOutcomeUnknown)).
func IsOutcomeUnknown(err error) bool { return errors.Is(err, ErrOutcomeUnknown) }

// verdict is what a failed attempt means for the request.
type verdict int

const (
	stop     verdict = iota // return this error
	nextNode                // try the other addresses, but no second round
	tryAgain                // try the other addresses, and again until RetryTimeout
)

// judge decides what a failed attempt means, and whether a write may have
// been applied. sent: the request got a connection (it may have reached
// the server). Reads may go anywhere, any number of times. A write goes
// again only when it certainly did nothing: it never got a connection, or
// the server refused it before doing anything (not_leader,
// read_only_restricted, stopping, sealed, uninitialized).
func judge(method string, sent bool, err error) (v verdict, unknown bool) {
	read := method == http.MethodGet || method == http.MethodHead
	var apiErr *Error
	if errors.As(err, &apiErr) {
		if apiErr.Status != http.StatusServiceUnavailable {
			return stop, false
		}
		switch apiErr.Code {
		case CodeNotLeader, CodeReadOnly, "stopping":
			// Refused before anything happened; the cluster is electing a
			// leader, has no quorum here, or this node is going down.
			return tryAgain, false
		case "sealed", "uninitialized":
			// Refused before anything happened, for a state of this node
			// that a few seconds do not fix: the others may be open.
			return nextNode, false
		case "writes_unavailable":
			// Also the answer for a write stuck in a failing state
			// write: not sent again.
			if read {
				return nextNode, false
			}
			return stop, false
		}
		if read {
			return tryAgain, false
		}
		return stop, false
	}
	var cv *tls.CertificateVerificationError
	var op *net.OpError
	if errors.As(err, &cv) || errors.As(err, &op) && op.Op == "remote error" {
		// A certificate this client does not trust, or a TLS alert from
		// the server (it refused this client's certificate, or none): the
		// request was not taken, and no wait fixes it.
		return nextNode, false
	}
	if !sent || read {
		return tryAgain, false // never reached a server, or a read
	}
	return stop, true
}

// Do sends one request and decodes the JSON answer into out (if non-nil).
// It goes round the addresses, in order, for up to RetryTimeout while
// they cannot take it (see Config.RetryTimeout). A write that was sent and
// got no answer fails with ErrOutcomeUnknown; other API errors are
// returned as they are.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return err
		}
	}
	start := time.Now()
	deadline := start.Add(c.cfg.RetryTimeout)
	last := make([]error, len(c.bases))
	for round := 0; ; round++ {
		again := false
		for i, b := range c.bases {
			sent, err := c.do(ctx, b, method, path, body, out)
			if err == nil {
				return nil
			}
			v, unknown := judge(method, sent, err)
			if unknown {
				// Sent, and the answer was lost: it may have been applied.
				return fmt.Errorf("%w: %w", ErrOutcomeUnknown, err)
			}
			if v == stop || ctx.Err() != nil {
				return err
			}
			last[i] = err
			again = again || v == tryAgain
		}
		if !again || c.cfg.RetryTimeout < 0 || time.Now().After(deadline) {
			return c.exhausted(last, time.Since(start))
		}
		select {
		case <-ctx.Done():
			return c.exhausted(last, time.Since(start))
		case <-time.After(time.Duration(min(round+1, 5)) * 100 * time.Millisecond):
		}
	}
}

// exhausted is the error of a request no address took: with one address,
// its error; else every address's last error.
func (c *Client) exhausted(last []error, took time.Duration) error {
	if len(last) == 1 {
		return last[0]
	}
	errs := make([]error, len(last))
	for i, err := range last {
		errs[i] = fmt.Errorf("%s: %w", c.cfg.Addresses[i], err)
	}
	return fmt.Errorf("no server took the request (tried %d addresses for %s): %w", len(last), took.Round(time.Millisecond), errors.Join(errs...))
}

// do sends one request to one address. sent reports whether it got a
// connection (after which a write may have reached the server).
func (c *Client) do(ctx context.Context, b base, method, path string, body []byte, out any) (sent bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	var conn atomic.Bool
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { conn.Store(true) }})
	err = c.send(ctx, b, method, path, body, out)
	return conn.Load(), err
}

// streamer is an answer read line by line as it comes (application/x-ndjson).
type streamer interface{ decodeStream(r io.Reader) error }

func (c *Client) send(ctx context.Context, b base, method, path string, body []byte, out any) error {
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
	if st, ok := out.(streamer); ok && resp.StatusCode < 300 && strings.HasPrefix(resp.Header.Get("Content-Type"), "application/x-ndjson") {
		if err := st.decodeStream(resp.Body); err != nil {
			return fmt.Errorf("%s %s: %w", method, path, err)
		}
		return nil
	}
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
	if raw, ok := out.(*[]byte); ok {
		*raw = data
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s %s: decode response: %w", method, path, err)
	}
	return nil
}
