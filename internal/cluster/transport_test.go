package cluster

import (
	"crypto/tls"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/coffer-kms/coffer/internal/tlsutil"
)

// TestRemovedNodeCannotResumeASession: the raft listener checks membership
// on every connection, resumed TLS sessions included. A node removed from
// the cluster keeps a valid node certificate; a session ticket it obtained
// while a member must not let it back in (Go does not call
// VerifyPeerCertificate on a resumed session).
func TestRemovedNodeCannotResumeASession(t *testing.T) {
	dir := t.TempDir()
	if _, err := tlsutil.EnsureGenerated(dir, []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	if err := tlsutil.EnsureNodeCert(dir, "n2"); err != nil {
		t.Fatal(err)
	}
	conf, err := tlsutil.NodeTLS(dir)
	if err != nil {
		t.Fatal(err)
	}
	var member atomic.Bool
	member.Store(true)
	s, err := newTLSStream("127.0.0.1:0", "127.0.0.1:7000", conf, func(string) bool { return member.Load() }, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := s.Listener.Addr().String()
	// The server side: accept, finish the handshake, answer one byte.
	done := make(chan struct{})
	t.Cleanup(func() { s.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := s.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(30 * time.Second))
			if err := c.(*tls.Conn).Handshake(); err == nil {
				c.Write([]byte{1})
			}
			c.Close()
		}
	}()
	// The removed node's client keeps its sessions (Coffer's own dialer
	// does not; someone holding the node's key can).
	client := conf.Clone()
	client.InsecureSkipVerify = true // the server is not under test
	client.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	dial := func() (resumed bool, err error) {
		c, err := tls.Dial("tcp", addr, client)
		if err != nil {
			return false, err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		var b [1]byte
		if _, err := c.Read(b[:]); err != nil {
			return c.ConnectionState().DidResume, err
		}
		return c.ConnectionState().DidResume, nil
	}
	if _, err := dial(); err != nil {
		t.Fatalf("a member's first connection: %v", err)
	}
	member.Store(false)
	if resumed, err := dial(); err == nil {
		t.Fatalf("a removed node connected again (resumed session: %v)", resumed)
	}
	var _ raft.StreamLayer = s
}
