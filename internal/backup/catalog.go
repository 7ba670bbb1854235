package backup

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/coffer-kms/coffer/internal/backup/bundle"
	"github.com/coffer-kms/coffer/internal/backup/dest"
)

// CatalogFile is the catalog's name at every destination's root.
const CatalogFile = "catalog.json"

// Entry is one backup file as the catalog lists it (the manifest without
// the parts a listing does not need).
type Entry struct {
	ID         string    `json:"id"`
	Kind       string    `json:"kind"`
	File       string    `json:"file"`
	BaseFullID string    `json:"base_full_id,omitempty"`
	FirstIndex uint64    `json:"first_index"`
	LastIndex  uint64    `json:"last_index"`
	FirstTime  time.Time `json:"first_time,omitzero"`
	LastTime   time.Time `json:"last_time,omitzero"`
	Created    time.Time `json:"created"`
	Node       string    `json:"node,omitempty"`
	Size       int64     `json:"size"`
	SHA256     string    `json:"sha256"`
	Recipients []string  `json:"recipients"`
	// Timeline the backup belongs to (0 in catalogs written before
	// timelines existed: read as 1), and its ancestry ("1:1234,...").
	Timeline uint32 `json:"timeline,omitempty"`
	History  string `json:"timeline_history,omitempty"`
	// Digest and Objects of a full's state copy, as Run computed them (the
	// authenticated copy is the payload's digest.json; a catalog rebuilt
	// from manifests has neither).
	Digest  string `json:"state_digest,omitempty"`
	Objects int    `json:"objects,omitempty"`
	// Verified is the result of the last "coffer backup verify".
	Verified *Verification `json:"verified,omitempty"`
}

// Verification is the outcome of verifying one backup.
type Verification struct {
	Time   time.Time `json:"time"`
	Result string    `json:"result"` // OK, FAILED, or SKIPPED (an earlier recovery passphrase)
	Reason string    `json:"reason,omitempty"`
}

// TimelineID is the entry's timeline (1 when not recorded).
func (e Entry) TimelineID() uint32 { return max(e.Timeline, 1) }

func entryOf(file string, m bundle.Manifest) Entry {
	e := Entry{ID: m.ID, Kind: m.Kind, File: file, BaseFullID: m.BaseFullID, FirstIndex: m.FirstIndex, LastIndex: m.LastIndex,
		FirstTime: m.FirstTime, LastTime: m.LastTime, Created: m.Created, Node: m.Node, Size: m.PayloadSize,
		SHA256: m.PayloadSHA256, Recipients: m.Recipients, History: m.Extra[ExtraHistory]}
	if tl, err := strconv.ParseUint(m.Extra[ExtraTimeline], 10, 32); err == nil && tl > 1 {
		e.Timeline = uint32(tl)
	}
	return e
}

// Catalog records which cluster owns a destination, which of its timelines
// writes to it, and every backup on it.
type Catalog struct {
	Format    int    `json:"format"`
	ClusterID string `json:"cluster_id"`
	// Writer is the one live timeline that writes here (0: not recorded,
	// see WriterTimeline). Another timeline (a restored copy) writes only
	// after it takes the destination over.
	Writer  uint32    `json:"writer_timeline,omitempty"`
	Updated time.Time `json:"updated"`
	Entries []Entry   `json:"backups"`
	// Drills are the newest restore drills, oldest first (at most
	// MaxDrills); a catalog with drills is written as format 2.
	Drills []Drill `json:"drills,omitempty"`
}

// CatalogFormat is the newest catalog format this build reads and writes:
// 1 (no drills) or 2 (with drills). A catalog without drills is written as
// format 1, so that builds that know only format 1 keep reading it.
const CatalogFormat = 2

// ErrCatalogNewer: the catalog was written by a newer build.
var ErrCatalogNewer = errors.New("catalog written by a newer build")

// WriterTimeline is the timeline that writes to the destination: the one
// recorded, or (a catalog written before it was recorded, or rebuilt) the
// timeline of the newest backup; 0 when there is none.
func (c Catalog) WriterTimeline() uint32 {
	if c.Writer != 0 {
		return c.Writer
	}
	var newest *Entry
	for i := range c.Entries {
		if e := &c.Entries[i]; newest == nil || e.Created.After(newest.Created) {
			newest = e
		}
	}
	if newest == nil {
		return 0
	}
	return newest.TimelineID()
}

// ErrOtherWriter: another timeline of the cluster writes to the destination.
var ErrOtherWriter = errors.New("another timeline writes to this destination")

// ClaimWriter checks that timeline tl may write to the destination and
// records it as the writer. A destination written by another timeline is
// refused (naming both), unless takeOver: the restored timeline that is the
// real recovery claims it.
func (c *Catalog) ClaimWriter(tl uint32, takeOver bool, location string) error {
	tl = max(tl, 1)
	w := c.WriterTimeline()
	if w != 0 && w != tl && !takeOver {
		return fmt.Errorf("%w: %s is written by timeline %d of cluster %s, this node is on timeline %d; one live timeline writes to a destination. "+
			"If this node is a restored copy (a rehearsal), give it another destination; if it is the real recovery, take the destinations over: coffer backup resume-after-restore --take-over",
			ErrOtherWriter, location, w, c.ClusterID, tl)
	}
	c.Writer = tl
	return nil
}

// Errors about catalogs.
var (
	// ErrForeign: the destination belongs to another cluster.
	ErrForeign = errors.New("destination belongs to another cluster")
	// ErrCatalogCorrupt: catalog.json cannot be read; rebuild it from the manifests.
	ErrCatalogCorrupt = errors.New("catalog is corrupt")
)

// LoadCatalog reads the catalog (an empty one if the destination is new).
// A catalog that cannot be read is ErrCatalogCorrupt; use LoadNamedCatalog
// where the destination's configured name is known, so that the error gives
// the rebuild command ready to run.
func LoadCatalog(ctx context.Context, d dest.Destination) (Catalog, error) {
	return LoadNamedCatalog(ctx, d, "")
}

// LoadCatalog reads the catalog of the destination configured as name.
func (t *Target) LoadCatalog(ctx context.Context) (Catalog, error) {
	return LoadNamedCatalog(ctx, t.Dest, t.Config.Name)
}

// LoadNamedCatalog is LoadCatalog for the destination configured as name
// ("" when it is not known, as for a location given to coffer restore).
func LoadNamedCatalog(ctx context.Context, d dest.Destination, name string) (Catalog, error) {
	rc, err := d.Open(ctx, CatalogFile, 0, 0)
	if errors.Is(err, dest.ErrNotFound) {
		return Catalog{Format: 1}, nil
	}
	if err != nil {
		return Catalog{}, fmt.Errorf("read catalog at %s: %w", d.Location(), err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, 256<<20))
	if err != nil {
		return Catalog{}, fmt.Errorf("read catalog at %s: %w", d.Location(), err)
	}
	var c Catalog
	var head struct {
		Format int `json:"format"`
	}
	if json.Unmarshal(b, &head) == nil && head.Format > CatalogFormat {
		return Catalog{}, fmt.Errorf("%w: %s/%s is catalog format version %d, this build reads versions 1 to %d: use a newer build", ErrCatalogNewer, d.Location(), CatalogFile, head.Format, CatalogFormat)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil || c.Format < 1 || c.Format > CatalogFormat || c.ClusterID == "" {
		if err == nil {
			err = fmt.Errorf("format %d, cluster id %q", c.Format, c.ClusterID)
		}
		hint := "coffer backup catalog rebuild --destination " + name
		if name == "" {
			hint = "coffer backup catalog rebuild on the server, with --destination naming this destination"
		}
		return Catalog{}, fmt.Errorf("%w: %s/%s: %v (rebuild it: %s)", ErrCatalogCorrupt, d.Location(), CatalogFile, err, hint)
	}
	return c, nil
}

// Claim checks that the catalog belongs to clusterID, or claims a new one.
func (c *Catalog) Claim(clusterID, location string) error {
	switch c.ClusterID {
	case "":
		c.ClusterID = clusterID
	case clusterID:
	default:
		return fmt.Errorf("%w: %s holds backups of cluster %s, this is cluster %s; use another destination (or path/prefix)", ErrForeign, location, c.ClusterID, clusterID)
	}
	return nil
}

// SaveCatalog writes the catalog atomically (the destination's Save is).
func SaveCatalog(ctx context.Context, d dest.Destination, c Catalog) error {
	c.Format = 1
	if len(c.Drills) > 0 {
		c.Format = CatalogFormat
	}
	c.Updated = time.Now().UTC()
	slices.SortFunc(c.Entries, func(a, b Entry) int { return strings.Compare(a.File, b.File) })
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	if err := d.Save(ctx, CatalogFile, bytes.NewReader(b), int64(len(b))); err != nil {
		return fmt.Errorf("write catalog at %s: %w", d.Location(), err)
	}
	return nil
}

// Rebuild reads every backup file's manifest (a ranged read of its trailer)
// and writes a new catalog. Files whose manifest cannot be read are
// reported and left out; they are never deleted.
func Rebuild(ctx context.Context, d dest.Destination, clusterID string) (Catalog, []string, error) {
	c, skipped, err := scan(ctx, d, clusterID)
	if err != nil {
		return Catalog{}, skipped, err
	}
	if old, err := LoadCatalog(ctx, d); err == nil && old.ClusterID == clusterID {
		c.Writer, c.Drills = old.Writer, old.Drills // the manifests do not say which timeline writes here now, nor what drills found
	}
	return c, skipped, SaveCatalog(ctx, d, c)
}

// Scan reads every backup file's manifest like Rebuild, without writing
// anything: a restore uses it when the catalog is missing or damaged. The
// cluster id is the files' own (they must all agree).
func Scan(ctx context.Context, d dest.Destination) (Catalog, []string, error) {
	c, skipped, err := scan(ctx, d, "")
	if err != nil {
		return Catalog{}, skipped, fmt.Errorf("list %s: %w", d.Location(), err)
	}
	return c, skipped, nil
}

// scan builds a catalog from the manifests of every backup file on d. With
// clusterID set every file must be that cluster's; without, the first
// readable file sets it and the others must agree.
func scan(ctx context.Context, d dest.Destination, clusterID string) (Catalog, []string, error) {
	c := Catalog{Format: 1, ClusterID: clusterID}
	var skipped []string
	for _, prefix := range []string{BackupsDir + "/", ArchiveDir + "/"} {
		err := d.List(ctx, prefix, func(fi dest.FileInfo) error {
			if !strings.HasSuffix(fi.Name, FileSuffix) {
				return nil
			}
			m, err := ReadRemoteManifest(ctx, d, fi)
			if err != nil {
				skipped = append(skipped, fmt.Sprintf("%s: %v", fi.Name, err))
				return nil
			}
			switch {
			case c.ClusterID == "":
				c.ClusterID = m.ClusterID
			case m.ClusterID != c.ClusterID && clusterID != "":
				return fmt.Errorf("%w: %s was written by cluster %s", ErrForeign, fi.Name, m.ClusterID)
			case m.ClusterID != c.ClusterID:
				return fmt.Errorf("%w: %s was written by cluster %s, other files by %s", ErrForeign, fi.Name, m.ClusterID, c.ClusterID)
			}
			e := entryOf(fi.Name, m)
			e.Size = fi.Size // the file, as Run records it
			c.Entries = append(c.Entries, e)
			return nil
		})
		if err != nil {
			return Catalog{}, skipped, fmt.Errorf("%s: %w", prefix, err)
		}
	}
	return c, skipped, nil
}

// ReadRemoteManifest reads a backup file's manifest from its trailer.
func ReadRemoteManifest(ctx context.Context, d dest.Destination, fi dest.FileInfo) (bundle.Manifest, error) {
	return bundle.ReadManifest(&remoteReaderAt{ctx: ctx, d: d, name: fi.Name}, fi.Size)
}

// remoteReaderAt turns ranged Opens into an io.ReaderAt.
type remoteReaderAt struct {
	ctx  context.Context
	d    dest.Destination
	name string
}

func (r *remoteReaderAt) ReadAt(p []byte, off int64) (int, error) {
	rc, err := r.d.Open(r.ctx, r.name, off, int64(len(p)))
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	n, err := io.ReadFull(rc, p)
	if errors.Is(err, io.ErrUnexpectedEOF) {
		err = io.EOF
	}
	return n, err
}
