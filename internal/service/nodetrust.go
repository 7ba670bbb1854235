package service

import (
	"context"
	"crypto/subtle"
	"errors"
	"sync"
	"time"

	"github.com/coffer-kms/coffer/internal/state"
	"github.com/coffer-kms/coffer/internal/tlsutil"
)

// nodeKeys binds cluster members to the public key of their node
// certificate. Every node holds the CA key (it signs endpoint certificates
// when it leads), so a certificate chain alone does not prove which node
// is calling: the replicated node record names the key (state.Node.
// KeySHA256), and a peer presenting another key under a member's name is
// refused on the raft transport and the API alike. Removing a node deletes
// its record and takes it out of the raft configuration.
type nodeKeys struct {
	st *state.Store
	mu sync.Mutex
	// unbound: records written before keys were recorded (an older
	// build), with the key each node first presented here; the leader
	// records it (see bindNodeKeys).
	unbound map[string]string
}

// ok reports whether key is the one recorded for node id. A node without a
// record here yet (this node is still catching up on the log that has it)
// is judged by the raft configuration alone; a record without a key (an
// older build's) accepts the key first presented, which the leader then
// records.
func (k *nodeKeys) ok(id, key string) bool {
	if key == "" {
		return false
	}
	n, err := k.st.Node(id)
	if err != nil {
		return errors.Is(err, state.ErrNotFound)
	}
	if n.KeySHA256 == "" {
		k.mu.Lock()
		defer k.mu.Unlock()
		if first, seen := k.unbound[id]; seen {
			return first == key
		}
		if k.unbound == nil {
			k.unbound = map[string]string{}
		}
		k.unbound[id] = key
		return true
	}
	return subtle.ConstantTimeCompare([]byte(n.KeySHA256), []byte(key)) == 1
}

// bindNodeKeys, on the leader, records the key of every member whose
// record has none: this node's own from its certificate file, the others'
// as first presented to this node.
func (s *Cluster) bindNodeKeys() {
	if !s.Clustered() || !s.node.IsLeader() {
		return
	}
	nodes, err := s.st.Nodes()
	if err != nil {
		return
	}
	var todo []state.Node
	s.keys.mu.Lock()
	for _, n := range nodes {
		if n.KeySHA256 != "" {
			delete(s.keys.unbound, n.ID)
			continue
		}
		key := s.keys.unbound[n.ID]
		if n.ID == s.nodeID {
			key, _ = tlsutil.NodeKeyFingerprint(s.cfg.TLSDir)
		}
		if key != "" && s.node.IsMember(n.ID) {
			n.KeySHA256 = key
			todo = append(todo, n)
		}
	}
	s.keys.mu.Unlock()
	if len(todo) == 0 {
		return
	}
	unlock, err := s.openForRead()
	if err != nil {
		return
	}
	defer unlock()
	ctx, cancel := context.WithTimeout(WithIdentity(context.Background(), LocalRoot()), 5*time.Second)
	defer cancel()
	for _, n := range todo {
		if _, err := s.applyResult(ctx, state.TypeNodePut, n); err != nil {
			s.log.Warn("record a node's certificate key", "node", n.ID, "error", err)
			return
		}
		s.log.Info("node certificate key recorded for the cluster (its record predates key binding)", "node", n.ID, "key_sha256", n.KeySHA256)
	}
}

// IsMember reports whether a node is a member: id is in the raft
// configuration and keySHA256 (tlsutil.KeyFingerprint of the certificate
// it presented) is the key recorded for it. Removed nodes, and
// certificates minted with a member's name but another key, are refused.
func (s *Cluster) IsMember(id, keySHA256 string) bool {
	return s.Clustered() && s.node.IsMember(id) && s.keys.ok(id, keySHA256)
}
