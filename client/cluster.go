package client

import (
	"context"
	"net/url"
	"time"
)

// ClusterNode is one member as the cluster status shows it.
type ClusterNode struct {
	ID          string     `json:"id"`
	RaftAddress string     `json:"raft_address"`
	APIURL      string     `json:"api_url,omitempty"`
	Voter       bool       `json:"voter"`
	Leader      bool       `json:"leader"`
	Self        bool       `json:"self"`
	Applied     *uint64    `json:"applied_index,omitempty"`
	Lag         *uint64    `json:"lag,omitempty"` // behind the leader's commit index
	CaughtUp    *bool      `json:"caught_up,omitempty"`
	LastContact *time.Time `json:"last_contact,omitempty"`
	Reachable   bool       `json:"reachable"` // it answered its health
	// State is the node's keystore state as it answered (open, sealed,
	// uninitialized; empty if it did not): a node not open takes no part
	// in raft until it is opened.
	State string `json:"state,omitempty"`
}

// ClusterStatus is the cluster as the answering node sees it.
type ClusterStatus struct {
	ClusterID string `json:"cluster_id"`
	Role      string `json:"role"` // standalone, leader, follower or read-only
	Leader    string `json:"leader,omitempty"`
	// LeaderCommit is the leader's commit index lag is counted from (nil
	// when the leader cannot be reached).
	LeaderCommit *uint64 `json:"leader_commit_index,omitempty"`
	// FailoverThreshold is how long followers wait without the leader
	// before they elect another (a Go duration; empty when standalone).
	FailoverThreshold string        `json:"failover_threshold,omitempty"`
	Nodes             []ClusterNode `json:"nodes"`
}

// ClusterStatus lists members, roles, last contact, applied index and lag.
func (c *Client) ClusterStatus(ctx context.Context) (ClusterStatus, error) {
	var s ClusterStatus
	return s, c.Do(ctx, "GET", "/api/v1/cluster", nil, &s)
}

// InitCluster makes the answering node the first of a cluster (idempotent).
func (c *Client) InitCluster(ctx context.Context) (ClusterStatus, error) {
	var s ClusterStatus
	return s, c.Do(ctx, "POST", "/api/v1/cluster/init", nil, &s)
}

// JoinToken is a one-time token for a new node.
type JoinToken struct {
	Token   string    `json:"token"`
	Expires time.Time `json:"expires"`
}

// CreateJoinToken makes a one-time join token valid for ttl (0: 1h).
func (c *Client) CreateJoinToken(ctx context.Context, ttl time.Duration) (JoinToken, error) {
	var t JoinToken
	body := map[string]string{}
	if ttl > 0 {
		body["ttl"] = ttl.String()
	}
	return t, c.Do(ctx, "POST", "/api/v1/cluster/tokens", body, &t)
}

// JoinCluster joins the (uninitialised) node this client talks to through
// its control socket to the cluster at url.
func (c *Client) JoinCluster(ctx context.Context, url, token, passphrase string) (Status, error) {
	var s Status
	return s, c.Do(ctx, "POST", "/api/v1/sys/cluster/join", map[string]string{"url": url, "token": token, "passphrase": passphrase}, &s)
}

// Switchover hands leadership to node to ("" : the most up-to-date voter)
// and returns the new leader.
func (c *Client) Switchover(ctx context.Context, to string) (string, error) {
	var r struct {
		Leader string `json:"leader"`
	}
	return r.Leader, c.Do(ctx, "POST", "/api/v1/cluster/switchover", map[string]string{"to": to}, &r)
}

// RemoveNode takes a member out of the cluster.
func (c *Client) RemoveNode(ctx context.Context, id string) error {
	return c.Do(ctx, "DELETE", "/api/v1/cluster/nodes/"+url.PathEscape(id), nil, nil)
}

// PromoteNode makes a caught-up non-voter a voter (nodes do it
// themselves; this is for an administrator when that failed).
func (c *Client) PromoteNode(ctx context.Context, id string) error {
	return c.Do(ctx, "POST", "/api/v1/cluster/promote", map[string]string{"node_id": id}, nil)
}
