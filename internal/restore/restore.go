package restore

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/coffer-kms/coffer/internal/backup"
	"github.com/coffer-kms/coffer/internal/backup/bundle"
	"github.com/coffer-kms/coffer/internal/backup/dest"
	"github.com/coffer-kms/coffer/internal/barrier"
	"github.com/coffer-kms/coffer/internal/cluster"
	"github.com/coffer-kms/coffer/internal/datadir"
	"github.com/coffer-kms/coffer/internal/fsutil"
	"github.com/coffer-kms/coffer/internal/journal"
	"github.com/coffer-kms/coffer/internal/keystore"
	"github.com/coffer-kms/coffer/internal/state"
	"github.com/coffer-kms/coffer/internal/tlsutil"
)

// Options of one restore.
type Options struct {
	// From is the destination holding the backups.
	From dest.Destination
	// Journals are extra raw journal directories to replay from after the
	// archived segments, e.g. the synchronous mirror (<dir>/mirror/<cluster>).
	Journals []string
	// Keys are tried in turn on every backup file: the recovery passphrases
	// (old and new, for a chain that spans a change) and age identities.
	Keys []bundle.Decryption
	// DataDir is the directory to restore into: missing or empty (or moved
	// aside first when Force is set).
	DataDir string
	Force   bool
	// Lock, if set, locks the data dir for the restore's duration (so no
	// server starts on it meanwhile) and fails if a server holds it.
	Lock func(dir string) (io.Closer, error)
	// Target, Timeline (0: the newest) and BackupID (a full to start from;
	// "": the newest before the target).
	Target   Target
	Timeline uint32
	BackupID string
	// History is the ancestry of Timeline when the caller knows it (a
	// running node restoring one object): used if no backup of Timeline
	// reached the destination yet.
	History []state.TimelineBranch
	// Files, if set, limits the restore to these backup files (verification
	// of one backup and the full it builds on).
	Files []string
	// Passphrase of the restored node's new keystore, and its KDF.
	Passphrase []byte
	KDF        keystore.KDFParams
	// JournalName is the segment name prefix of the new journal ("coffer").
	JournalName string
	// TakeOver: the restore is the real recovery. The restored node's
	// first start claims every backup destination for the new timeline
	// and takes a full backup to each. Without it the node starts with
	// every destination's backups held (a rehearsal must not take over
	// the backup chain of the server it copies) until an operator
	// releases them.
	TakeOver bool
	// Scratch: the restored data dir is a scratch copy that is checked and
	// removed (a drill). Its timeline (one more than any the destination
	// knows of) is not recorded on the destination, which the restore
	// then only reads.
	Scratch bool
	// Progress, if set, is told what happens.
	Progress func(Event)
	// Now is the clock (nil: time.Now).
	Now func() time.Time
	// Inspect, if set, gets the restored state (and a barrier holding its
	// data keys) once the target is reached, instead of a data dir being
	// finished: no keystore, raft directory or timeline is made, and
	// Passphrase is not needed. Object-level restore reads one object so.
	Inspect func(st *state.Store, bar *barrier.Barrier) error
}

// Event is one step of a restore, for progress display.
type Event struct {
	Phase  string // "catalog", "download", "replay", "finish"
	File   string
	Bytes  int64 // downloaded so far in this file
	Total  int64 // this file's size
	Index  uint64
	Target uint64 // 0 if unknown
	Note   string
}

// Summary is what a restore reached.
type Summary struct {
	ClusterID   string         `json:"cluster_id"`
	Full        string         `json:"full_backup"`
	Files       []string       `json:"files"`
	Journals    []string       `json:"journals,omitempty"`
	Records     int            `json:"records_replayed"`
	Index       uint64         `json:"index"`
	Time        time.Time      `json:"time"` // time of the last record applied (or of the full)
	Objects     int            `json:"objects"`
	Digest      string         `json:"state_digest"`
	Timeline    state.Timeline `json:"timeline"`
	FromTL      uint32         `json:"from_timeline"`
	Generations []uint32       `json:"master_key_generations"`
	MovedAside  string         `json:"moved_aside,omitempty"`
	Skipped     []string       `json:"skipped_files,omitempty"`
	Rebuilt     bool           `json:"catalog_rebuilt,omitempty"`
}

// run is one restore's working state.
type run struct {
	ctx      context.Context
	opts     Options
	cat      backup.Catalog
	lin      lineage
	staging  string
	st       *state.Store
	bar      *barrier.Barrier
	rings    []*keystore.Keyring
	ring     *keystore.Keyring
	term     uint64
	sum      Summary
	created  bool      // the restore made the data dir (or moved the old one aside)
	keysRead []string  // backup files whose master keys were read
	missing  []string  // files the catalog lists that are gone
	lastT    time.Time // time of the last record applied (or of the full)
	stopped  bool      // the target was met exactly
	pending  []journal.Record
	pipe     replayPipe // replay.go
	digest   *digestJob // the digest of the state, running or done
	flushed  *flusher   // the state file loaded from the full, on its way to disk
	check    *fullCheck // what the loaded full's digest must match, until checked
}

// digestJob computes the digest of the restored state in the background:
// reading and hashing the whole state overlaps with the work that follows
// (the raft snapshot copy above all). Only digest-neutral writes (Rebase)
// may happen to the state while it runs.
type digestJob struct {
	index   uint64 // the applied index the digest is of
	done    chan struct{}
	digest  string
	objects int
	err     error
}

func (r *run) startDigest() *digestJob {
	st := r.st
	j := &digestJob{index: st.AppliedIndex(), done: make(chan struct{})}
	go func() {
		defer close(j.done)
		_, j.digest, j.objects, j.err = st.Digest()
	}()
	return j
}

func (j *digestJob) wait() {
	if j != nil {
		<-j.done
	}
}

// fullCheck is what the state loaded from a full backup must hold.
type fullCheck struct {
	file string
	want *backup.StateDigest // nil: the backup carries no digest
}

// verifyFull waits for the digest of the state loaded from the full backup
// and compares it with the one the backup recorded. It runs before records
// are replayed onto the state and before the data dir is finished.
func (r *run) verifyFull() error {
	c := r.check
	if c == nil {
		return nil
	}
	j := r.digest
	j.wait()
	if j.err != nil {
		return fmt.Errorf("backup %s: read state: %w", c.file, j.err)
	}
	if d := c.want; d != nil && (d.Digest != j.digest || d.Objects != j.objects || d.Index != j.index) {
		return fmt.Errorf("backup %s: the state holds %d objects at index %d with digest %s; the backup recorded %d objects at %d with digest %s",
			c.file, j.objects, j.index, j.digest, d.Objects, d.Index, d.Digest)
	}
	r.check = nil
	r.sum.Objects = j.objects
	return nil
}

// Run restores into opts.DataDir and returns what it reached. On error the
// data dir is left without a keystore, so no server can start on a partial
// restore; run again (with Force) after fixing the cause.
func Run(ctx context.Context, opts Options) (sum Summary, err error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.JournalName == "" {
		opts.JournalName = "coffer"
	}
	if len(opts.Keys) == 0 {
		return sum, errors.New("restore: no recovery passphrase or age identity given")
	}
	if opts.Inspect == nil {
		if err := keystore.CheckPassphrase(opts.Passphrase); err != nil {
			return sum, fmt.Errorf("restore: the restored node's keystore passphrase: %w", err)
		}
	}
	r := &run{ctx: ctx, opts: opts, bar: barrier.New()}
	defer r.cleanup()
	// Everything that can be checked without writing comes first: the
	// data dir, the catalog, the chain to start from. Only then is a
	// non-empty dir moved aside.
	if err := r.checkDir(); err != nil {
		return r.sum, err
	}
	if err := r.loadCatalog(ctx); err != nil {
		return r.sum, err
	}
	tl := opts.Timeline
	if tl == 0 {
		if tl, err = chooseTimeline(r.cat); err != nil {
			return r.sum, err
		}
	}
	if r.lin, err = lineageOf(r.cat, tl, opts.History); err != nil {
		return r.sum, err
	}
	r.sum.FromTL = tl
	target := opts.Target
	full, err := chooseFull(r.cat, r.lin, target, opts.BackupID)
	if err != nil {
		return r.sum, err
	}
	if err := r.prepareDir(); err != nil {
		return r.sum, err
	}
	// A failed restore leaves the data dir as it found it: nothing half
	// restored that a server could start on, the old dir back in place.
	defer func() {
		if err != nil {
			r.undo()
		}
	}()
	if opts.Lock != nil {
		l, err := opts.Lock(opts.DataDir)
		if err != nil {
			return r.sum, fmt.Errorf("%w: %v", ErrTargetDir, err)
		}
		defer l.Close()
	}
	r.staging = filepath.Join(opts.DataDir, ".restore")
	if err := fsutil.EnsureDir(r.staging); err != nil {
		return r.sum, err
	}
	// A restore point older than the chosen full is already inside it:
	// start again from a full before it.
	for range 3 {
		if err := r.loadFull(ctx, full); err != nil {
			return r.sum, err
		}
		if target.Point == "" {
			break
		}
		rp, ok := r.restorePoint(target.Point)
		if !ok || rp.Index >= full.LastIndex {
			if ok && rp.Index == full.LastIndex {
				r.stopped = true
			}
			break
		}
		earlier, err := chooseFull(r.cat, r.lin, Target{Index: rp.Index}, "")
		if err != nil {
			return r.sum, fmt.Errorf("restore point %q is at index %d, inside full backup %s; no earlier full backup to replay to it from: %w", target.Point, rp.Index, full.ID, err)
		}
		if err := r.resetState(); err != nil {
			return r.sum, err
		}
		full = earlier
		target = Target{Index: rp.Index, Point: target.Point}
	}
	r.sum.Full = full.ID
	if !r.stopped && !(target.Index != 0 && r.st.AppliedIndex() >= target.Index) {
		if err := r.verifyFull(); err != nil {
			return r.sum, err
		}
		if err := r.replay(ctx, full, target); err != nil {
			return r.sum, err
		}
	}
	if err := r.checkReached(target); err != nil {
		return r.sum, err
	}
	if opts.Inspect != nil {
		if err := r.verifyFull(); err != nil {
			return r.sum, err
		}
		if err := r.flush(); err != nil {
			return r.sum, err
		}
		if err := r.unseal(); err != nil {
			return r.sum, err
		}
		r.sum.Index = r.st.AppliedIndex()
		r.sum.Time = r.lastT
		return r.sum, opts.Inspect(r.st, r.bar)
	}
	if err := r.finish(ctx); err != nil {
		return r.sum, err
	}
	return r.sum, nil
}

func (r *run) event(e Event) {
	if r.opts.Progress != nil {
		r.opts.Progress(e)
	}
}

func (r *run) cleanup() {
	r.pending = nil
	r.wait() // #nosec G104 -- a batch still in flight is waited for only to stop it before the store closes
	r.digest.wait()
	r.flushed.wait() // #nosec G104 -- waited for only to stop it: the restore did not finish
	if r.st != nil {
		r.st.Close() // #nosec G104 -- reached only when the restore did not finish (finish closes it, checked): the state is given up
	}
	r.bar.Drop()
	for _, k := range r.rings {
		k.Wipe()
	}
	if r.ring != nil {
		r.ring.Wipe()
	}
	if r.staging != "" {
		r.removeAll(r.staging)
	}
}

// removeAll removes dir, scratch space or what a failed restore wrote; one
// that stays is reported (it holds copies of backup contents, or a half
// restored data dir).
func (r *run) removeAll(dir string) {
	if err := os.RemoveAll(dir); err != nil {
		r.event(Event{Phase: "cleanup", Note: fmt.Sprintf("remove it by hand: %v", err)})
	}
}

// checkDir makes sure the data dir can be restored into: new, empty, or
// (with Force) not used by a running server. It changes nothing.
func (r *run) checkDir() error {
	dir, err := filepath.Abs(r.opts.DataDir)
	if err != nil {
		return err
	}
	r.opts.DataDir = dir
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%w: %v", ErrTargetDir, err)
	}
	if len(ents) == 0 {
		return nil
	}
	if r.opts.Lock != nil {
		// A running server holds the lock: never touch its dir.
		l, err := r.opts.Lock(dir)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrTargetDir, err)
		}
		l.Close() // #nosec G104 -- a probe of the lock: the lock file holds no data
	}
	if !r.opts.Force {
		return fmt.Errorf("%w: %s is not empty; restore into a new directory, or add --force to move it aside first", ErrTargetDir, dir)
	}
	// What the restore reads must not move aside with the dir: it would
	// vanish from under the restore, which then reports it missing.
	if p, ok := strings.CutPrefix(r.opts.From.Location(), "dir:"); ok && within(p, dir) {
		return fmt.Errorf("%w: the backups at %s are inside %s, which --force moves aside before reading them: copy them out of it first and restore from the copy", ErrTargetDir, p, dir)
	}
	for _, j := range r.opts.Journals {
		if within(j, dir) {
			return fmt.Errorf("%w: the journal %s is inside %s, which --force moves aside before reading it: copy it out of it first and give the copy to --journal", ErrTargetDir, j, dir)
		}
	}
	return nil
}

// within reports whether path is dir or inside it (symbolic links
// resolved where they can be).
func within(path, dir string) bool {
	resolve := func(p string) string {
		if a, err := filepath.Abs(p); err == nil {
			p = a
		}
		if e, err := filepath.EvalSymlinks(p); err == nil {
			p = e
		}
		return p
	}
	rel, err := filepath.Rel(resolve(dir), resolve(path))
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// prepareDir moves a non-empty data dir aside (checkDir allowed it) and
// makes sure the dir exists, private.
func (r *run) prepareDir() error {
	dir := r.opts.DataDir
	ents, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		r.created = true
	case err != nil:
		return fmt.Errorf("%w: %v", ErrTargetDir, err)
	case len(ents) > 0:
		aside := fmt.Sprintf("%s.before-restore-%s", dir, r.opts.Now().UTC().Format("20060102T150405Z"))
		if err := os.Rename(dir, aside); err != nil {
			return fmt.Errorf("%w: move %s aside: %v", ErrTargetDir, dir, err)
		}
		r.sum.MovedAside = aside
		r.created = true
	}
	if err := fsutil.EnsureDir(dir); err != nil {
		return err
	}
	return os.Chmod(dir, 0o700) // #nosec G302 -- a directory: 0700 (owner only; x is needed to enter it)
}

// undo removes what a failed restore wrote and puts a moved-aside dir back.
func (r *run) undo() {
	r.pending = nil
	r.wait() // #nosec G104 -- a batch still in flight is waited for only to stop it before the store closes
	r.digest.wait()
	r.flushed.wait() // #nosec G104 -- waited for only to stop it: what it wrote is removed below
	if r.st != nil {
		r.st.Close() // #nosec G104 -- a failed restore's state, removed below
		r.st = nil
	}
	dir := r.opts.DataDir
	if r.created {
		r.removeAll(dir)
	} else if ents, err := os.ReadDir(dir); err == nil {
		for _, e := range ents {
			r.removeAll(filepath.Join(dir, e.Name()))
		}
	}
	if r.sum.MovedAside != "" {
		if err := os.Rename(r.sum.MovedAside, dir); err == nil {
			r.sum.MovedAside = ""
		}
	}
	r.staging = ""
}

func (r *run) loadCatalog(ctx context.Context) error {
	d := r.opts.From
	r.event(Event{Phase: "catalog", Note: d.Location()})
	cat, err := backup.LoadCatalog(ctx, d)
	if err != nil && !errors.Is(err, backup.ErrCatalogCorrupt) {
		return err
	}
	if err != nil || cat.ClusterID == "" {
		note := "no catalog"
		if err != nil {
			note = "catalog damaged"
		}
		r.event(Event{Phase: "catalog", Note: note + ": reading every backup's manifest instead"})
		cat, r.sum.Skipped, err = backup.Scan(ctx, d)
		if err != nil {
			return err
		}
		r.sum.Rebuilt = true
	}
	if len(r.opts.Files) > 0 {
		cat.Entries = slices.DeleteFunc(cat.Entries, func(e backup.Entry) bool { return !slices.Contains(r.opts.Files, e.File) })
	}
	if len(cat.Entries) == 0 {
		return fmt.Errorf("%w: %s holds no backup", ErrNoBackup, d.Location())
	}
	r.cat = cat
	r.sum.ClusterID = cat.ClusterID
	return nil
}

func (r *run) dl(file string, total int64) func(int64) {
	var n int64
	return func(d int64) {
		n += d
		r.event(Event{Phase: "download", File: file, Bytes: n, Total: total})
	}
}

// loadFull stages the full's state as the restored state.
func (r *run) loadFull(ctx context.Context, full backup.Entry) error {
	if err := r.resetState(); err != nil {
		return err
	}
	p, err := fetch(ctx, r.opts.From, full, r.opts.Keys, filepath.Join(r.staging, "full"), r.dl(full.File, full.Size))
	if err != nil {
		return err
	}
	defer p.wipe()
	var ci backup.ClusterInfo
	if err := json.Unmarshal(p.cluster, &ci); err != nil {
		return fmt.Errorf("backup %s: %s: %w", full.File, backup.EntryCluster, err)
	}
	if ci.ClusterID != r.cat.ClusterID || ci.Point.Index != full.LastIndex {
		return fmt.Errorf("backup %s: holds cluster %s at index %d, the catalog says cluster %s at %d", full.File, ci.ClusterID, ci.Point.Index, r.cat.ClusterID, full.LastIndex)
	}
	path := datadir.StatePath(r.opts.DataDir)
	if err := os.Rename(p.state, path); err != nil {
		return err
	}
	r.flushed, p.flushed = p.flushed, nil
	st, err := state.Open(path, state.Options{NoSync: true}) // fsynced once, in finish
	if err != nil {
		return fmt.Errorf("backup %s: state: %w", full.File, err)
	}
	r.st = st
	idx := st.AppliedIndex()
	if idx != full.LastIndex {
		return fmt.Errorf("backup %s: state is at index %d, its manifest says %d", full.File, idx, full.LastIndex)
	}
	// The digest is compared in the background (verifyFull): before any
	// record is replayed onto the state, and before the data dir is
	// finished.
	r.digest = r.startDigest()
	r.check = &fullCheck{file: full.File, want: p.digest}
	r.rings = append(r.rings, p.keys)
	r.keysRead = append(r.keysRead, full.File)
	p.keys = nil
	// The CA certificate; its key only from a backup that carries it as
	// a file (older ones, or a configured CA): otherwise it is in the
	// restored state, sealed, and the server certificate is signed with
	// it when the keystore first opens.
	if len(p.caCert) > 0 {
		dir := datadir.TLSDir(r.opts.DataDir)
		if err := fsutil.EnsureDir(dir); err != nil {
			return err
		}
		if err := fsutil.WriteFile(filepath.Join(dir, tlsutil.CAFile), p.caCert); err != nil {
			return err
		}
		if len(p.caKey) > 0 {
			if err := fsutil.WriteFile(filepath.Join(dir, tlsutil.CAKey), p.caKey); err != nil {
				return err
			}
		}
	}
	r.term = max(ci.Point.Term, 1)
	r.lastT = lastTime(full)
	r.sum.Files = append(r.sum.Files, full.File)
	r.event(Event{Phase: "replay", Index: idx, Note: "full backup " + full.ID + " loaded"})
	return r.unseal()
}

func (r *run) resetState() error {
	var errs []error
	r.digest.wait()
	r.flushed.wait() // #nosec G104 -- waited for only to stop it: the state is removed below
	r.digest, r.check, r.flushed = nil, nil, nil
	if r.st != nil {
		r.st.Close() // #nosec G104 -- the staged state is given up and removed below
		r.st = nil
		if err := os.Remove(datadir.StatePath(r.opts.DataDir)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := os.RemoveAll(datadir.TLSDir(r.opts.DataDir)); err != nil {
		errs = append(errs, err)
	}
	r.bar.Drop()
	// Master keys of the full given up (possibly a later generation made
	// after the target) must not end up current in the restored keystore.
	for _, k := range r.rings {
		k.Wipe()
	}
	r.rings, r.keysRead = nil, nil
	r.sum.Files, r.sum.Records = nil, 0
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("give up the staged full backup: %w", err)
	}
	return nil
}

// unseal (re)loads the data keys of the state into the barrier, with every
// master key generation read so far. A data key wrapped by a generation no
// backup read so far carries (a master key rotation after the last full or
// incremental) makes it read later fulls and incrementals for their keys.
func (r *run) unseal() error {
	keys, current, err := r.st.DEKs()
	if err != nil {
		return err
	}
	if len(r.missingGens(keys)) > 0 {
		if err := r.findKeys(keys); err != nil {
			return err
		}
	}
	if r.ring != nil {
		r.ring.Wipe()
	}
	ring, err := keystore.Merge(r.rings...)
	if err != nil {
		return err
	}
	r.ring = ring
	have := map[uint32]bool{}
	for _, g := range ring.Generations() {
		have[g.Number] = true
	}
	var usable []barrier.WrappedKey
	cur := uint32(0)
	for _, k := range keys {
		if have[k.MEKGen] {
			usable = append(usable, k)
			if k.ID == current {
				cur = current
			}
		}
	}
	if r.bar.Sealed() {
		return r.bar.Unseal(ring, usable, cur)
	}
	// Data keys wrapped by a generation not read yet (a master key rotation
	// after the last full or incremental) stay loaded as they were
	// unwrapped before; new ones are added.
	r.bar.SetKeyring(ring)
	for _, k := range usable {
		if err := r.bar.Install(k, false); err != nil {
			return err
		}
	}
	return nil
}

func (r *run) restorePoint(name string) (state.RestorePoint, bool) {
	rps, err := r.st.RestorePoints()
	if err != nil {
		return state.RestorePoint{}, false
	}
	for _, rp := range rps {
		if rp.Name == name {
			return rp, true
		}
	}
	return state.RestorePoint{}, false
}

// newID is a fresh node id, the form the service uses.
func newID() string {
	b := make([]byte, 6)
	rand.Read(b)
	return "node-" + hex.EncodeToString(b)
}

// finish: new timeline, keystore, journal, raft dir, node id.
func (r *run) finish(ctx context.Context) error {
	if err := r.flush(); err != nil {
		return err
	}
	index := r.st.AppliedIndex()
	if err := r.unseal(); err != nil { // the keystore must open every data key
		return err
	}
	at := r.opts.Now().UTC()
	info := &state.RestoreInfo{From: r.opts.From.Location(), Target: r.opts.Target.String(), Index: index, Time: r.lastT, At: at, Held: true}
	if r.opts.TakeOver {
		info.Released, info.TakeOver = &at, true
	}
	tl := state.Timeline{ID: r.newTimelineID(ctx), History: r.lin.history(index), Restored: info}
	nodeID := newID()
	// Rebase writes only what the digest leaves out (the term, the
	// timeline, the raft configuration): a digest of the loaded full, still
	// running or done, is the digest of the restored state if no record was
	// replayed since. The configuration is the one raft is seeded with: the
	// node's first start writes its raft snapshot with it.
	if err := r.st.Rebase(r.term, tl, index, cluster.SeedConfiguration(nodeID)); err != nil {
		return fmt.Errorf("record the new timeline: %w", err)
	}
	if r.digest == nil || r.digest.index != index {
		r.digest.wait()
		r.digest = r.startDigest()
	}
	r.event(Event{Phase: "finish", Index: index, Note: "writing keystore, journal and raft directory"})
	// The raft directory is seeded while the digest is computed and the
	// state is written back to disk; the state is not written any more.
	if err := r.seed(nodeID, index, tl); err != nil {
		return err
	}
	if err := r.verifyFull(); err != nil {
		return err
	}
	j := r.digest
	j.wait()
	if j.err != nil {
		return fmt.Errorf("digest of the restored state: %w", j.err)
	}
	if err := r.flushed.wait(); err != nil {
		return fmt.Errorf("write the restored state to disk: %w", err)
	}
	if err := r.st.Sync(); err != nil {
		return fmt.Errorf("fsync the restored state: %w", err)
	}
	if !r.opts.Scratch {
		r.reserveTimeline(ctx, tl)
	}
	r.sum.Index, r.sum.Time, r.sum.Digest, r.sum.Objects, r.sum.Timeline = index, r.lastT, j.digest, j.objects, tl
	for _, g := range r.ring.Generations() {
		r.sum.Generations = append(r.sum.Generations, g.Number)
	}
	if err := r.st.Close(); err != nil {
		return err
	}
	r.st = nil
	// The keystore last: without it no server starts on the data dir, so an
	// interrupted restore is never mistaken for a usable one.
	ks := keystore.New(datadir.KeystoreDir(r.opts.DataDir), keystore.Options{KDF: r.opts.KDF})
	k, err := ks.InitFrom(r.opts.Passphrase, r.ring)
	if k != nil {
		k.Wipe() // also with ErrNotDurable, which is reported as a failure
	}
	if err != nil {
		return fmt.Errorf("create the keystore: %w", err)
	}
	r.removeAll(r.staging)
	return fsutil.SyncDir(r.opts.DataDir)
}

// seed writes the node id, the new journal and its timeline, and the raft
// directory starting at index. Raft's snapshot of the state is not copied
// here: the node writes it at its first start (cluster.Seed).
func (r *run) seed(nodeID string, index uint64, tl state.Timeline) error {
	dir := r.opts.DataDir
	if err := fsutil.WriteFile(datadir.NodeIDPath(dir), []byte(nodeID+"\n")); err != nil {
		return err
	}
	jr, err := journal.Open(journal.Options{Dir: datadir.JournalDir(dir), Name: r.opts.JournalName, StartAfter: index})
	if err != nil {
		return fmt.Errorf("create the journal: %w", err)
	}
	if err := jr.Close(); err != nil {
		return err
	}
	if err := state.WriteTimelineFile(datadir.JournalDir(dir), tl); err != nil {
		return err
	}
	return cluster.Seed(datadir.RaftDir(dir), nodeID, index, r.term)
}

// missingGens lists master key generations keys need that no backup read
// so far carries.
func (r *run) missingGens(keys []barrier.WrappedKey) []uint32 {
	have := map[uint32]bool{}
	for _, k := range r.rings {
		for _, g := range k.Generations() {
			have[g.Number] = true
		}
	}
	var out []uint32
	for _, k := range keys {
		if !have[k.MEKGen] && !slices.Contains(out, k.MEKGen) {
			out = append(out, k.MEKGen)
		}
	}
	return out
}

// findKeys reads the master keys of the other fulls and incrementals,
// newest first, until keys can all be unwrapped.
func (r *run) findKeys(keys []barrier.WrappedKey) error {
	var later []backup.Entry
	for _, e := range r.cat.Entries {
		if _, _, onLineage := r.lin.span(e.TimelineID()); !onLineage {
			continue // another history's keys
		}
		if (e.Kind == backup.KindFull || e.Kind == backup.KindIncremental || e.Kind == backup.KindDump) && !slices.Contains(r.keysRead, e.File) {
			later = append(later, e)
		}
	}
	slices.SortFunc(later, func(a, b backup.Entry) int { return b.Created.Compare(a.Created) })
	for _, e := range later {
		r.keysRead = append(r.keysRead, e.File)
		dir := filepath.Join(r.staging, "keys")
		p, err := fetch(r.ctx, r.opts.From, e, r.opts.Keys, dir, r.dl(e.File, e.Size))
		r.removeAll(dir)
		if err != nil {
			r.event(Event{Phase: "keys", Note: fmt.Sprintf("%s: %v", e.File, err)})
			continue
		}
		if p.keys != nil {
			r.rings = append(r.rings, p.keys)
			p.keys = nil
		}
		p.wipe()
		if len(r.missingGens(keys)) == 0 {
			return nil
		}
	}
	return fmt.Errorf("the restored state has data keys wrapped by master key generation(s) %v, which no readable backup on %s carries (a full or incremental backup taken after the master key rotation has them)",
		r.missingGens(keys), r.opts.From.Location())
}

// TimelinesDir on a destination holds one small file per timeline a
// restore started, so that two restores from the same backups never pick
// the same timeline id (as PostgreSQL's .history files in its archive).
const TimelinesDir = "timelines"

// newTimelineID is one more than any timeline the destination knows of.
func (r *run) newTimelineID(ctx context.Context) uint32 {
	var newest uint32 = 1
	for _, e := range r.cat.Entries {
		newest = max(newest, e.TimelineID())
	}
	err := r.opts.From.List(ctx, TimelinesDir+"/", func(fi dest.FileInfo) error {
		base := strings.TrimSuffix(path.Base(fi.Name), ".json")
		if n, err := strconv.ParseUint(base, 10, 32); err == nil {
			newest = max(newest, uint32(n))
		}
		return nil
	})
	if err != nil {
		r.event(Event{Phase: "finish", Note: fmt.Sprintf("could not list the timelines other restores recorded on %s (%v): timeline %d may repeat one of theirs; restore again from these backups only into one node", r.opts.From.Location(), err, newest+1)})
	}
	return newest + 1
}

// reserveTimeline records the new timeline on the destination. A
// destination that cannot be written (read-only credentials) only loses
// the protection against a second restore picking the same id.
func (r *run) reserveTimeline(ctx context.Context, tl state.Timeline) {
	b, _ := json.MarshalIndent(tl, "", "  ")
	name := fmt.Sprintf("%s/%d.json", TimelinesDir, tl.ID)
	if err := r.opts.From.Save(ctx, name, bytes.NewReader(b), int64(len(b))); err != nil {
		r.event(Event{Phase: "finish", Note: fmt.Sprintf("could not record timeline %d on %s (%v): restore again from these backups only into one node", tl.ID, r.opts.From.Location(), err)})
	}
}
