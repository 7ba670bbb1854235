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
	o, writes, refused, err := s.planObjectRestore(tx, now, c)
	if err != nil || refused != nil {
		return refused, err
	}
	vals := tx.Bucket(bucketValues)
	for _, v := range writes {
		if err := vals.Put(valueKey(o.ID, v), c.Materials[v]); err != nil {
			return nil, err
		}
	}
	if !c.InPlace {
		if err := tx.Bucket(bucketNames).Put(nameKey(o.Wallet, o.Name), []byte(o.ID)); err != nil {
			return nil, err
		}
	}
	return o, putJSON(tx.Bucket(bucketObjects), []byte(o.ID), o)
}

// PreviewObjectRestore is what applying c now would do, without doing it:
// the object as the restore would leave it and the versions whose material
// it would write back (the apply runs the same planning), or the domain
// error the apply would answer with. Nothing is written.
func (s *Store) PreviewObjectRestore(now time.Time, c ObjectRestore) (o Object, restored []uint64, refused error, err error) {
	err = s.View(func(tx *bolt.Tx) error {
		var e error
		o, restored, refused, e = s.planObjectRestore(tx, now, c)
		return e
	})
	return o, restored, refused, err
}

// planObjectRestore computes the object an ObjectRestore leaves and the
// versions whose material it writes, reading tx only. refused is the
// command's domain error (its result); err an I/O error.
func (s *Store) planObjectRestore(tx *bolt.Tx, now time.Time, c ObjectRestore) (out Object, writes []uint64, refused error, err error) {
	o := c.Object
	for _, e := range []error{checkLen("object id", o.ID, 1, maxIDBytes), checkLen("object name", o.Name, 1, maxNameBytes),
		checkLen("wallet name", o.Wallet, 1, maxNameBytes), checkAttrs(o.Attributes)} {
		if e != nil {
			return Object{}, nil, e, nil
		}
	}
	if len(c.Materials) == 0 {
		return Object{}, nil, bad("nothing to restore: no version with material"), nil
	}
	for v, m := range c.Materials {
		if err := checkLen("material", string(m), 1, maxMaterialBytes); err != nil {
			return Object{}, nil, err, nil
		}
		if !slices.ContainsFunc(o.Versions, func(x Version) bool { return x.Version == v }) {
			return Object{}, nil, bad("material for version %d, which the object does not list", v), nil
		}
	}
	if !c.InPlace {
		if tx.Bucket(bucketWallets).Get([]byte(o.Wallet)) == nil {
			return Object{}, nil, fmt.Errorf("wallet %q: %w", o.Wallet, ErrNotFound), nil
		}
		if tx.Bucket(bucketObjects).Get([]byte(o.ID)) != nil {
			return Object{}, nil, fmt.Errorf("object id %s: %w", o.ID, ErrExists), nil
		}
		if tx.Bucket(bucketNames).Get(nameKey(o.Wallet, o.Name)) != nil {
			return Object{}, nil, fmt.Errorf("object %q in wallet %q: %w", o.Name, o.Wallet, ErrExists), nil
		}
		if o.State == lifecycle.Destroyed {
			return Object{}, nil, bad("the object was already destroyed at that point: nothing to restore"), nil
		}
		var kept []Version
		for _, v := range o.Versions {
			if _, ok := c.Materials[v.Version]; ok {
				v.Destroyed = false
				writes = append(writes, v.Version)
				kept = append(kept, v)
			}
		}
		o.Versions, o.Updated = kept, now
		return o, writes, nil, nil
	}
	live, err := s.loadObject(tx, o.ID)
	if err != nil {
		if isDomain(err) {
			return Object{}, nil, err, nil
		}
		return Object{}, nil, nil, err
	}
	// live is decoded afresh from tx: changing its versions changes no
	// other reader's copy.
	for _, v := range o.Versions {
		if _, ok := c.Materials[v.Version]; !ok {
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
		writes = append(writes, v.Version)
	}
	if len(writes) == 0 {
		return Object{}, nil, fmt.Errorf("object %s has every version it had then: nothing to restore: %w", o.ID, ErrConflict), nil
	}
	slices.SortFunc(live.Versions, func(a, b Version) int { return cmp.Compare(a.Version, b.Version) })
	live.Latest = max(live.Latest, o.Latest)
	if live.State == lifecycle.Destroyed {
		live.State, live.Reason = o.State, "restored from a backup"
		live.Destroyed, live.Activated, live.Deactivate, live.Compromise = nil, o.Activated, o.Deactivate, o.Compromise
	}
	live.Updated = now
	return live, writes, nil, nil
}
