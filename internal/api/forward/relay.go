package forward

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// Relay errors: ErrNotReached means the leader never got the request (it
// was certainly not applied); any other relay error may come after the
// leader received it (outcome unknown).
var ErrNotReached = errors.New("the leader could not be reached (a failover may be in progress): not applied, send it again")

// Relay sends requests of a transport other than HTTP (KMIP) to the leader
// over the node-to-node channel, as Handler's proxy does for REST and
// Vault: with this node's certificate, the forwarding node's id, and the
// client's verified certificate and address, which the leader trusts only
// from a member node (Caller).
type Relay struct {
	c    Cluster
	once sync.Once
	hc   *http.Client
}

// NewRelay returns a Relay for c.
func NewRelay(c Cluster) *Relay { return &Relay{c: c} }

// HeaderCommitIndex is the leader's commit index once it has handled a
// relayed request: the relaying node waits until it has applied that much
// before it answers, so that the client reads its own writes there.
const HeaderCommitIndex = "X-Coffer-Commit-Index"

// Post sends body to path on the leader at leaderURL on behalf of the
// client (its verified certificate DER and address) and returns the
// leader's 200 answer, at most limit bytes, and the commit index the
// leader reported with it (0 if none).
func (r *Relay) Post(ctx context.Context, leaderURL, path string, body, clientCert []byte, clientAddr string, limit int64) ([]byte, uint64, error) {
	r.once.Do(func() { r.hc = &http.Client{Transport: leaderTransport(r.c)} })
	req, err := http.NewRequestWithContext(ctx, "POST", strings.TrimRight(leaderURL, "/")+path, bytes.NewReader(body))
	if err != nil {
		return nil, 0, fmt.Errorf("%w: the leader's address %q: %v", ErrNotReached, leaderURL, err)
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set(HeaderBy, r.c.NodeID())
	if clientCert != nil {
		req.Header.Set(HeaderClientCert, base64.StdEncoding.EncodeToString(clientCert))
	}
	if host, _, err := net.SplitHostPort(clientAddr); err == nil {
		clientAddr = host
	}
	if ip := net.ParseIP(clientAddr); ip != nil {
		req.Header.Set("X-Forwarded-For", ip.String())
	}
	resp, err := r.hc.Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return nil, 0, fmt.Errorf("%w (%v)", ErrNotReached, op.Err)
		}
		return nil, 0, fmt.Errorf("outcome unknown: the connection to the leader broke while it handled this request: it may or may not have been applied; check before sending it again (%v)", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, 0, fmt.Errorf("outcome unknown: the connection to the leader broke while it answered: it may or may not have been applied; check before sending it again (%v)", err)
	}
	if int64(len(b)) > limit {
		return nil, 0, fmt.Errorf("the leader's answer is larger than %d bytes", limit)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, 0, fmt.Errorf("the leader refused the relayed request (%d): %s", resp.StatusCode, strings.TrimSpace(string(b[:min(len(b), 512)])))
	}
	commit, _ := strconv.ParseUint(resp.Header.Get(HeaderCommitIndex), 10, 64)
	return b, commit, nil
}
