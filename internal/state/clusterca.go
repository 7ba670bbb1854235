package state

import (
	"encoding/pem"

	bolt "go.etcd.io/bbolt"
)

// TypeClusterCA stores the cluster CA: its certificate and its private key
// sealed by the barrier, so that any open node can sign and no node keeps
// the key in a plain file (body: ClusterCA).
const TypeClusterCA Type = 196

// ClusterCA is the cluster's certificate authority. Sealed is the private
// key (PEM) sealed by the barrier (object id "cluster-ca-key", version
// Version); Cert is the certificate (PEM).
type ClusterCA struct {
	Version uint64 `json:"version"`
	Cert    []byte `json:"cert"`
	Sealed  []byte `json:"sealed"`
}

var keyClusterCA = []byte("cluster_ca")

func init() {
	typeNames[TypeClusterCA] = "cluster-ca"
}

func (s *Store) applyClusterCA(tx *bolt.Tx, c ClusterCA) (any, error) {
	if c.Version == 0 || len(c.Sealed) == 0 || len(c.Sealed) > 16<<10 || len(c.Cert) > 64<<10 {
		return bad("cluster CA record: malformed"), nil
	}
	if b, _ := pem.Decode(c.Cert); b == nil || b.Type != "CERTIFICATE" {
		return bad("cluster CA record: no PEM certificate"), nil
	}
	if old, ok, err := getJSON[ClusterCA](tx.Bucket(bucketMeta), keyClusterCA); err != nil {
		return nil, err
	} else if ok && old.Version >= c.Version {
		// Two nodes stored it at once: the first one stands.
		return old, nil
	}
	return c, putJSON(tx.Bucket(bucketMeta), keyClusterCA, c)
}

// ClusterCA returns the replicated cluster CA (ok false: none stored).
func (s *Store) ClusterCA() (ClusterCA, bool) {
	c, err := viewJSON[ClusterCA](s, bucketMeta, keyClusterCA, "cluster CA")
	return c, err == nil && c.Version > 0
}
