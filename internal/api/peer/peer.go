// Package peer is the client side of the node-to-node calls the service
// makes (service.Peers): fetching a node's CA and joining through it, asking
// the leader for a promotion, reading another node's health. It owns the
// routes, the headers and HTTP; the service passes the TLS trust it decided.
package peer

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coffer-kms/coffer/internal/api/forward"
	"github.com/coffer-kms/coffer/internal/service"
)

// The routes of the other node's REST API that the calls use.
const (
	pathCA      = "/api/v1/cluster/ca"
	pathJoin    = "/api/v1/cluster/join"
	pathPromote = "/api/v1/cluster/promote"
	pathHealth  = "/api/v1/sys/health"
)

// Timeouts of the calls (beyond the caller's context).
const (
	caTimeout      = 15 * time.Second
	joinTimeout    = 30 * time.Second
	promoteTimeout = 15 * time.Second
)

// Client implements service.Peers over HTTPS.
type Client struct{}

// New returns the HTTPS peer client.

// joinUnknownAdvice is what a join whose outcome is unknown tells the
// operator to do.
const joinUnknownAdvice = "; see coffer cluster status on the cluster: if this node is listed, remove it there, then join again with a new token"

func New() *Client { return &Client{} }

var _ service.Peers = (*Client)(nil)

func endpoint(url, path string) string { return strings.TrimRight(url, "/") + path }

// FetchCA reads the CA certificate the node at url serves, without
// verifying the server: the CA is public, and the caller checks it against
// the join token's pin before trusting it.
func (*Client) FetchCA(ctx context.Context, url string) ([]byte, error) {
	hc := &http.Client{Timeout: caTimeout, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		InsecureSkipVerify: true}}} // #nosec G402 -- the CA certificate is public data, checked against the join token's fingerprint before any use
	req, err := http.NewRequestWithContext(ctx, "GET", endpoint(url, pathCA), nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", service.ErrInvalid, err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: contact %s: %v", service.ErrUnavailable, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	blk, _ := pem.Decode(b)
	if resp.StatusCode != http.StatusOK || blk == nil {
		return nil, fmt.Errorf("%w: %s did not serve its CA (%d)", service.ErrConflict, url, resp.StatusCode)
	}
	return blk.Bytes, nil
}

// Join posts the join request to the node at url.
func (*Client) Join(ctx context.Context, url string, conf *tls.Config, jreq service.JoinRequest) (service.JoinResponse, error) {
	body, err := json.Marshal(jreq)
	if err != nil {
		return service.JoinResponse{}, fmt.Errorf("encode the join request: %w", err)
	}
	hc := &http.Client{Timeout: joinTimeout, Transport: &http.Transport{TLSClientConfig: conf}}
	req, err := http.NewRequestWithContext(ctx, "POST", endpoint(url, pathJoin), bytes.NewReader(body))
	if err != nil {
		return service.JoinResponse{}, fmt.Errorf("%w: %v", service.ErrInvalid, err)
	}
	req.Header.Set("Content-Type", "application/json")
	var sent atomic.Bool
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
		WroteRequest: func(i httptrace.WroteRequestInfo) { sent.Store(i.Err == nil) },
	}))
	resp, err := hc.Do(req)
	if err != nil && sent.Load() {
		// The node had the whole request: it (or the leader it forwarded
		// to) may have used the token and added this node before the
		// answer was lost.
		return service.JoinResponse{}, fmt.Errorf("%w: the join sent to %s may or may not have been admitted (no answer: %v)%s", service.ErrOutcomeUnknown, url, err, joinUnknownAdvice)
	}
	if err != nil {
		return service.JoinResponse{}, fmt.Errorf("%w: contact %s: %v", service.ErrUnavailable, url, err)
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode == http.StatusServiceUnavailable {
		var e struct {
			Error struct {
				Code string `json:"code"`
			} `json:"error"`
		}
		if json.Unmarshal(rb, &e) == nil && e.Error.Code == "outcome_unknown" {
			// The leader lost its leadership while it admitted the node:
			// the token may be used and the node in the configuration.
			return service.JoinResponse{}, fmt.Errorf("%w: the join sent to %s may or may not have been admitted (503): %s%s", service.ErrOutcomeUnknown, url, strings.TrimSpace(string(rb)), joinUnknownAdvice)
		}
		// Not refused: the cluster could not take it now (no leader, or
		// one this member cannot reach yet). Nothing was done.
		return service.JoinResponse{}, fmt.Errorf("%w: %s could not admit the join now (503): %s", service.ErrUnavailable, url, strings.TrimSpace(string(rb)))
	}
	if resp.StatusCode != http.StatusOK {
		return service.JoinResponse{}, fmt.Errorf("%w: %s refused the join (%d): %s", service.ErrConflict, url, resp.StatusCode, strings.TrimSpace(string(rb)))
	}
	var jr service.JoinResponse
	if err := json.Unmarshal(rb, &jr); err != nil {
		return service.JoinResponse{}, fmt.Errorf("join answer: %w", err)
	}
	return jr, nil
}

// Promote asks the leader at url to make nodeID a voter, marked as the
// node's own call (forward.HeaderNodeCall), not one forwarded for a client.
func (*Client) Promote(ctx context.Context, url string, conf *tls.Config, nodeID string) error {
	hc := &http.Client{Timeout: promoteTimeout, Transport: &http.Transport{TLSClientConfig: conf}}
	b, err := json.Marshal(map[string]string{"node_id": nodeID})
	if err != nil {
		return fmt.Errorf("encode the promotion request: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, "POST", endpoint(url, pathPromote), bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(forward.HeaderNodeCall, "1")
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		rb, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("%s%s: %d %s", url, pathPromote, resp.StatusCode, strings.TrimSpace(string(rb)))
	}
	return nil
}

// Health reads the health of the node at url.
func (*Client) Health(ctx context.Context, url string, conf *tls.Config) (service.PeerHealth, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", endpoint(url, pathHealth), nil)
	if err != nil {
		return service.PeerHealth{}, err
	}
	tr := &http.Transport{TLSClientConfig: conf}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return service.PeerHealth{}, err
	}
	defer resp.Body.Close()
	var h service.PeerHealth
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&h); err != nil {
		return service.PeerHealth{}, fmt.Errorf("health of %s: %w", url, err)
	}
	return h, nil
}
