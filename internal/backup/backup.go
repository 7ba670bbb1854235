// Package backup takes Coffer's backups: full (a consistent online copy of
// the state with the master keys and the CA), cumulative incremental (the
// journal since the last full) and archived journal segments, each one
// bundle file (manifest + zstd + age) on a destination with a catalog. It
// does not import the service: the service implements Source and wires
// backups to its state, schedules and audit.
package backup

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/coffer-kms/coffer/internal/backup/bundle"
	"github.com/coffer-kms/coffer/internal/backup/dest"
	"github.com/coffer-kms/coffer/internal/fsutil"
	"github.com/coffer-kms/coffer/internal/journal"
	"github.com/coffer-kms/coffer/internal/state"
)

// Layout of a destination.
const (
	BackupsDir = "backups" // fulls and incrementals
	ArchiveDir = "archive" // archived journal segments
	FileSuffix = ".cbk"
)

// Kinds of backup files.
const (
	KindFull        = "full"
	KindIncremental = "incremental"
	KindSegment     = "segment"
	KindDump        = "dump"
)

// Names of the entries inside a payload (a tar stream).
const (
	EntryCluster = "cluster.json" // ClusterInfo
	EntryKeys    = "keys.bin"     // master key generations (keystore MEK list encoding)
	EntryState   = "state.db"     // bbolt copy
	EntryDigest  = "digest.json"  // full: Digest of the state copy, after it
	EntryCACert  = "tls/ca.crt"
	EntryCAKey   = "tls/ca.key"
	JournalDir   = "journal/" // + segment file name
)

// Source is the node a backup reads from (the service implements it).
// WriteState's callback runs inside a read transaction of the state: a
// Source's other methods are never called from it.
type Source interface {
	ClusterID() string
	NodeID() string
	// WriteState writes a consistent copy of the state (see state.Store.WriteBackup).
	WriteState(open func(p state.BackupPoint, size int64) (io.Writer, error)) (state.BackupPoint, error)
	// ExportKeys returns every master key generation; the caller clears it.
	ExportKeys() ([]byte, error)
	// CAFiles are the CA certificate and key to carry (empty if none).
	CAFiles() (cert, key string)
	// RotateJournal closes the current segment so that everything written so
	// far is in closed segments; it returns the last index.
	RotateJournal() (uint64, error)
	// JournalDir is where the segments are.
	JournalDir() string
	// Software names the build.
	Software() string
	// Timeline is the history the node is on (see state.Timeline).
	Timeline() state.Timeline
}

// Manifest extras this package writes.
const (
	ExtraTimeline = "timeline"         // decimal timeline id (absent: 1)
	ExtraHistory  = "timeline_history" // ancestry, state.Timeline.EncodeHistory
)

// ClusterInfo is the payload's description of where it came from.
type ClusterInfo struct {
	ClusterID string            `json:"cluster_id"`
	Node      string            `json:"node"`
	Point     state.BackupPoint `json:"point"`
	Software  string            `json:"software"`
	Taken     time.Time         `json:"taken"`
}

// Options of one backup run.
type Options struct {
	ID         string
	Encryption bundle.Encryption
	StagingDir string // where the bundle is written before it is saved
	Progress   func(done int64)
	Base       *Entry // incremental: the full it builds on
	Segment    *journal.SegmentInfo
	Reason     string
	// TakeOver (a full only): claim the destination for this node's
	// timeline from the timeline that wrote to it so far.
	TakeOver bool
}

// NewID returns a backup id that sorts by time: 20261121T065012Z-<8 hex>.
func NewID(now time.Time, rnd string) string {
	return now.UTC().Format("20060102T150405Z") + "-" + rnd
}

// FileName is where a backup goes on a destination.
func FileName(kind, id string) string {
	if kind == KindSegment {
		return ArchiveDir + "/" + id + FileSuffix
	}
	return BackupsDir + "/" + id + "-" + kind + FileSuffix
}

// Errors.
var (
	ErrNoBase    = errors.New("no full backup to build an incremental on")
	ErrNoJournal = errors.New("journal records needed by the incremental are gone")
)

type countingWriter struct {
	w        io.Writer
	n        int64
	progress func(int64)
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	if c.progress != nil {
		c.progress(c.n)
	}
	return n, err
}

// Run writes one backup of kind to d and records it in d's catalog. It
// stages the bundle in opts.StagingDir (removed afterwards, also on failure)
// and never leaves a partial file on d: the destination's Save is atomic.
func Run(ctx context.Context, src Source, d dest.Destination, kind string, opts Options) (Entry, error) {
	cat, err := LoadCatalog(ctx, d)
	if err != nil {
		return Entry{}, err
	}
	if err := cat.Claim(src.ClusterID(), d.Location()); err != nil {
		return Entry{}, err
	}
	if err := cat.ClaimWriter(src.Timeline().ID, opts.TakeOver && kind == KindFull, d.Location()); err != nil {
		return Entry{}, err
	}
	if err := fsutil.EnsureDir(opts.StagingDir); err != nil {
		return Entry{}, err
	}
	f, err := os.CreateTemp(opts.StagingDir, "staging-*"+FileSuffix)
	if err != nil {
		return Entry{}, fmt.Errorf("create staging file: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()

	m := bundle.Manifest{Format: 1, ID: opts.ID, Kind: kind, ClusterID: src.ClusterID(), Node: src.NodeID(),
		Created: time.Now().UTC(), Software: src.Software(), Extra: map[string]string{}}
	if opts.Reason != "" {
		m.Extra["reason"] = opts.Reason
	}
	if tl := src.Timeline(); tl.ID > 1 {
		m.Extra[ExtraTimeline] = strconv.FormatUint(uint64(tl.ID), 10)
		m.Extra[ExtraHistory] = tl.EncodeHistory()
	}
	cw := &countingWriter{w: f, progress: opts.Progress}
	if opts.Base != nil {
		m.BaseFullID = opts.Base.ID
	}
	// The bundle writer is created once the index range is known (the
	// manifest is part of the file's framing).
	var bw *bundle.Writer
	begin := func(first, last uint64, extra map[string]string) (io.Writer, error) {
		m.FirstIndex, m.LastIndex = first, last
		maps.Copy(m.Extra, extra)
		// The time range the backup covers, as far as this node knows it:
		// a full reaches up to now; an incremental starts where its full
		// ended; a segment starts when it was opened.
		m.LastTime = time.Now().UTC()
		switch {
		case opts.Base != nil:
			m.FirstTime = opts.Base.LastTime
		case opts.Segment != nil:
			m.FirstTime = opts.Segment.Created.UTC()
			if !opts.Segment.ClosedAt.IsZero() {
				// When the segment was closed, not when it was shipped:
				// archiving may run hours later.
				m.LastTime = opts.Segment.ClosedAt.UTC()
			}
		}
		var err error
		bw, err = bundle.NewWriter(cw, m, opts.Encryption)
		return bw, err
	}
	var point state.BackupPoint
	switch kind {
	case KindFull, KindDump:
		point, err = writeFull(begin, src)
	case KindIncremental:
		if opts.Base == nil {
			return Entry{}, ErrNoBase
		}
		err = writeIncremental(begin, src, opts.Base)
	case KindSegment:
		err = writeSegment(begin, opts.Segment)
	default:
		err = fmt.Errorf("unknown backup kind %q", kind)
	}
	if err != nil {
		if bw != nil {
			// The encoder runs goroutines that write into f: stopped
			// before the caller closes and removes it.
			bw.Close() // #nosec G104 -- a failed backup's file, removed by the caller; err is what failed
		}
		return Entry{}, err
	}
	done, err := bw.Close()
	if err != nil {
		return Entry{}, fmt.Errorf("finish backup file: %w", err)
	}
	if err := f.Sync(); err != nil {
		return Entry{}, fmt.Errorf("fsync staging file: %w", err)
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return Entry{}, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return Entry{}, err
	}
	id := opts.ID
	tl := src.Timeline().ID
	if kind == KindSegment {
		// Named by index range, not by the node's segment file name: after
		// a failover the new leader's segments continue the archive under
		// names that sort in history order, whoever wrote them. The
		// timeline keeps a restored history's segments apart.
		id = fmt.Sprintf("%020d-%020d", opts.Segment.FirstIndex, opts.Segment.LastIndex)
		if tl > 1 {
			id += fmt.Sprintf(".tl%d", tl)
		}
	}
	name := FileName(kind, id)
	for _, x := range cat.Entries {
		if x.File == name && x.TimelineID() != max(tl, 1) {
			return Entry{}, fmt.Errorf("%s on %s belongs to timeline %d, this node is on timeline %d: refusing to replace it", name, d.Location(), x.TimelineID(), tl)
		}
	}
	if err := testPause(ctx); err != nil {
		return Entry{}, err
	}
	// A file the catalog lists already (a segment shipped again after its
	// archive mark was not recorded) stays if the catalog then fails: the
	// catalog still lists it.
	listed := slices.ContainsFunc(cat.Entries, func(x Entry) bool { return x.File == name })
	unlist := func() {
		if !listed {
			d.Remove(context.WithoutCancel(ctx), name) // #nosec G104 -- removing after the failed catalog read or save, which is the error returned; a file left unlisted is listed again by a catalog rebuild
		}
	}
	if err := d.Save(ctx, name, f, size); err != nil {
		return Entry{}, fmt.Errorf("save %s to %s: %w", name, d.Location(), err)
	}
	e := entryOf(name, done)
	e.Size = size
	e.Digest, e.Objects = point.Digest, point.Objects
	// Listed in the catalog as it is now, not as read at the start: another
	// node may have written it while this backup was taken (a new leader
	// archiving after this node lost its leadership, a drill's result).
	if cat, err = reloadCatalog(ctx, d, src, opts.TakeOver && kind == KindFull); err != nil {
		unlist()
		return Entry{}, err
	}
	// A file saved again (a segment re-shipped after its mark was not
	// recorded) replaces its entry rather than listing it twice.
	cat.Entries = slices.DeleteFunc(cat.Entries, func(x Entry) bool { return x.File == name })
	cat.Entries = append(cat.Entries, e)
	if err := SaveCatalog(ctx, d, cat); err != nil {
		// The file is there but not listed: remove it so that catalog and
		// files agree (a rebuild would list it again).
		unlist()
		return Entry{}, err
	}
	return e, nil
}

// reloadCatalog reads the catalog again before a backup lists itself in
// it, with the claims Run checked at the start.
func reloadCatalog(ctx context.Context, d dest.Destination, src Source, takeOver bool) (Catalog, error) {
	cat, err := LoadCatalog(ctx, d)
	if err != nil {
		return Catalog{}, err
	}
	if err := cat.Claim(src.ClusterID(), d.Location()); err != nil {
		return Catalog{}, err
	}
	if err := cat.ClaimWriter(src.Timeline().ID, takeOver, d.Location()); err != nil {
		return Catalog{}, err
	}
	return cat, nil
}

func writeJSONEntry(tw *tar.Writer, name string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return writeEntry(tw, name, b)
}

func writeEntry(tw *tar.Writer, name string, b []byte) error {
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: int64(len(b)), ModTime: time.Unix(0, 0)}); err != nil {
		return err
	}
	_, err := tw.Write(b)
	return err
}

func writeFileEntry(tw *tar.Writer, name, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("read %s for the backup: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: st.Size(), ModTime: time.Unix(0, 0)}); err != nil {
		return err
	}
	_, err = io.Copy(tw, io.LimitReader(f, st.Size()))
	return err
}

func writeKeysAndCA(tw *tar.Writer, src Source) error {
	keys, err := src.ExportKeys()
	if err != nil {
		return fmt.Errorf("export master keys: %w", err)
	}
	err = writeEntry(tw, EntryKeys, keys)
	clear(keys)
	if err != nil {
		return err
	}
	cert, key := src.CAFiles()
	return writeCA(tw, cert, key)
}

// writeCA adds the CA certificate and, when key names a file, its private
// key. Coffer's own CA key is not a file once the keystore has opened: it
// is in the state, sealed.
func writeCA(tw *tar.Writer, cert, key string) error {
	if cert == "" {
		return nil
	}
	if err := writeFileEntry(tw, EntryCACert, cert); err != nil {
		return err
	}
	if key == "" {
		return nil
	}
	return writeFileEntry(tw, EntryCAKey, key)
}

// beginFunc starts the bundle once the index range is known.
type beginFunc func(first, last uint64, extra map[string]string) (io.Writer, error)

// writeFull: cluster.json, keys.bin, the CA, then state.db. The callback
// runs inside the state's read transaction: it must not take any lock or
// open another transaction (a writer waiting to grow the database would
// deadlock with it), so the keys are exported before and the cluster id
// comes from the copy's own point.
func writeFull(begin beginFunc, src Source) (state.BackupPoint, error) {
	keys, err := src.ExportKeys()
	if err != nil {
		return state.BackupPoint{}, fmt.Errorf("export master keys: %w", err)
	}
	defer clear(keys)
	node, software := src.NodeID(), src.Software()
	cert, key := src.CAFiles()
	var tw *tar.Writer
	p, err := src.WriteState(func(p state.BackupPoint, size int64) (io.Writer, error) {
		w, err := begin(1, p.Index, nil)
		if err != nil {
			return nil, err
		}
		tw = tar.NewWriter(w)
		if err := writeJSONEntry(tw, EntryCluster, ClusterInfo{ClusterID: p.ClusterID, Node: node, Point: p,
			Software: software, Taken: time.Now().UTC()}); err != nil {
			return nil, err
		}
		if err := writeEntry(tw, EntryKeys, keys); err != nil {
			return nil, err
		}
		if err := writeCA(tw, cert, key); err != nil {
			return nil, err
		}
		return bigReads{tw}, tw.WriteHeader(&tar.Header{Name: EntryState, Mode: 0o600, Size: size, ModTime: time.Unix(0, 0)})
	})
	if err != nil {
		return state.BackupPoint{}, err
	}
	// The digest, computed while the copy was written, goes after it: it is
	// authenticated with the payload, and a restore compares it with the
	// state it loaded.
	if err := writeJSONEntry(tw, EntryDigest, StateDigest{Index: p.Index, Digest: p.Digest, Objects: p.Objects}); err != nil {
		return state.BackupPoint{}, err
	}
	return p, tw.Close()
}

// copyBuf is the read size of the state copy: bbolt copies the database
// file with io.Copy, whose default 32 KiB reads make a system call per two
// zstd blocks.
const copyBuf = 1 << 20

// bigReads gives a writer the ReadFrom io.Copy prefers, reading copyBuf
// bytes at a time.
type bigReads struct{ w io.Writer }

func (b bigReads) Write(p []byte) (int, error) { return b.w.Write(p) }

func (b bigReads) ReadFrom(r io.Reader) (int64, error) {
	return io.CopyBuffer(struct{ io.Writer }{b.w}, r, make([]byte, copyBuf))
}

// StateDigest is the digest.json entry of a full backup.
type StateDigest struct {
	Index   uint64 `json:"index"`
	Digest  string `json:"digest"`
	Objects int    `json:"objects"`
}

// writeIncremental: the closed journal segments holding records after the
// base full, with the current keys (a rotation since the full added
// generations the restore needs) and the CA.
func writeIncremental(begin beginFunc, src Source, base *Entry) error {
	last, err := src.RotateJournal()
	if err != nil {
		return fmt.Errorf("close the journal segment: %w", err)
	}
	segs, err := journal.ListSegments(src.JournalDir())
	if err != nil {
		return fmt.Errorf("list journal segments: %w", err)
	}
	from := base.LastIndex + 1
	// Check coverage before writing anything.
	var parts []journal.SegmentInfo
	covered := from
	for _, s := range segs {
		if !s.Closed || s.Records == 0 || s.LastIndex < from || s.FirstIndex > last {
			continue
		}
		if s.FirstIndex > covered {
			return fmt.Errorf("%w: records %d-%d are not in the journal any more; take a full backup", ErrNoJournal, covered, s.FirstIndex-1)
		}
		parts = append(parts, s)
		covered = s.LastIndex + 1
	}
	if covered <= last && last >= from {
		return fmt.Errorf("%w: records %d-%d are missing from the closed segments", ErrNoJournal, covered, last)
	}
	w, err := begin(from, last, nil)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	if err := writeJSONEntry(tw, EntryCluster, ClusterInfo{ClusterID: src.ClusterID(), Node: src.NodeID(),
		Point: state.BackupPoint{Index: last, ClusterID: src.ClusterID()}, Software: src.Software(), Taken: time.Now().UTC()}); err != nil {
		return err
	}
	if err := writeKeysAndCA(tw, src); err != nil {
		return err
	}
	for _, s := range parts {
		if err := writeFileEntry(tw, JournalDir+s.Name, s.Path); err != nil {
			return err
		}
	}
	return tw.Close()
}

// writeSegment: one closed journal segment, as it is on disk.
func writeSegment(begin beginFunc, seg *journal.SegmentInfo) error {
	if seg == nil || !seg.Closed {
		return errors.New("only a closed journal segment can be archived")
	}
	w, err := begin(seg.FirstIndex, seg.LastIndex, nil)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	if err := writeFileEntry(tw, JournalDir+seg.Name, seg.Path); err != nil {
		return err
	}
	return tw.Close()
}

// testPause holds a backup between staging and saving for the duration in
// COFFER_TEST_BACKUP_PAUSE: the crash tests kill the server there. Unset in
// production; it only ever adds a wait.
func testPause(ctx context.Context) error {
	d, err := time.ParseDuration(os.Getenv("COFFER_TEST_BACKUP_PAUSE"))
	if err != nil || d <= 0 {
		return ctx.Err()
	}
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
