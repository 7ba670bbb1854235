package restore

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/coffer-kms/coffer/internal/backup"
	"github.com/coffer-kms/coffer/internal/backup/bundle"
	"github.com/coffer-kms/coffer/internal/backup/dest"
	"github.com/coffer-kms/coffer/internal/datadir"
	"github.com/coffer-kms/coffer/internal/fsutil"
	"github.com/coffer-kms/coffer/internal/keystore"
)

// payload is what one backup file held, staged on local disk and trusted:
// it was read to the end, so every chunk authenticated.
type payload struct {
	manifest bundle.Manifest
	cluster  []byte            // cluster.json
	keys     *keystore.Keyring // master keys (nil for a segment)
	caCert   []byte
	caKey    []byte
	state    string   // staged state.db (full), else ""
	flushed  *flusher // writes state back to disk in the background
	digest   *backup.StateDigest
	journal  string // dir of the staged journal segments, else ""
}

func (p *payload) wipe() {
	p.flushed.wait() // #nosec G104 -- a payload given up: its state file is removed with the staging dir
	if p.keys != nil {
		p.keys.Wipe()
	}
	clear(p.caKey)
}

// fetch downloads e from d into dir and opens it with the first key that
// fits, extracting its entries into dir.
func fetch(ctx context.Context, d dest.Destination, e backup.Entry, keys []bundle.Decryption, dir string, progress func(int64)) (*payload, error) {
	if err := fsutil.EnsureDir(dir); err != nil {
		return nil, err
	}
	rc, err := d.Open(ctx, e.File, 0, 0)
	if err != nil {
		if errors.Is(err, dest.ErrNotFound) {
			return nil, fmt.Errorf("backup file %s is missing from %s (the catalog lists it): %w", e.File, d.Location(), err)
		}
		return nil, fmt.Errorf("read %s from %s: %w", e.File, d.Location(), err)
	}
	f, isLocal := rc.(*os.File)
	if !isLocal {
		// A remote file is downloaded first: the bundle is read from its
		// end and its start.
		local := filepath.Join(dir, "bundle"+backup.FileSuffix)
		err = writeScratch(local, &countReader{r: rc, fn: progress})
		rc.Close() // #nosec G104 -- a reader, after the copy: Close cannot lose data (a short read fails the copy or the bundle's checks)
		if err != nil {
			return nil, fmt.Errorf("download %s from %s: %w", e.File, d.Location(), err)
		}
		defer os.Remove(local)
		if f, err = os.Open(local); err != nil {
			return nil, err
		}
	}
	// A local file (a dir destination) is read where it is: the bundle
	// authenticates whatever is read, and a file replaced or removed
	// meanwhile stays readable through f.
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if isLocal && progress != nil {
		progress(st.Size())
	}
	if len(keys) == 0 {
		return nil, errors.New("no recovery passphrase or age identity given")
	}
	var (
		r io.ReadCloser
		m bundle.Manifest
	)
	for _, k := range keys {
		r, m, err = bundle.Open(f, st.Size(), k)
		if !errors.Is(err, bundle.ErrWrongKey) {
			break
		}
	}
	if err != nil {
		if errors.Is(err, bundle.ErrWrongKey) {
			return nil, fmt.Errorf("backup %s is encrypted to %s: none of the given recovery passphrases or identities opens it (a backup needs the recovery passphrase that was valid when it was taken): %w",
				e.File, strings.Join(e.Recipients, ", "), err)
		}
		return nil, fmt.Errorf("backup %s: %w", e.File, err)
	}
	defer r.Close()
	mtl := uint32(1)
	if v, err := strconv.ParseUint(m.Extra[backup.ExtraTimeline], 10, 32); err == nil && v > 1 {
		mtl = uint32(v)
	}
	if m.ID != e.ID || m.Kind != e.Kind || m.FirstIndex != e.FirstIndex || m.LastIndex != e.LastIndex ||
		m.BaseFullID != e.BaseFullID || mtl != e.TimelineID() || m.Extra[backup.ExtraHistory] != e.History {
		return nil, fmt.Errorf("backup %s: its authenticated manifest (%s %s, indexes %d-%d) does not match the catalog (%s %s, %d-%d): rebuild the catalog",
			e.File, m.Kind, m.ID, m.FirstIndex, m.LastIndex, e.Kind, e.ID, e.FirstIndex, e.LastIndex)
	}
	p := &payload{manifest: m}
	ok := false
	defer func() {
		if !ok {
			p.wipe()
		}
	}()
	var keysRaw []byte
	defer func() { clear(keysRaw) }()
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("backup %s: read payload: %w", e.File, err)
		}
		name := path.Clean(h.Name)
		switch {
		case name == backup.EntryCluster:
			p.cluster, err = readSmall(tr, 1<<20)
		case name == backup.EntryKeys:
			keysRaw, err = readSmall(tr, 16<<20)
		case name == backup.EntryCACert:
			p.caCert, err = readSmall(tr, 1<<20)
		case name == backup.EntryCAKey:
			p.caKey, err = readSmall(tr, 1<<20)
		case name == backup.EntryDigest:
			var b []byte
			if b, err = readSmall(tr, 1<<16); err == nil {
				p.digest = new(backup.StateDigest)
				err = json.Unmarshal(b, p.digest)
			}
		case name == backup.EntryState:
			p.state = datadir.StatePath(dir)
			p.flushed, err = writeFlushed(p.state, tr)
		case strings.HasPrefix(name, strings.TrimSuffix(backup.JournalDir, "/")+"/"):
			base := path.Base(name)
			if base == "." || base == "/" || strings.Contains(base, "..") {
				return nil, fmt.Errorf("backup %s: bad journal entry name %q", e.File, h.Name)
			}
			p.journal = datadir.JournalDir(dir)
			if err = fsutil.EnsureDir(p.journal); err == nil {
				err = fsutil.WriteFileFrom(filepath.Join(p.journal, base), func(w io.Writer) error { _, err := io.Copy(w, tr); return err }) // #nosec G110 -- the bundle is the operator's own backup, decrypted and authenticated by age; its size is what was backed up
			}
		default:
			return nil, fmt.Errorf("backup %s: unexpected payload entry %q", e.File, h.Name)
		}
		if err != nil {
			return nil, fmt.Errorf("backup %s: entry %s: %w", e.File, name, err)
		}
	}
	// Only now, at the end of the payload, is everything authenticated.
	if _, err := io.Copy(io.Discard, r); err != nil {
		return nil, fmt.Errorf("backup %s: %w", e.File, err)
	}
	if err := r.Close(); err != nil {
		return nil, fmt.Errorf("backup %s: %w", e.File, err)
	}
	if keysRaw != nil {
		if p.keys, err = keystore.ImportMEKs(keysRaw); err != nil {
			return nil, fmt.Errorf("backup %s: %w", e.File, err)
		}
	}
	switch e.Kind {
	case backup.KindFull, backup.KindDump:
		if p.state == "" || p.keys == nil {
			return nil, fmt.Errorf("backup %s: a full backup without state or master keys", e.File)
		}
	case backup.KindIncremental, backup.KindSegment:
		if p.journal == "" && e.LastIndex >= e.FirstIndex {
			return nil, fmt.Errorf("backup %s: no journal segment in the payload", e.File)
		}
	}
	ok = true
	return p, nil
}

// writeScratch writes r to a new file at path (0600) in large writes,
// without fsync: staging that a restore either makes durable later or
// removes.
func writeScratch(path string, r io.Reader) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fsutil.FileMode)
	if err != nil {
		return err
	}
	_, err = io.CopyBuffer(struct{ io.Writer }{f}, r, make([]byte, 256<<10)) // #nosec G110 -- the bundle is the operator's own backup, decrypted and authenticated by age; its size is what was backed up
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path) // #nosec G104 -- removing the partial file after the error returned
	}
	return err
}

// flushSpan is how much of a staged state is written between two fsyncs
// in the background.
const flushSpan = 64 << 20

// flusher fsyncs a file in a goroutine while it is being written, so that
// the disk writes it back while the restore decompresses the rest and
// checks it, instead of all at once at the end.
type flusher struct {
	f    *os.File
	kick chan struct{}
	done chan struct{}
	err  error // the first fsync error, set before done is closed
}

func newFlusher(f *os.File) *flusher {
	fl := &flusher{f: f, kick: make(chan struct{}, 1), done: make(chan struct{})}
	go func() {
		defer close(fl.done)
		for range fl.kick {
			if err := f.Sync(); err != nil && fl.err == nil {
				fl.err = err
			}
		}
		if err := f.Sync(); err != nil && fl.err == nil {
			fl.err = err
		}
		if err := f.Close(); err != nil && fl.err == nil {
			fl.err = err
		}
	}()
	return fl
}

// wait returns once the whole file is on disk (or the fsync failed). A nil
// flusher has nothing to wait for.
func (fl *flusher) wait() error {
	if fl == nil {
		return nil
	}
	<-fl.done
	if fl.err != nil {
		return fmt.Errorf("fsync %s: %w", fl.f.Name(), fl.err)
	}
	return nil
}

// writeFlushed writes r to a new file at path (0600) in large writes, with
// a flusher fsyncing it behind the writes; the caller waits for it before
// relying on the file being on disk.
func writeFlushed(path string, r io.Reader) (*flusher, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fsutil.FileMode)
	if err != nil {
		return nil, err
	}
	fl := newFlusher(f)
	buf := make([]byte, 256<<10)
	var since int64
	for err == nil {
		n := 0
		for n < len(buf) && err == nil {
			var m int
			m, err = r.Read(buf[n:])
			n += m
		}
		if n > 0 {
			if _, werr := f.Write(buf[:n]); werr != nil {
				err = werr
				break
			}
			if since += int64(n); since >= flushSpan {
				since = 0
				select {
				case fl.kick <- struct{}{}:
				default: // an fsync is still running; the next one takes this span too
				}
			}
		}
	}
	close(fl.kick)
	if err == io.EOF {
		return fl, nil
	}
	fl.wait()       // #nosec G104 -- the write error is the one returned
	os.Remove(path) // #nosec G104 -- removing the partial file after the error returned
	return nil, err
}

func readSmall(r io.Reader, max int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, max+1))
	if err == nil && int64(len(b)) > max {
		err = fmt.Errorf("larger than %d bytes", max)
	}
	return b, err
}

type countReader struct {
	r  io.Reader
	n  int64
	fn func(int64)
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.fn != nil && n > 0 {
		c.fn(int64(n))
	}
	return n, err
}
