package state

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
