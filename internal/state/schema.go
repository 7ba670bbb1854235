package state

// Every bbolt bucket and key the state uses, in one place (as etcd does).
var (
	bucketMeta    = []byte("meta")
	bucketDEKs    = []byte("deks")
	bucketTokens  = []byte("tokens")
	bucketSecrets = []byte("secrets")  // name -> SecretMeta (JSON)
	bucketValues  = []byte("versions") // id/u64 version -> sealed value

	allBuckets = [][]byte{bucketMeta, bucketDEKs, bucketTokens, bucketSecrets, bucketValues}

	keySchema       = []byte("schema_version")
	keyAppliedIndex = []byte("applied_index")
	keyAppliedTerm  = []byte("applied_term")
	keyCurrentDEK   = []byte("current_dek")
	keyClusterID    = []byte("cluster_id")
)

// SchemaVersion of state.db. Bump with a migration.
const SchemaVersion = 1
