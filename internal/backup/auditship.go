package backup

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"os"
	"path"
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

// ShipAudit writes one closed audit file to d as a backup file encrypted
// with enc (staged in stagingDir, saved atomically) and returns its name on
// d. It checks d's catalog as a backup does (the destination belongs to this
// cluster and this timeline writes to it) but does not list the file there:
// a restore never reads audit files. Shipping a file again replaces the
// copy with identical content.
func ShipAudit(ctx context.Context, src Source, d dest.Destination, enc bundle.Encryption, stagingDir string, f AuditFile) (string, error) {
	node := src.NodeID()
	if node == "" {
		node = src.ClusterID()
	}
	if node == "" || strings.ContainsAny(node, `/\`) || node == "." || node == ".." || path.Base(f.Name) != f.Name {
		return "", fmt.Errorf("ship audit file %q of node %q: not a valid name", f.Name, node)
	}
	cat, err := LoadCatalog(ctx, d)
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
	if err := writeFileEntry(tw, EntryAudit+f.Name, f.Path); err != nil {
		return "", err
	}
	if err := tw.Close(); err != nil {
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
