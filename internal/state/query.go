package state

import (
	"bytes"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Read-only queries on the local state. They see every command applied on
// this node; on a follower that may lag the leader by a few entries.

func isDomain(err error) bool {
	return errors.Is(err, ErrNotFound) || errors.Is(err, ErrConflict) || errors.Is(err, ErrExists) || errors.Is(err, ErrBadCommand)
}

func viewJSON[T any](s *Store, bucket, key []byte, what string) (T, error) {
	var v T
	err := s.View(func(tx *bolt.Tx) error {
		got, ok, err := getJSON[T](tx.Bucket(bucket), key)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%s: %w", what, ErrNotFound)
		}
		v = got
		return nil
	})
	return v, err
}

func listJSON[T any](s *Store, bucket []byte) ([]T, error) {
	var out []T
	err := s.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(k, raw []byte) error {
			var v T
			if err := decodeJSON(raw, &v); err != nil {
				return fmt.Errorf("decode %s/%s: %w", bucket, k, err)
			}
			out = append(out, v)
			return nil
		})
	})
	return out, err
}

// Object returns an object's metadata by id.
func (s *Store) Object(id string) (Object, error) {
	return viewCached(s, objectCache, bucketObjects, id, "object %s")
}

// ObjectByName returns an object's metadata by wallet and name.
func (s *Store) ObjectByName(wallet, name string) (Object, error) {
	var o Object
	err := s.View(func(tx *bolt.Tx) error {
		id := tx.Bucket(bucketNames).Get(nameKey(wallet, name))
		if id == nil {
			return fmt.Errorf("object %q in wallet %q: %w", name, wallet, ErrNotFound)
		}
		raw := tx.Bucket(bucketObjects).Get(id)
		if raw == nil {
			return fmt.Errorf("object %s (name index of %q): %w", id, name, ErrNotFound)
		}
		return objectCache.decode(raw, &o)
	})
	return o, err
}

// ObjectWithMaterial is Object(id) and the sealed material of version
// (the latest when 0; nil if the object has none for it), read in one
// transaction.
func (s *Store) ObjectWithMaterial(id string, version uint64) (Object, []byte, error) {
	var (
		o      Object
		sealed []byte
	)
	err := s.View(func(tx *bolt.Tx) (err error) {
		o, sealed, err = objectWithMaterialTx(tx, id, version)
		return err
	})
	return o, sealed, err
}

// objectWithMaterialTx is ObjectWithMaterial inside tx.
func objectWithMaterialTx(tx *bolt.Tx, id string, version uint64) (o Object, sealed []byte, err error) {
	raw := tx.Bucket(bucketObjects).Get([]byte(id))
	if raw == nil {
		return o, nil, fmt.Errorf("object %s: %w", id, ErrNotFound)
	}
	if err := objectCache.decode(raw, &o); err != nil {
		return o, nil, err
	}
	if version == 0 {
		version = o.Latest
	}
	if v := tx.Bucket(bucketValues).Get(valueKey(o.ID, version)); v != nil {
		sealed = append([]byte(nil), v...)
	}
	return o, sealed, nil
}

// ObjectMaterialGrant is ObjectWithMaterial and, in the same transaction,
// endpoint's grant on the object's wallet (WalletGrant: "" when it has
// none; grantErr wraps ErrNotFound when the wallet does not exist). A
// missing object is err; the grant is then not read.
func (s *Store) ObjectMaterialGrant(id string, version uint64, endpoint string) (o Object, sealed []byte, grant string, grantErr, err error) {
	k := omgKey{id, version, endpoint}
	if r, ok := s.omgMemo.Get(s, k); ok {
		return copyObject(r.o), bytes.Clone(r.sealed), r.grant, r.grantErr, nil
	}
	at := s.applied.Load()
	if o, sealed, grant, grantErr, err = s.objectMaterialGrant(id, version, endpoint); err == nil && len(sealed) <= memoMaxMaterial && memoWorth(objectFootprint(o)) {
		s.omgMemo.Put(s, at, k, omgRead{o: copyObject(o), sealed: bytes.Clone(sealed), grant: grant, grantErr: grantErr})
	}
	return o, sealed, grant, grantErr, err
}

// objectMaterialGrant is ObjectMaterialGrant's read of the state.
func (s *Store) objectMaterialGrant(id string, version uint64, endpoint string) (o Object, sealed []byte, grant string, grantErr, err error) {
	err = s.View(func(tx *bolt.Tx) error {
		var err error
		if o, sealed, err = objectWithMaterialTx(tx, id, version); err != nil {
			return err
		}
		wraw := tx.Bucket(bucketWallets).Get([]byte(o.Wallet))
		if wraw == nil {
			grantErr = fmt.Errorf("wallet %q: %w", o.Wallet, ErrNotFound)
			return nil
		}
		grantErr = walletCache.read(wraw, func(w Wallet) { grant = w.Grants[endpoint] })
		return nil
	})
	return o, sealed, grant, grantErr, err
}

// Material returns the sealed material of one version.
func (s *Store) Material(id string, version uint64) ([]byte, error) {
	var out []byte
	err := s.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketValues).Get(valueKey(id, version))
		if v == nil {
			return fmt.Errorf("object %s version %d material: %w", id, version, ErrNotFound)
		}
		out = append([]byte(nil), v...)
		return nil
	})
	return out, err
}

// Objects calls fn for each object with an id after `after`, in id order,
// until fn returns false.
func (s *Store) Objects(after string, fn func(Object) bool) error {
	return s.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketObjects).Cursor()
		var k, v []byte
		if after == "" {
			k, v = c.First()
		} else {
			k, v = c.Seek([]byte(after))
			if k != nil && bytes.Equal(k, []byte(after)) {
				k, v = c.Next()
			}
		}
		for ; k != nil; k, v = c.Next() {
			var o Object
			if err := decodeJSON(v, &o); err != nil {
				return fmt.Errorf("decode object %s: %w", k, err)
			}
			if !fn(o) {
				return nil
			}
		}
		return nil
	})
}

// Wallet returns a wallet by name.
func (s *Store) Wallet(name string) (Wallet, error) {
	return viewCached(s, walletCache, bucketWallets, name, "wallet %q")
}

// WalletGrant is the permission wallet's grants give endpoint ("" if
// none); a missing wallet is an ErrNotFound. It reads the grant alone,
// without copying the wallet's grants (the authorisation of every
// endpoint request).
func (s *Store) WalletGrant(wallet, endpoint string) (string, error) {
	var grant string
	err := s.View(func(tx *bolt.Tx) error {
		raw := tx.Bucket(bucketWallets).Get([]byte(wallet))
		if raw == nil {
			return fmt.Errorf("wallet %q: %w", wallet, ErrNotFound)
		}
		return walletCache.read(raw, func(w Wallet) { grant = w.Grants[endpoint] })
	})
	return grant, err
}

// Wallets lists every wallet in name order.
func (s *Store) Wallets() ([]Wallet, error) { return listJSON[Wallet](s, bucketWallets) }

// Endpoint returns an endpoint by name.
func (s *Store) Endpoint(name string) (Endpoint, error) {
	return viewCached(s, endpointCache, bucketEndpoints, name, "endpoint %q")
}

// Endpoints lists every endpoint in name order.
func (s *Store) Endpoints() ([]Endpoint, error) { return listJSON[Endpoint](s, bucketEndpoints) }

// EndpointByCert returns the endpoint enrolled with a certificate (hex SHA-256 of its DER).
func (s *Store) EndpointByCert(fingerprint string) (Endpoint, error) {
	var e Endpoint
	err := s.View(func(tx *bolt.Tx) error {
		name := tx.Bucket(bucketCerts).Get([]byte(fingerprint))
		if name == nil {
			return ErrNotFound
		}
		raw := tx.Bucket(bucketEndpoints).Get(name)
		if raw == nil {
			return ErrNotFound
		}
		return endpointCache.decode(raw, &e)
	})
	return e, err
}

// User returns an administrator by name.
func (s *Store) User(name string) (User, error) {
	return viewJSON[User](s, bucketUsers, []byte(name), fmt.Sprintf("user %q", name))
}

// Users lists every administrator in name order.
func (s *Store) Users() ([]User, error) { return listJSON[User](s, bucketUsers) }

// CheckConsistency runs bbolt's own page-level consistency check and
// returns the problems it finds (at most max).
func (s *Store) CheckConsistency(max int) []error {
	var out []error
	err := s.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			if len(out) < max {
				out = append(out, err)
			}
		}
		return nil
	})
	if err != nil {
		out = append(out, fmt.Errorf("consistency check: %w", err))
	}
	return out
}

// EachSealed calls fn with every sealed value the state holds besides object
// material (which Material and Objects reach): the recovery passphrase and
// destination secrets, with the barrier id and version each is sealed for.
func (s *Store) EachSealed(fn func(what, id string, version uint64, sealed []byte) error) error {
	if r, err := s.Recovery(); err == nil {
		if err := fn("recovery passphrase", "recovery-passphrase", r.Generation, r.Sealed); err != nil {
			return err
		}
	}
	ds, err := s.Destinations()
	if err != nil {
		return err
	}
	for _, d := range ds {
		if len(d.SealedSecret) > 0 {
			if err := fn("destination "+d.Name+" secret", "destination/"+d.Name+"/secret", d.SecretVersion, d.SealedSecret); err != nil {
				return err
			}
		}
		if len(d.SealedKey) > 0 {
			if err := fn("destination "+d.Name+" key", "destination/"+d.Name+"/key", d.SecretVersion, d.SealedKey); err != nil {
				return err
			}
		}
	}
	return nil
}
