package state

import (
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/coffer-kms/coffer/internal/keystore"
)

// Cluster membership commands (190-199).
const (
	// TypeNodePut registers (or updates) a node: its raft and API addresses (body: Node).
	TypeNodePut Type = 190
	// TypeNodeDelete forgets a node removed from the cluster (body: NodeDelete).
	TypeNodeDelete Type = 191
	// TypeJoinToken stores a one-time join token's hash (body: JoinToken).
	TypeJoinToken Type = 192
	// TypeJoinTokenUse consumes a join token (body: JoinTokenUse).
	TypeJoinTokenUse Type = 193
	// TypeMEKGen carries a new master key generation wrapped under the
	// previous one, so that every node's keystore gets it (body:
	// keystore.WrappedGen). The payload holds only wrapped key material.
	TypeMEKGen Type = 194
	// TypeKeystorePassphrase carries a keystore passphrase change made on
	// the leader, sealed under the current data key, so that every node
	// re-seals its keystore with it (body: KeystorePassphrase).
	TypeKeystorePassphrase Type = 195
)

// KeystorePassphrase is the cluster's keystore passphrase, version Version,
// sealed by the barrier (object id "keystore-passphrase", version Version).
type KeystorePassphrase struct {
	Version uint64 `json:"version"`
	Sealed  []byte `json:"sealed"`
}

var keyKeystorePassphrase = []byte("keystore_passphrase")

// Node is a member of the cluster as the others need to know it.
type Node struct {
	ID       string    `json:"id"`
	RaftAddr string    `json:"raft_address"`
	APIURL   string    `json:"api_url"`
	Joined   time.Time `json:"joined"`
	// KeySHA256 is the hex SHA-256 of the public key of the node's
	// certificate: peers are accepted as this node only with that key.
	// Empty on records written before it existed (recorded when the node
	// next reaches the leader).
	KeySHA256 string `json:"key_sha256,omitempty"`
}

// NodeDelete removes a node's record.
type NodeDelete struct {
	ID string `json:"id"`
}

// JoinToken is a one-time token a new node presents to join; only its
// SHA-256 is stored.
type JoinToken struct {
	Hash      string    `json:"hash"`
	Expires   time.Time `json:"expires"`
	CreatedBy string    `json:"created_by,omitempty"`
	UsedBy    string    `json:"used_by,omitempty"`
}

// JoinTokenUse consumes a token for a node.
type JoinTokenUse struct {
	Hash string `json:"hash"`
	Node string `json:"node"`
}

var (
	bucketNodes      = []byte("cluster_nodes")
	bucketJoinTokens = []byte("cluster_join_tokens")
	bucketMEKGens    = []byte("mek_generations")
)

func init() {
	allBuckets = append(allBuckets, bucketNodes, bucketJoinTokens, bucketMEKGens)
	typeNames[TypeMEKGen] = "mek-generation"
	typeNames[TypeKeystorePassphrase] = "keystore-passphrase"
	typeNames[TypeNodePut] = "node-put"
	typeNames[TypeNodeDelete] = "node-delete"
	typeNames[TypeJoinToken] = "join-token"
	typeNames[TypeJoinTokenUse] = "join-token-use"
}

// applyCluster dispatches membership commands; ok is false for other types.
func (s *Store) applyCluster(tx *bolt.Tx, cmd Command) (res any, err error, ok bool) {
	switch cmd.Type {
	case TypeNodePut:
		res, err = decodeApply(cmd, func(n Node) (any, error) {
			for _, e := range []error{checkLen("node id", n.ID, 1, 64), checkLen("raft address", n.RaftAddr, 1, 255), checkLen("API URL", n.APIURL, 0, 1024), checkLen("node key fingerprint", n.KeySHA256, 0, 64)} {
				if e != nil {
					return e, nil
				}
			}
			b := tx.Bucket(bucketNodes)
			if old, ok, err := getJSON[Node](b, []byte(n.ID)); err != nil {
				return nil, err
			} else if ok {
				if n.Joined.IsZero() {
					n.Joined = old.Joined
				}
				// An update that does not name the key keeps the bound one
				// (only removing the node unbinds it).
				if n.KeySHA256 == "" {
					n.KeySHA256 = old.KeySHA256
				}
			}
			if n.Joined.IsZero() {
				n.Joined = cmd.Time
			}
			return n, putJSON(b, []byte(n.ID), n)
		})
	case TypeNodeDelete:
		res, err = decodeApply(cmd, func(c NodeDelete) (any, error) {
			return nil, tx.Bucket(bucketNodes).Delete([]byte(c.ID))
		})
	case TypeJoinToken:
		res, err = decodeApply(cmd, func(t JoinToken) (any, error) {
			if err := checkLen("join token hash", t.Hash, 64, 64); err != nil {
				return err, nil
			}
			b := tx.Bucket(bucketJoinTokens)
			// Expired tokens go when a new one is made.
			var old [][]byte
			b.ForEach(func(k, v []byte) error { // #nosec G104 -- the function returns nil, and ForEach fails only with its error
				if jt, ok, _ := getJSON[JoinToken](b, k); ok && !jt.Expires.After(cmd.Time) {
					old = append(old, append([]byte(nil), k...))
				}
				return nil
			})
			for _, k := range old {
				if err := b.Delete(k); err != nil {
					return nil, err
				}
			}
			t.UsedBy = ""
			return t, putJSON(b, []byte(t.Hash), t)
		})
	case TypeJoinTokenUse:
		res, err = decodeApply(cmd, func(c JoinTokenUse) (any, error) {
			b := tx.Bucket(bucketJoinTokens)
			t, ok, err := getJSON[JoinToken](b, []byte(c.Hash))
			switch {
			case err != nil:
				return nil, err
			case !ok:
				return fmt.Errorf("join token: %w", ErrNotFound), nil
			case t.UsedBy != "":
				return fmt.Errorf("join token already used by node %s: %w", t.UsedBy, ErrConflict), nil
			case !t.Expires.After(cmd.Time):
				return fmt.Errorf("join token expired at %s: %w", t.Expires.Format(time.RFC3339), ErrConflict), nil
			}
			t.UsedBy = c.Node
			return t, putJSON(b, []byte(c.Hash), t)
		})
	case TypeMEKGen:
		res, err = decodeApply(cmd, func(w keystore.WrappedGen) (any, error) {
			if w.Gen < 2 || w.Under == 0 || w.Under >= w.Gen || len(w.Wrapped) < 28 || len(w.Wrapped) > 128 {
				return bad("master key generation %d under %d: malformed", w.Gen, w.Under), nil
			}
			b := tx.Bucket(bucketMEKGens)
			if b.Get(u32(w.Gen)) != nil {
				// Two leaders proposed the same number: the first one stands.
				return fmt.Errorf("master key generation %d: %w", w.Gen, ErrExists), nil
			}
			return w, putJSON(b, u32(w.Gen), w)
		})
	case TypeKeystorePassphrase:
		res, err = decodeApply(cmd, func(p KeystorePassphrase) (any, error) {
			if p.Version == 0 || len(p.Sealed) == 0 || len(p.Sealed) > 1024 {
				return bad("keystore passphrase record: malformed"), nil
			}
			return p, putJSON(tx.Bucket(bucketMeta), keyKeystorePassphrase, p)
		})
	case TypeClusterCA:
		res, err = decodeApply(cmd, func(c ClusterCA) (any, error) { return s.applyClusterCA(tx, c) })
	default:
		return nil, nil, false
	}
	return res, err, true
}

// KeystorePassphrase returns the replicated passphrase record (ok false: none).
func (s *Store) KeystorePassphrase() (KeystorePassphrase, bool) {
	p, err := viewJSON[KeystorePassphrase](s, bucketMeta, keyKeystorePassphrase, "keystore passphrase")
	return p, err == nil && p.Version > 0
}

// MEKGens lists the replicated master key generations.
func (s *Store) MEKGens() ([]keystore.WrappedGen, error) {
	return listJSON[keystore.WrappedGen](s, bucketMEKGens)
}

// Nodes lists the registered nodes.
func (s *Store) Nodes() ([]Node, error) { return listJSON[Node](s, bucketNodes) }

// Node returns a registered node's record.
func (s *Store) Node(id string) (Node, error) {
	return viewJSON[Node](s, bucketNodes, []byte(id), "node "+id)
}

// JoinToken returns a stored join token by its hash.
func (s *Store) JoinToken(hash string) (JoinToken, error) {
	return viewJSON[JoinToken](s, bucketJoinTokens, []byte(hash), "join token")
}
