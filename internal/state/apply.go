package state

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/coffer-kms/coffer/internal/barrier"
)

// ClusterInit is the first command after the keystore is created: it names
// the cluster and installs the first data key.
type ClusterInit struct {
	ClusterID string             `json:"cluster_id"`
	Key       barrier.WrappedKey `json:"key"`
}

// Token kinds.
const (
	TokenRoot     = "root"     // all roles; created at init or through the local socket
	TokenSession  = "session"  // a user's login; expires
	TokenEndpoint = "endpoint" // an enrolled endpoint's credential
)

// Token is an access token as stored: only its SHA-256.
type Token struct {
	Hash    string     `json:"hash"` // hex SHA-256 of the token
	Kind    string     `json:"kind,omitempty"`
	Subject string     `json:"subject,omitempty"` // user or endpoint name
	Policy  string     `json:"policy,omitempty"`
	Name    string     `json:"name"`
	Created time.Time  `json:"created"`
	Expires *time.Time `json:"expires,omitempty"`
	CredGen uint64     `json:"cred_gen,omitempty"` // session: the user's credential generation it was granted for
	// UsesLeft: an AppRole secret id's remaining logins (0: unlimited).
	UsesLeft int `json:"uses_left,omitempty"`
}

// apply mutates tx for one command. The returned error is an I/O failure that
// aborts the batch; domain errors are the result. Handlers validate before
// they write, so a domain error never leaves a partial change.
func (s *Store) apply(tx *bolt.Tx, index uint64, cmd Command) (any, error) {
	switch cmd.Type {
	case TypeClusterInit:
		var b ClusterInit
		if err := cmd.decode(&b); err != nil {
			return err, nil
		}
		meta := tx.Bucket(bucketMeta)
		if meta.Get(keyClusterID) != nil {
			return fmt.Errorf("cluster: %w", ErrExists), nil
		}
		if b.ClusterID == "" || len(b.ClusterID) > 128 {
			return fmt.Errorf("%w: cluster id must be 1 to 128 bytes", ErrBadCommand), nil
		}
		if err := checkDEK(tx, b.Key, false); err != nil {
			return err, nil
		}
		if err := meta.Put(keyClusterID, []byte(b.ClusterID)); err != nil {
			return nil, err
		}
		b.Key.Index = index
		return s.installDEK(tx, b.Key)
	case TypeDEKCreate:
		var wk barrier.WrappedKey
		if err := cmd.decode(&wk); err != nil {
			return err, nil
		}
		if err := checkDEK(tx, wk, false); err != nil {
			return err, nil
		}
		wk.Index = index
		return s.installDEK(tx, wk)
	case TypeDEKRewrap:
		var keys []barrier.WrappedKey
		if err := cmd.decode(&keys); err != nil {
			return err, nil
		}
		b := tx.Bucket(bucketDEKs)
		for _, wk := range keys {
			if err := checkDEK(tx, wk, true); err != nil {
				return err, nil
			}
		}
		for _, wk := range keys {
			var old barrier.WrappedKey
			if err := decodeJSON(b.Get(u32(wk.ID)), &old); err != nil {
				return nil, err
			}
			wk.Index = old.Index // the creation index never changes
			if err := putJSON(b, u32(wk.ID), wk); err != nil {
				return nil, err
			}
		}
		return nil, nil
	case TypeTokenCreate:
		return decodeApply(cmd, func(t Token) (any, error) { return s.applyTokenCreate(tx, cmd.Time, t) })
	case TypeTokenRevoke:
		return decodeApply(cmd, func(c TokenRevoke) (any, error) { return s.applyTokenRevoke(tx, c) })
	case TypeObjectCreate:
		return decodeApply(cmd, func(c ObjectCreate) (any, error) { return s.applyObjectCreate(tx, cmd.Time, c) })
	case TypeObjectRotate:
		return decodeApply(cmd, func(c ObjectRotate) (any, error) { return s.applyObjectRotate(tx, cmd.Time, c) })
	case TypeObjectState:
		return decodeApply(cmd, func(c ObjectState) (any, error) { return s.applyObjectState(tx, cmd.Time, c) })
	case TypeObjectAttrs:
		return decodeApply(cmd, func(c ObjectAttrs) (any, error) { return s.applyObjectAttrs(tx, cmd.Time, c) })
	case TypeObjectRestore:
		return decodeApply(cmd, func(c ObjectRestore) (any, error) { return s.applyObjectRestore(tx, cmd.Time, c) })
	case TypeWalletCreate:
		return decodeApply(cmd, func(c Wallet) (any, error) { return s.applyWalletCreate(tx, cmd.Time, c) })
	case TypeWalletDelete:
		return decodeApply(cmd, func(c WalletDelete) (any, error) { return s.applyWalletDelete(tx, c) })
	case TypeGrant:
		return decodeApply(cmd, func(c Grant) (any, error) { return s.applyGrant(tx, c) })
	case TypeEndpointEnroll:
		return decodeApply(cmd, func(c EndpointEnroll) (any, error) { return s.applyEndpointEnroll(tx, cmd.Time, c) })
	case TypeEndpointRevoke:
		return decodeApply(cmd, func(c EndpointRevoke) (any, error) { return s.applyEndpointRevoke(tx, cmd.Time, c) })
	case TypeAppRoleLogin:
		return decodeApply(cmd, func(c AppRoleLogin) (any, error) { return s.applyAppRoleLogin(tx, cmd.Time, c) })
	case TypeEndpointRenew:
		return decodeApply(cmd, func(c EndpointRenew) (any, error) { return s.applyEndpointRenew(tx, cmd.Time, c) })
	case TypeUserCreate:
		return decodeApply(cmd, func(c User) (any, error) { return s.applyUserCreate(tx, cmd.Time, c) })
	case TypeUserUpdate:
		return decodeApply(cmd, func(c UserUpdate) (any, error) { return s.applyUserUpdate(tx, cmd.Time, c) })
	case TypeUserDelete:
		return decodeApply(cmd, func(c UserDelete) (any, error) { return s.applyUserDelete(tx, c) })
	case TypeDestinationPut:
		return decodeApply(cmd, func(c Destination) (any, error) { return s.applyDestinationPut(tx, cmd.Time, c) })
	case TypeDestinationDelete:
		return decodeApply(cmd, func(c DestinationDelete) (any, error) { return s.applyDestinationDelete(tx, c) })
	case TypeArchiveProgress:
		return decodeApply(cmd, func(c ArchiveProgress) (any, error) { return s.applyArchiveProgress(tx, cmd.Time, c) })
	case TypeArchivePause:
		return decodeApply(cmd, func(c ArchivePause) (any, error) { return s.applyArchivePause(tx, cmd.Time, c) })
	case TypeBackupRecord:
		return decodeApply(cmd, func(c BackupRecord) (any, error) { return s.applyBackupRecord(tx, c) })
	case TypeSchedulePut:
		return decodeApply(cmd, func(c Schedule) (any, error) { return s.applySchedulePut(tx, cmd.Time, c) })
	case TypeScheduleDelete:
		return decodeApply(cmd, func(c ScheduleDelete) (any, error) { return s.applyScheduleDelete(tx, c) })
	case TypeRestorePoint:
		return decodeApply(cmd, func(c RestorePoint) (any, error) { return s.applyRestorePoint(tx, index, cmd.Time, c) })
	case TypeRecoverySet:
		return decodeApply(cmd, func(c Recovery) (any, error) { return s.applyRecovery(tx, cmd.Time, c) })
	case TypeRestoreRelease:
		return decodeApply(cmd, func(c RestoreRelease) (any, error) { return s.applyRestoreRelease(tx, cmd.Time, c) })
	}
	// Vault-compatible API commands (170-179), dispatched in kv.go.
	if res, err, ok := s.applyKV(tx, cmd); ok {
		return res, err
	}
	// Cluster membership (190-199), in nodes.go.
	if res, err, ok := s.applyCluster(tx, cmd); ok {
		return res, err
	}
	if _, named := typeNames[cmd.Type]; named || cmd.Type == typeRetired {
		// A type this build knows that is not a command (a journal-only
		// record type) or one retired: a malformed entry, not a newer one.
		return fmt.Errorf("%w: command type %d (%s) is not applied as a command", ErrBadCommand, cmd.Type, cmd.Type), nil
	}
	return nil, fmt.Errorf("%w: entry %d holds command type %d, written by a newer build", ErrUnknownCommand, index, cmd.Type)
}

// checkDEK validates a wrapped data key before anything is written: id 1 or
// more, wrapped bytes present, and (not) already stored.
func checkDEK(tx *bolt.Tx, wk barrier.WrappedKey, mustExist bool) error {
	if wk.ID == 0 || wk.MEKGen == 0 || len(wk.Wrapped) == 0 || len(wk.Wrapped) > 1024 {
		return fmt.Errorf("%w: data key %d: id, MEK generation and wrapped key are required", ErrBadCommand, wk.ID)
	}
	exists := tx.Bucket(bucketDEKs).Get(u32(wk.ID)) != nil
	switch {
	case mustExist && !exists:
		return fmt.Errorf("data key %d: %w", wk.ID, ErrNotFound)
	case !mustExist && exists:
		return fmt.Errorf("data key %d: %w", wk.ID, ErrExists)
	}
	return nil
}

// installDEK stores a checked data key and makes it current.
func (s *Store) installDEK(tx *bolt.Tx, wk barrier.WrappedKey) (any, error) {
	b := tx.Bucket(bucketDEKs)
	if err := putJSON(b, u32(wk.ID), wk); err != nil {
		return nil, err
	}
	if err := tx.Bucket(bucketMeta).Put(keyCurrentDEK, u64(uint64(wk.ID))); err != nil {
		return nil, err
	}
	if s.bar != nil {
		if err := s.bar.Install(wk, true); err != nil {
			// The key cannot be unwrapped here: this node's keystore lacks the
			// MEK generation. Fail the I/O so the batch retries, loudly.
			return nil, fmt.Errorf("install data key %d: %w", wk.ID, err)
		}
	}
	return nil, nil
}

// TokenByHash looks up a token by its hex SHA-256.
func (s *Store) TokenByHash(hash string) (Token, error) {
	var t Token
	err := s.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketTokens).Get([]byte(hash))
		if v == nil {
			return ErrNotFound
		}
		return tokenCache.decode(v, &t)
	})
	return t, err
}

// TokenAndEndpoint is TokenByHash and, for an endpoint's token, that
// endpoint (ok false if it does not exist), read in one transaction.
func (s *Store) TokenAndEndpoint(hash string) (t Token, e Endpoint, ok bool, err error) {
	err = s.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketTokens).Get([]byte(hash))
		if v == nil {
			return ErrNotFound
		}
		if err := tokenCache.decode(v, &t); err != nil || t.Kind != TokenEndpoint {
			return err
		}
		raw := tx.Bucket(bucketEndpoints).Get([]byte(t.Subject))
		if raw == nil {
			return nil
		}
		ok = true
		return endpointCache.decode(raw, &e)
	})
	return t, e, ok, err
}

func valueKey(id string, version uint64) []byte {
	k := make([]byte, 0, len(id)+9)
	k = append(k, id...)
	k = append(k, '/')
	return binary.BigEndian.AppendUint64(k, version)
}

// decodeApply decodes the command body into T and applies it; a body that
// does not decode is the command's result, never an I/O failure. A body
// decoded ahead into a T (prepare) is taken as it is.
func decodeApply[T any](cmd Command, fn func(T) (any, error)) (any, error) {
	if v, ok := cmd.pre.(T); ok {
		return fn(v)
	}
	var v T
	if err := cmd.decode(&v); err != nil {
		return err, nil
	}
	return fn(v)
}

func u32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

func putJSON(b *bolt.Bucket, k []byte, v any) error {
	if o, ok := v.(Object); ok {
		if enc, ok := appendObjectJSON(make([]byte, 0, 512), &o); ok {
			return b.Put(k, enc)
		}
	}
	enc, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(k, enc)
}

func decodeJSON(b []byte, v any) error { return json.Unmarshal(b, v) }

// RootTokens lists the root tokens (their hashes, never the tokens).
func (s *Store) RootTokens() ([]Token, error) {
	var out []Token
	err := s.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketTokens).ForEach(func(_, v []byte) error {
			var t Token
			if err := decodeJSON(v, &t); err != nil {
				return err
			}
			if t.Kind == "" || t.Kind == TokenRoot {
				out = append(out, t)
			}
			return nil
		})
	})
	return out, err
}
