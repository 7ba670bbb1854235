package service

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/coffer-kms/coffer/internal/backup"
	"github.com/coffer-kms/coffer/internal/datadir"
	"github.com/coffer-kms/coffer/internal/fsutil"
	"github.com/coffer-kms/coffer/internal/restore"
)

// Drill is the result of one restore drill.
type Drill = backup.Drill

// DrillView is a destination's restore drills as status and listings show
// them: the newest drill, the newest successful one, and the restore time
// its measured speed predicts for the destination's newest chain.
type DrillView struct {
	Last      *backup.Drill `json:"last,omitempty"`
	LastGood  *backup.Drill `json:"last_success,omitempty"`
	ChainSize int64         `json:"chain_bytes,omitempty" doc:"size of the newest backup chain when the catalog was last read"`
	// EstimatedRestore is ChainSize at the last successful drill's speed,
	// in seconds (0: no successful drill yet).
	EstimatedRestore float64 `json:"estimated_restore_seconds,omitempty"`
}

// drillCache holds what this node knows of each destination's catalog:
// its drills and the verifications of its backups (by file), from the
// drills and verifications it ran and the catalogs it read (at becoming
// leader).
type drillCache struct {
	mu  sync.Mutex
	m   map[string]DrillView
	ver map[string]map[string]backup.Verification
	gen map[string]uint64 // counts the changes of each destination's entry
}

func (c *drillCache) set(name string, cat backup.Catalog) { c.put(name, cat, nil) }

// setSince is set unless name's entry changed since version returned
// since: a catalog read without the catalog's lock must not overwrite what
// a drill, verification or rebuild set meanwhile.
func (c *drillCache) setSince(name string, cat backup.Catalog, since uint64) {
	c.put(name, cat, &since)
}

// version is what setSince compares with.
func (c *drillCache) version(name string) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen[name]
}

func (c *drillCache) init() {
	if c.m == nil {
		c.m, c.ver, c.gen = map[string]DrillView{}, map[string]map[string]backup.Verification{}, map[string]uint64{}
	}
}

func (c *drillCache) put(name string, cat backup.Catalog, since *uint64) {
	v := DrillView{Last: cat.LastDrill(), LastGood: cat.LastGoodDrill()}
	if _, chain, ok := cat.NewestChain(0); ok {
		for _, e := range chain {
			v.ChainSize += e.Size
		}
	}
	v.EstimatedRestore = cat.EstimateRestore(v.ChainSize).Seconds()
	ver := map[string]backup.Verification{}
	for _, e := range cat.Entries {
		if e.Verified != nil {
			ver[e.File] = *e.Verified
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.init()
	if since != nil && c.gen[name] != *since {
		return
	}
	c.m[name], c.ver[name] = v, ver
	c.gen[name]++
}

// verified records the verification of one backup file.
func (c *drillCache) verified(name, file string, v backup.Verification) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.init()
	if c.ver[name] == nil {
		c.ver[name] = map[string]backup.Verification{}
	}
	c.ver[name][file] = v
	c.gen[name]++
}

// verification is the last verification of a backup file known here.
func (c *drillCache) verification(name, file string) (backup.Verification, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.ver[name][file]
	return v, ok
}

func (c *drillCache) get(name string) (DrillView, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.m[name]
	return v, ok
}

// Drill runs a restore drill on a destination (see restore.Drill): its
// newest backup chain is restored into a scratch directory under the data
// dir's restore-tmp, opened with the recovery passphrase,
// checked and removed. The result goes into the destination's catalog (when
// this node's timeline writes there) and into status and metrics. A failed
// drill is a result (Result FAILED), not an error. System administrators.
func (s *Backups) Drill(ctx context.Context, destination string) (backup.Drill, error) {
	note(ctx, "destination:"+destination)
	if _, err := requireRole(ctx, RoleSystemAdmin, "running a restore drill"); err != nil {
		return backup.Drill{}, err
	}
	if err := s.checkOpen(); err != nil {
		return backup.Drill{}, err
	}
	t, err := backupHost{s}.OpenTarget(ctx, destination)
	if err != nil {
		return backup.Drill{}, err
	}
	defer t.Dest.Close()
	if len(t.Encryption.Passphrase) == 0 {
		return backup.Drill{}, fmt.Errorf("%w: backups on %s are encrypted to age recipients; the server has no identity to read them (drill offline: coffer restore into a scratch dir)", ErrConflict, destination)
	}
	work := datadir.RestoreTmpDir(s.cfg.DataDir) // what a crash leaves there goes at the next start
	if err := fsutil.EnsureDir(work); err != nil {
		return backup.Drill{}, err
	}
	res, err := restore.Drill(ctx, t.Dest, restore.DrillOptions{Passphrase: t.Encryption.Passphrase, Work: work, KDF: s.cfg.KDF, Node: s.nodeID, Now: s.now, Destination: destination})
	switch {
	case errors.Is(err, restore.ErrNoChain):
		return backup.Drill{}, fmt.Errorf("%w: %v", ErrNotFound, err)
	case errors.Is(err, restore.ErrChainPruned):
		s.log.Warn("restore drill not run", "destination", destination, "reason", err)
		return backup.Drill{}, fmt.Errorf("%w: %v; run the drill again", ErrConflict, err)
	case err != nil:
		return backup.Drill{}, destErr(err)
	}
	s.log.Info("restore drill", "destination", destination, "result", res.Result, "reason", res.Reason, "full", res.Full,
		"index", res.Index, "seconds", res.Duration, "records_per_second", res.RecordsPerSecond, "bytes_per_second", res.BytesPerSecond)
	cat, err := t.LoadCatalog(ctx)
	if err != nil {
		return res, err
	}
	// Only the timeline that writes to the destination records results in
	// its catalog (as verifications do).
	w := cat.WriterTimeline()
	if s.heldErr(destination) == nil && (w == 0 || w == s.st.Timeline().ID) {
		save := func() error {
			c, err := t.LoadCatalog(ctx)
			if err != nil {
				return err
			}
			c.AddDrill(res)
			if err := backup.SaveCatalog(ctx, t.Dest, c); err != nil {
				return err
			}
			s.drills.set(destination, c) // under the catalog's lock, as a rebuild sets it
			return nil
		}
		s.mu.RLock()
		m := s.backups
		s.mu.RUnlock()
		if m != nil {
			err = m.Exclusive(save)
		} else {
			err = save()
		}
		if err != nil {
			return res, fmt.Errorf("record the drill in the catalog of %s: %w", destination, err)
		}
	} else {
		cat.AddDrill(res)
		s.drills.set(destination, cat)
	}
	return res, nil
}

// drillSchedule runs a schedule of kind verify: a drill on its destination.
func (s *Backups) drillSchedule(ctx context.Context, destination string) (backup.Drill, error) {
	return s.Drill(WithIdentity(ctx, LocalRoot()), destination)
}

// loadDrills reads every destination's catalog, so that status, metrics
// and the drill alert know the drills run before this node led. It runs at
// each gain of leadership: what this node knew from an earlier one is
// replaced (another leader may have drilled or verified since).
func (s *Backups) loadDrills(ctx context.Context) {
	ds, err := s.st.Destinations()
	if err != nil {
		return
	}
	for _, d := range ds {
		if ctx.Err() != nil {
			return
		}
		since := s.drills.version(d.Name)
		t, err := backupHost{s}.OpenTarget(ctx, d.Name)
		if err != nil {
			s.log.Debug("read drill results", "destination", d.Name, "error", err)
			continue
		}
		cat, err := t.LoadCatalog(ctx)
		t.Dest.Close() // #nosec G104 -- the catalog was only read: closing the destination cannot lose anything
		if err != nil {
			s.log.Debug("read drill results", "destination", d.Name, "error", err)
			continue
		}
		s.drills.setSince(d.Name, cat, since)
	}
}

// drillAlert: the destination holds backups (the first finished at
// firstBackup) and no drill succeeded within maxAge. Nil when the
// destination's drills are not known here.
func drillAlert(name string, v DrillView, known bool, firstBackup *time.Time, maxAge time.Duration, now time.Time) *Alert {
	if !known || maxAge <= 0 || firstBackup == nil {
		return nil
	}
	if v.LastGood != nil && now.Sub(v.LastGood.Time) <= maxAge {
		return nil
	}
	if v.LastGood == nil && now.Sub(*firstBackup) <= maxAge {
		return nil // backups younger than the allowed age: the first drill is not due yet
	}
	msg := fmt.Sprintf("no restore drill of destination %s succeeded within %s", name, maxAge)
	if v.LastGood != nil {
		msg += fmt.Sprintf(" (last success %s)", v.LastGood.Time.UTC().Format(time.RFC3339))
	}
	if v.Last != nil && !v.Last.OK() {
		msg += "; the last drill FAILED: " + v.Last.Reason
	}
	a := newAlert(AlertDrillStale, "backup", msg+": run coffer backup drill --destination "+name, now)
	return &a
}
