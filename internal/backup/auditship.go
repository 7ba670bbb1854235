package backup

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/coffer-kms/coffer/internal/backup/bundle"
	"github.com/coffer-kms/coffer/internal/backup/dest"
	"github.com/coffer-kms/coffer/internal/fsutil"
)

// AuditDir is where nodes ship their closed audit log files on a
// destination: audit/<node>/<file>.cbk, one backup file (bundle) per audit
// file, encrypted like the backups. A restored timeline ships into
// audit/<node>.tl<N>/ so that a restored copy never replaces the original's
// files.
const AuditDir = "audit"

// KindAudit is the bundle kind of a shipped audit file.
const KindAudit = bundle.KindAudit

// EntryAudit prefixes the audit file inside the payload (a tar stream).
const EntryAudit = "audit/"

// Manifest extras of a shipped audit file.
const (
	ExtraAuditFile     = "audit_file"      // base name of the audit file
	ExtraAuditFirstSeq = "audit_first_seq" // seq of its first record (decimal)
	ExtraAuditLastSeq  = "audit_last_seq"  // seq of its last record (decimal)
)

// AuditFile is one closed audit log file to ship.
type AuditFile struct {
	Name              string // base name, audit-NNNNNNNN.log
	Path              string
	FirstSeq, LastSeq uint64
	LastTime          time.Time
}

// AuditFileName is where node's audit file goes on a destination.
func AuditFileName(node string, timeline uint32, file string) string {
	dir := node
	if timeline > 1 {
		dir += ".tl" + strconv.FormatUint(uint64(timeline), 10)
	}
	return AuditDir + "/" + dir + "/" + file + FileSuffix
}

// ShipAudit writes one closed audit file to t's destination d as a backup
// file encrypted with t's encryption (staged in stagingDir, saved
// atomically) and returns its name on d. It checks d's catalog as a backup does (the destination belongs to this
// cluster and this timeline writes to it) but does not list the file there:
// a restore never reads audit files. Shipping a file again replaces the
// copy with identical content.
func ShipAudit(ctx context.Context, src Source, t *Target, stagingDir string, f AuditFile) (string, error) {
	d, enc := t.Dest, t.Encryption
	node := src.NodeID()
	if node == "" {
		node = src.ClusterID()
	}
	if node == "" || strings.ContainsAny(node, `/\`) || node == "." || node == ".." || path.Base(f.Name) != f.Name {
		return "", fmt.Errorf("ship audit file %q of node %q: not a valid name", f.Name, node)
	}
	cat, err := t.LoadCatalog(ctx)
	if err != nil {
		return "", err
	}
	if err := cat.Claim(src.ClusterID(), d.Location()); err != nil {
		return "", err
	}
	tl := src.Timeline().ID
	if err := cat.ClaimWriter(tl, false, d.Location()); err != nil {
		return "", err
	}
	if err := fsutil.EnsureDir(stagingDir); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(stagingDir, "staging-audit-*"+FileSuffix)
	if err != nil {
		return "", fmt.Errorf("create staging file: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()

	now := time.Now().UTC()
	m := bundle.Manifest{Format: 1, ID: node + "-" + strings.TrimSuffix(f.Name, ".log"), Kind: KindAudit, ClusterID: src.ClusterID(), Node: node,
		Created: now, Software: src.Software(), LastTime: f.LastTime.UTC(), Extra: map[string]string{
			ExtraAuditFile:     f.Name,
			ExtraAuditFirstSeq: strconv.FormatUint(f.FirstSeq, 10),
			ExtraAuditLastSeq:  strconv.FormatUint(f.LastSeq, 10),
		}}
	if tl > 1 {
		m.Extra[ExtraTimeline] = strconv.FormatUint(uint64(tl), 10)
	}
	bw, err := bundle.NewWriter(tmp, m, enc)
	if err != nil {
		return "", err
	}
	tw := tar.NewWriter(bw)
	err = writeFileEntry(tw, EntryAudit+f.Name, f.Path)
	if err == nil {
		err = tw.Close()
	}
	if err != nil {
		bw.Close() // #nosec G104 -- stops the encoder's writes into a copy given up; err is what failed
		return "", err
	}
	if _, err := bw.Close(); err != nil {
		return "", fmt.Errorf("finish the copy of %s: %w", f.Name, err)
	}
	if err := tmp.Sync(); err != nil {
		return "", fmt.Errorf("fsync staging file: %w", err)
	}
	size, err := tmp.Seek(0, io.SeekEnd)
	if err != nil {
		return "", err
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	name := AuditFileName(node, tl, f.Name)
	if err := d.Save(ctx, name, tmp, size); err != nil {
		return "", fmt.Errorf("save %s to %s: %w", name, d.Location(), err)
	}
	return name, nil
}

// ListAudit lists the shipped audit files on d by directory (a node id,
// with .tl<N> for a restored timeline), each list sorted by name.
func ListAudit(ctx context.Context, d dest.Destination) (map[string][]string, error) {
	out := map[string][]string{}
	err := d.List(ctx, AuditDir+"/", func(fi dest.FileInfo) error {
		rest := strings.TrimPrefix(fi.Name, AuditDir+"/")
		node, file, ok := strings.Cut(rest, "/")
		if !ok || strings.Contains(file, "/") || !strings.HasSuffix(file, FileSuffix) {
			return nil
		}
		out[node] = append(out[node], fi.Name)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %s/ on %s: %w", AuditDir, d.Location(), err)
	}
	for _, l := range out {
		slices.Sort(l)
	}
	return out, nil
}

// FetchAudit downloads the shipped audit file name from d (into a temp file
// in tmpDir), opens it with the first of keys that fits, checks that it is
// an audit file, and writes the audit file's bytes to w. The whole payload
// is authenticated before FetchAudit returns without error.
func FetchAudit(ctx context.Context, d dest.Destination, name string, keys []bundle.Decryption, tmpDir string, w io.Writer) (bundle.Manifest, error) {
	if len(keys) == 0 {
		return bundle.Manifest{}, errors.New("no recovery passphrase or age identity given")
	}
	rc, err := d.Open(ctx, name, 0, 0)
	if err != nil {
		return bundle.Manifest{}, fmt.Errorf("download %s from %s: %w", name, d.Location(), err)
	}
	tmp, err := os.CreateTemp(tmpDir, ".fetch-*"+FileSuffix)
	if err != nil {
		rc.Close() // #nosec G104 -- closing a reader after an earlier error, which is the one returned
		return bundle.Manifest{}, err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	size, err := io.Copy(tmp, rc)
	rc.Close() // #nosec G104 -- a reader, after the copy: Close cannot lose data (a short read fails the copy or the bundle's checks)
	if err != nil {
		return bundle.Manifest{}, fmt.Errorf("download %s from %s: %w", name, d.Location(), err)
	}
	var (
		r io.ReadCloser
		m bundle.Manifest
	)
	for _, k := range keys {
		r, m, err = bundle.Open(tmp, size, k)
		if !errors.Is(err, bundle.ErrWrongKey) {
			break
		}
	}
	if err != nil {
		return m, fmt.Errorf("%s: %w", name, err)
	}
	defer r.Close()
	if m.Kind != KindAudit || m.Extra[ExtraAuditFile] == "" {
		return m, fmt.Errorf("%s: a %s backup file, not an audit file", name, m.Kind)
	}
	want := EntryAudit + m.Extra[ExtraAuditFile]
	tr := tar.NewReader(r)
	found := false
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return m, fmt.Errorf("%s: read payload: %w", name, err)
		}
		if h.Name != want || found {
			return m, fmt.Errorf("%s: unexpected entry %q", name, h.Name)
		}
		found = true
		// As many bytes as the authenticated tar header says (the reader
		// stops there in any case).
		if _, err := io.CopyN(w, tr, h.Size); err != nil {
			return m, fmt.Errorf("%s: %w", name, err)
		}
	}
	if !found {
		return m, fmt.Errorf("%s: no %s entry", name, want)
	}
	// The rest of the payload (tar padding) is read to its authenticated end.
	if _, err := io.Copy(io.Discard, r); err != nil {
		return m, fmt.Errorf("%s: %w", name, err)
	}
	return m, nil
}
