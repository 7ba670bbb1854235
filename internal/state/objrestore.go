package state

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/coffer-kms/coffer/internal/lifecycle"
)

// ObjectRestore puts an object back as it was at a past point, read from a
// backup: Object is its metadata then, Materials the sealed material of
// each of its versions that still had material, sealed for Object.ID.
//
// With InPlace the object (same id) gets back the material of every version
// it has lost since (a mistaken destroy); versions it still has are left
// alone, versions made after the point are kept, and a destroyed object
// returns to the state it had then. Without InPlace a new object (a new id,
// and usually a new name) is created with those versions.
type ObjectRestore struct {
	Object    Object            `json:"object"`
	Materials map[uint64][]byte `json:"materials"`
	InPlace   bool              `json:"in_place,omitempty"`
	From      string            `json:"from,omitempty"` // what it was restored from (for the record)
}

func (s *Store) applyObjectRestore(tx *bolt.Tx, now time.Time, c ObjectRestore) (any, error) {
	o := c.Object
	for _, e := range []error{checkLen("object id", o.ID, 1, maxIDBytes), checkLen("object name", o.Name, 1, maxNameBytes),
		checkLen("wallet name", o.Wallet, 1, maxNameBytes), checkAttrs(o.Attributes)} {
		if e != nil {
			return e, nil
		}
	}
	if len(c.Materials) == 0 {
		return bad("nothing to restore: no version with material"), nil
	}
	for v, m := range c.Materials {
		if err := checkLen("material", string(m), 1, maxMaterialBytes); err != nil {
			return err, nil
		}
		if !slices.ContainsFunc(o.Versions, func(x Version) bool { return x.Version == v }) {
			return bad("material for version %d, which the object does not list", v), nil
		}
	}
	vals := tx.Bucket(bucketValues)
	if !c.InPlace {
		if tx.Bucket(bucketWallets).Get([]byte(o.Wallet)) == nil {
			return fmt.Errorf("wallet %q: %w", o.Wallet, ErrNotFound), nil
		}
		if tx.Bucket(bucketObjects).Get([]byte(o.ID)) != nil {
			return fmt.Errorf("object id %s: %w", o.ID, ErrExists), nil
		}
		if tx.Bucket(bucketNames).Get(nameKey(o.Wallet, o.Name)) != nil {
			return fmt.Errorf("object %q in wallet %q: %w", o.Name, o.Wallet, ErrExists), nil
		}
		if o.State == lifecycle.Destroyed {
			return bad("the object was already destroyed at that point: nothing to restore"), nil
		}
		var kept []Version
		for _, v := range o.Versions {
			if m, ok := c.Materials[v.Version]; ok {
				v.Destroyed = false
				if err := vals.Put(valueKey(o.ID, v.Version), m); err != nil {
					return nil, err
				}
				kept = append(kept, v)
			}
		}
		o.Versions, o.Updated = kept, now
		if err := tx.Bucket(bucketNames).Put(nameKey(o.Wallet, o.Name), []byte(o.ID)); err != nil {
			return nil, err
		}
		return o, putJSON(tx.Bucket(bucketObjects), []byte(o.ID), o)
	}
	live, err := s.loadObject(tx, o.ID)
	if err != nil {
		return resultOrIO(err)
	}
	restored := 0
	for _, v := range o.Versions {
		m, ok := c.Materials[v.Version]
		if !ok {
			continue
		}
		i := slices.IndexFunc(live.Versions, func(x Version) bool { return x.Version == v.Version })
		switch {
		case i < 0:
			v.Destroyed = false
			live.Versions = append(live.Versions, v)
		case !live.Versions[i].Destroyed:
			continue // still there: nothing lost
		default:
			live.Versions[i].Destroyed = false
		}
		if err := vals.Put(valueKey(o.ID, v.Version), m); err != nil {
			return nil, err
		}
		restored++
	}
	if restored == 0 {
		return fmt.Errorf("object %s has every version it had then: nothing to restore: %w", o.ID, ErrConflict), nil
	}
	slices.SortFunc(live.Versions, func(a, b Version) int { return cmp.Compare(a.Version, b.Version) })
	live.Latest = max(live.Latest, o.Latest)
	if live.State == lifecycle.Destroyed {
		live.State, live.Reason = o.State, "restored from a backup"
		live.Destroyed, live.Activated, live.Deactivate, live.Compromise = nil, o.Activated, o.Deactivate, o.Compromise
	}
	live.Updated = now
	return live, putJSON(tx.Bucket(bucketObjects), []byte(live.ID), live)
}
