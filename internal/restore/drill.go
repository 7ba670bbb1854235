package restore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/coffer-kms/coffer/internal/backup"
	"github.com/coffer-kms/coffer/internal/backup/bundle"
	"github.com/coffer-kms/coffer/internal/backup/dest"
	"github.com/coffer-kms/coffer/internal/barrier"
	"github.com/coffer-kms/coffer/internal/datadir"
	"github.com/coffer-kms/coffer/internal/journal"
	"github.com/coffer-kms/coffer/internal/keystore"
	"github.com/coffer-kms/coffer/internal/state"
)

// DrillOptions of one restore drill.
type DrillOptions struct {
	// Passphrase is the recovery passphrase: it decrypts the backups and
	// becomes the scratch node's keystore passphrase, as coffer restore
	// does when no other is given.
	Passphrase []byte
	// Work is the directory the scratch data dir is made in (removed
	// after); "" means os.TempDir().
	Work string
	// KDF of the scratch keystore (zero: the keystore's default).
	KDF keystore.KDFParams
	// Node names the node that ran the drill, for the record.
	Node string
	// Destination is d's configured name, for the messages ("" if unknown).
	Destination string
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

// ErrNoChain: the destination holds no full backup to drill on.
var ErrNoChain = errors.New("no full backup to drill on")

// Drill restores the newest backup chain of d (its newest full, the
// incrementals on it and the archived segments after it) into a scratch
// data dir, offline, then opens it as a server would: the keystore with the
// passphrase, the state with the data keys it unwraps. It checks that the
// state replayed to the newest archived record, that the state digest read
// back from disk is the one the restore computed (the full's own digest was
// checked when it was loaded), the integrity of every object and secret,
// and the new journal. The scratch dir is removed after. The result
// (OK or FAILED with the reason) carries the duration and measured speed;
// the error is non-nil only when there was nothing to drill on, the
// catalog could not be read, or retention removed the chain twice while it
// was drilled (ErrChainPruned: once, the drill runs again on the newest
// chain).
func Drill(ctx context.Context, d dest.Destination, opts DrillOptions) (backup.Drill, error) {
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	for try := 0; ; try++ {
		cat, err := backup.LoadNamedCatalog(ctx, d, opts.Destination)
		if err != nil {
			return backup.Drill{}, err
		}
		full, chain, ok := cat.NewestChain(0)
		if !ok {
			return backup.Drill{}, fmt.Errorf("%w on %s", ErrNoChain, d.Location())
		}
		res := drillChain(ctx, d, opts, now, cat, full, chain)
		if res.OK() || ctx.Err() != nil {
			return res, nil
		}
		// Retention may have removed the chain while it was restored (a
		// full finished meanwhile): that is no failure of the backups. The
		// drill runs once more on the newest chain.
		after, err := backup.LoadNamedCatalog(ctx, d, opts.Destination)
		if err != nil || !pruned(append([]backup.Entry{full}, chain...), after) {
			return res, nil
		}
		if try > 0 {
			return backup.Drill{}, fmt.Errorf("%w: retention removed the backup chain of %s twice while it was drilled (%s)", ErrChainPruned, full.ID, res.Reason)
		}
	}
}

// ErrChainPruned: the chain a drill restored was removed from the
// destination (by retention) while the drill ran; the drill was not run to
// its end and no result is recorded.
var ErrChainPruned = errors.New("drill not run")

// pruned reports whether a file of chain is no longer in the catalog.
func pruned(chain []backup.Entry, cat backup.Catalog) bool {
	listed := map[string]bool{}
	for _, e := range cat.Entries {
		listed[e.File] = true
	}
	for _, e := range chain {
		if !listed[e.File] {
			return true
		}
	}
	return false
}

// drillChain restores and checks one chain (its full first).
func drillChain(ctx context.Context, d dest.Destination, opts DrillOptions, now func() time.Time, cat backup.Catalog, full backup.Entry, chain []backup.Entry) backup.Drill {
	start := now()
	res := backup.Drill{Time: start.UTC(), Node: opts.Node, Full: full.ID}
	fail := func(err error) backup.Drill {
		res.Result, res.Reason = "FAILED", err.Error()
		res.Duration = now().Sub(start).Seconds()
		return res
	}
	work := opts.Work
	if work == "" {
		work = os.TempDir()
	}
	tmp, err := os.MkdirTemp(work, "drill-")
	if err != nil {
		return fail(fmt.Errorf("scratch directory: %w", err))
	}
	defer os.RemoveAll(tmp) // os.MkdirTemp made it 0700
	dir := filepath.Join(tmp, "data")
	want := backup.Reach(chain)
	sum, err := Run(ctx, Options{From: d, Keys: []bundle.Decryption{{Passphrase: opts.Passphrase}}, DataDir: dir,
		Timeline: full.TimelineID(), BackupID: full.ID, Passphrase: opts.Passphrase, KDF: opts.KDF, JournalName: "coffer", Now: now, Scratch: true})
	if err != nil {
		return fail(fmt.Errorf("restore: %w", err))
	}
	elapsed := now().Sub(start)
	size := map[string]int64{}
	for _, e := range cat.Entries {
		size[e.File] = e.Size
	}
	for _, f := range sum.Files {
		res.Bytes += size[f]
	}
	res.Files, res.Index, res.Records = len(sum.Files), sum.Index, sum.Records
	if sum.Index < want {
		return fail(fmt.Errorf("replayed to index %d, the newest archived record is %d", sum.Index, want))
	}
	if err := openRestored(dir, opts.Passphrase, sum); err != nil {
		return fail(err)
	}
	res.Result = "OK"
	res.Duration = now().Sub(start).Seconds()
	if s := elapsed.Seconds(); s > 0 {
		res.RecordsPerSecond = float64(res.Records) / s
		res.BytesPerSecond = float64(res.Bytes) / s
	}
	return res
}

// openRestored opens a restored data dir as a server would and checks it
// against what the restore reported.
func openRestored(dir string, passphrase []byte, sum Summary) error {
	ring, err := keystore.New(datadir.KeystoreDir(dir), keystore.Options{}).Open(passphrase)
	if err != nil {
		return fmt.Errorf("open the restored keystore: %w", err)
	}
	defer ring.Wipe()
	st, err := state.Open(datadir.StatePath(dir), state.Options{})
	if err != nil {
		return fmt.Errorf("open the restored state: %w", err)
	}
	defer st.Close()
	bar := barrier.New()
	keys, current, err := st.DEKs()
	if err == nil {
		err = bar.Unseal(ring, keys, current)
	}
	if err != nil {
		return fmt.Errorf("unwrap the restored data keys: %w", err)
	}
	defer bar.Drop()
	idx, digest, objects, err := st.Digest()
	if err != nil {
		return fmt.Errorf("digest of the restored state: %w", err)
	}
	if idx != sum.Index || digest != sum.Digest || objects != sum.Objects {
		return fmt.Errorf("restored state reads back as index %d, digest %s, %d objects; the restore reached index %d, digest %s, %d objects",
			idx, digest, objects, sum.Index, sum.Digest, sum.Objects)
	}
	if err := CheckState(st, bar); err != nil {
		return fmt.Errorf("integrity of the restored state: %w", err)
	}
	if _, err := journal.Verify(datadir.JournalDir(dir), nil); err != nil {
		return fmt.Errorf("journal of the restored node: %w", err)
	}
	return nil
}
