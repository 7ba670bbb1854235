package state

import (
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Every bbolt bucket and key the state uses, in one place (as etcd does).
var (
	bucketMeta      = []byte("meta")
	bucketDEKs      = []byte("deks")
	bucketTokens    = []byte("tokens")         // hex SHA-256 -> Token
	bucketObjects   = []byte("objects")        // object id -> Object (metadata, no material)
	bucketNames     = []byte("object_names")   // wallet 0x00 name -> object id
	bucketValues    = []byte("versions")       // object id / u64 version -> sealed material
	bucketWallets   = []byte("wallets")        // name -> Wallet
	bucketEndpoints = []byte("endpoints")      // name -> Endpoint
	bucketCerts     = []byte("endpoint_certs") // hex SHA-256 of a client certificate -> endpoint name
	bucketUsers     = []byte("users")          // name -> User

	allBuckets = [][]byte{bucketMeta, bucketDEKs, bucketTokens, bucketObjects, bucketNames, bucketValues,
		bucketWallets, bucketEndpoints, bucketCerts, bucketUsers}

	keySchema       = []byte("schema_version")
	keyAppliedIndex = []byte("applied_index")
	keyAppliedTerm  = []byte("applied_term")
	keyCurrentDEK   = []byte("current_dek")
	keyClusterID    = []byte("cluster_id")
	// keyRaftConfig: the latest raft configuration entry applied, as its
	// index (u64) followed by its data (raft's encoding), so that a snapshot
	// can be written at the applied index without scanning the raft log.
	keyRaftConfig = []byte("raft_configuration")
)

// SchemaVersion of state.db. Bump with a migration.
// 2: security objects, wallets, endpoints, users (the version-1 "secrets"
// stand-in was never released).
const SchemaVersion = 2

// OldestSchema is the oldest state.db schema this build opens (migrating
// it to SchemaVersion). Schema 1 was never released, so it is refused.
const OldestSchema = 2

// migrations[v] moves a state.db from schema v to v+1. Each runs inside the
// transaction that opens the database, so a migration that fails leaves the
// file as it was. Adding a schema means bumping SchemaVersion, adding its
// step here and a test that opens a database of the old schema.
var migrations = map[uint64]func(tx *bolt.Tx) error{}

// ErrSchema: state.db has a schema this build does not open.
var ErrSchema = errors.New("unsupported state schema")

// migrate brings the schema recorded in tx's meta bucket from got up to
// want, running steps[v] for every v in between.
func migrate(tx *bolt.Tx, got, oldest, want uint64, steps map[uint64]func(*bolt.Tx) error) error {
	switch {
	case got > want:
		return fmt.Errorf("%w: state schema version %d is newer than this build's version %d: run a build that reads it (or restore a backup with this build)", ErrSchema, got, want)
	case got < oldest:
		return fmt.Errorf("%w: state schema version %d is older than the oldest this build migrates (version %d, writing %d)", ErrSchema, got, oldest, want)
	}
	for v := got; v < want; v++ {
		step := steps[v]
		if step == nil {
			return fmt.Errorf("%w: no migration from state schema version %d to %d", ErrSchema, v, v+1)
		}
		if err := step(tx); err != nil {
			return fmt.Errorf("migrate state schema %d to %d: %w", v, v+1, err)
		}
	}
	if got != want {
		return tx.Bucket(bucketMeta).Put(keySchema, u64(want))
	}
	return nil
}
