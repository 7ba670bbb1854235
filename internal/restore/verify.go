package restore

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/coffer-kms/coffer/internal/backup"
	"github.com/coffer-kms/coffer/internal/backup/bundle"
	"github.com/coffer-kms/coffer/internal/backup/dest"
	"github.com/coffer-kms/coffer/internal/barrier"
	"github.com/coffer-kms/coffer/internal/journal"
	"github.com/coffer-kms/coffer/internal/state"
)

// Verify proves one backup restorable: it decrypts it (and, for an
// incremental, its full), checks every checksum and authentication tag,
// replays it into a temporary directory under work, runs the integrity
// check on the result (bbolt consistency, every data key and every secret
// decrypts), and compares the object count and state digest with those
// recorded when the backup was taken. An archived segment is decrypted and
// its journal framing and chain checked, and it must continue an earlier
// backup on the destination without a gap. A nil error means OK.
func Verify(ctx context.Context, d dest.Destination, cat backup.Catalog, e backup.Entry, keys []bundle.Decryption, work string) error {
	tmp, err := os.MkdirTemp(work, "verify-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	switch e.Kind {
	case backup.KindSegment:
		return verifySegment(ctx, d, cat, e, keys, tmp)
	case backup.KindFull, backup.KindDump, backup.KindIncremental:
	default:
		return fmt.Errorf("unknown backup kind %q", e.Kind)
	}
	files, full := []string{e.File}, e
	if e.Kind == backup.KindIncremental {
		i := -1
		for j, x := range cat.Entries {
			if x.ID == e.BaseFullID && (x.Kind == backup.KindFull || x.Kind == backup.KindDump) {
				i = j
			}
		}
		if i < 0 {
			return fmt.Errorf("its full backup %s is not on %s: the incremental cannot be restored", e.BaseFullID, d.Location())
		}
		full = cat.Entries[i]
		files = append(files, full.File)
	}
	opts := Options{From: d, Keys: keys, DataDir: filepath.Join(tmp, "data"), Files: files, BackupID: full.ID,
		Timeline: e.TimelineID(), Target: Target{Index: e.LastIndex},
		Inspect: func(st *state.Store, bar *barrier.Barrier) error {
			if got := st.AppliedIndex(); got != e.LastIndex {
				return fmt.Errorf("replayed to index %d, the backup ends at %d", got, e.LastIndex)
			}
			_, digest, objects, err := st.Digest()
			if err != nil {
				return err
			}
			// The full's own digest (in its payload) was compared when it
			// was loaded; the catalog's copy is checked here too.
			if e.Digest != "" && e.Kind != backup.KindIncremental && digest != e.Digest {
				return fmt.Errorf("state digest %s differs from the catalog's (%s)", digest, e.Digest)
			}
			if e.Objects != 0 && e.Kind != backup.KindIncremental && objects != e.Objects {
				return fmt.Errorf("%d objects, the backup recorded %d", objects, e.Objects)
			}
			return CheckState(st, bar)
		}}
	_, err = Run(ctx, opts)
	return err
}

// CheckState is the integrity check of a state: bbolt's consistency, and
// every object version and sealed secret decrypts and authenticates.
func CheckState(st *state.Store, bar *barrier.Barrier) error {
	if errs := st.CheckConsistency(1); len(errs) > 0 {
		return fmt.Errorf("state database: %w", errs[0])
	}
	var bad error
	err := st.Objects("", func(o state.Object) bool {
		for _, v := range o.Versions {
			if v.Destroyed {
				continue
			}
			sealed, err := st.Material(o.ID, v.Version)
			if err == nil {
				var p []byte
				p, err = bar.DecryptValue(o.ID, v.Version, sealed)
				clear(p)
			}
			if err != nil {
				bad = fmt.Errorf("object %s version %d: %w", o.ID, v.Version, err)
				return false
			}
		}
		return true
	})
	if err == nil {
		err = bad
	}
	if err == nil {
		err = st.EachSealed(func(what, id string, version uint64, sealed []byte) error {
			p, err := bar.DecryptValue(id, version, sealed)
			clear(p)
			if err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
			return nil
		})
	}
	return err
}

func verifySegment(ctx context.Context, d dest.Destination, cat backup.Catalog, e backup.Entry, keys []bundle.Decryption, tmp string) error {
	covered := false
	for _, x := range cat.Entries {
		if x.File != e.File && x.TimelineID() == e.TimelineID() && x.FirstIndex < e.FirstIndex && x.LastIndex+1 >= e.FirstIndex {
			covered = true
		}
	}
	if !covered && e.FirstIndex > 1 {
		if h, err := state.ParseHistory(e.History); err == nil && len(h) > 0 && h[len(h)-1].Upto+1 >= e.FirstIndex {
			covered = true // the first segment of a restored timeline
		}
	}
	if !covered && e.FirstIndex > 1 {
		return fmt.Errorf("it starts at index %d, but no backup on %s on timeline %d reaches index %d: a gap before it", e.FirstIndex, d.Location(), e.TimelineID(), e.FirstIndex-1)
	}
	p, err := fetch(ctx, d, e, keys, filepath.Join(tmp, "seg"), nil)
	if err != nil {
		return err
	}
	p.wipe()
	rep, err := journal.Verify(p.journal, nil)
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	if rep.FirstIndex > e.FirstIndex || rep.LastIndex != e.LastIndex {
		return fmt.Errorf("journal holds records %d-%d, the manifest says %d-%d", rep.FirstIndex, rep.LastIndex, e.FirstIndex, e.LastIndex)
	}
	return nil
}

// Record stores a verification result in the destination's catalog.
func Record(ctx context.Context, d dest.Destination, file string, v backup.Verification) error {
	cat, err := backup.LoadCatalog(ctx, d)
	if err != nil {
		return err
	}
	found := false
	for i := range cat.Entries {
		if cat.Entries[i].File == file {
			cat.Entries[i].Verified = &v
			found = true
		}
	}
	if !found {
		return fmt.Errorf("%s is not in the catalog of %s", file, d.Location())
	}
	return backup.SaveCatalog(ctx, d, cat)
}
