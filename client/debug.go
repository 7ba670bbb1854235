package client

import (
	"context"
	"net/http"
)

// Goroutines returns the node's goroutine stacks as text (system
// administrators).
func (c *Client) Goroutines(ctx context.Context) ([]byte, error) {
	var b []byte
	err := c.Do(ctx, http.MethodGet, "/api/v1/sys/debug/goroutines", nil, &b)
	return b, err
}

// Metrics returns the node's Prometheus exposition (/metrics).
func (c *Client) Metrics(ctx context.Context) ([]byte, error) {
	var b []byte
	err := c.Do(ctx, http.MethodGet, "/metrics", nil, &b)
	return b, err
}
