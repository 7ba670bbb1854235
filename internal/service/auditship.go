package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/coffer-kms/coffer/internal/audit"
	"github.com/coffer-kms/coffer/internal/backup"
	"github.com/coffer-kms/coffer/internal/datadir"
	"github.com/coffer-kms/coffer/internal/fsutil"
	"github.com/coffer-kms/coffer/internal/state"
)

// Closed audit files are shipped to every backup destination but LOCAL
// (which lives in this data dir: a copy there protects nothing and frees
// nothing), each node its own files, and pruned once audit.retention has
// passed and every destination has them.

// AuditShippedPath records which audit files each destination has.
func AuditShippedPath(dataDir string) string {
	return filepath.Join(dataDir, "backup", "audit-shipped.json")
}

// auditShipTimeout bounds one round of shipping to one destination.
const auditShipTimeout = 15 * time.Minute

// auditShipped is the content of AuditShippedPath.
type auditShipped struct {
	Destinations map[string]auditMark `json:"destinations"`
}

// auditMark: the destination at Where holds every closed audit file up to
// number Through (files are shipped in order and never change). A
// destination whose Where changes (edited to another place, deleted and
// added again, taken over by a restored timeline) starts over.
type auditMark struct {
	Where   string    `json:"where"`
	Through uint64    `json:"through"`
	At      time.Time `json:"at,omitzero"`
}

// auditWhere identifies where a destination stores this node's audit files.
func auditWhere(d state.Destination, timeline uint32) string {
	return fmt.Sprintf("%s|%s|%s:%d|%s|%s|%s|%s|created %s|timeline %d", d.Kind, d.Path, d.Host, d.Port, d.User,
		d.Endpoint, d.Bucket, d.Prefix, d.Created.UTC().Format(time.RFC3339Nano), max(timeline, 1))
}

func loadAuditShipped(path string) (auditShipped, error) {
	st := auditShipped{Destinations: map[string]auditMark{}}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("read %s: %w", path, err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		// Lost marks only mean files are shipped again.
		return auditShipped{Destinations: map[string]auditMark{}}, fmt.Errorf("read %s (audit files will be shipped again): %w", path, err)
	}
	if st.Destinations == nil {
		st.Destinations = map[string]auditMark{}
	}
	return st, nil
}

func saveAuditShipped(path string, st auditShipped) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := fsutil.EnsureDir(filepath.Dir(path)); err != nil {
		return err
	}
	return fsutil.WriteFile(path, b)
}

// AuditShipping is one destination's copy of this node's audit files.
type AuditShipping struct {
	Destination string `json:"destination"`
	// ShippedThrough names the newest audit file the destination holds.
	ShippedThrough string `json:"shipped_through,omitempty"`
	// Pending counts closed audit files not shipped there yet.
	Pending int `json:"pending_files"`
	// Held says why they are not shipped (archiving paused, held after a
	// restore, writes frozen); Error is the last failure.
	Held  string `json:"held,omitempty"`
	Error string `json:"error,omitempty"`
}

// AuditFilesStatus is the audit side of the backup status.
type AuditFilesStatus struct {
	Retention string `json:"retention,omitempty"`
	// ClosedFiles counts the audit files on this node the log no longer
	// writes to; PrunedThrough is the seq of the last pruned record.
	ClosedFiles   int             `json:"closed_files"`
	PrunedThrough uint64          `json:"pruned_through,omitempty"`
	Destinations  []AuditShipping `json:"destinations,omitempty"`
}

// auditShipper keeps what the last round found, for status.
type auditShipper struct {
	round sync.Mutex // one round at a time

	mu          sync.Mutex
	status      *AuditFilesStatus
	alerts      []Alert
	lastErr     map[string]string // logged once per distinct error
	noDestNoted bool
}

func (a *auditShipper) view() (*AuditFilesStatus, []Alert) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.status == nil {
		return nil, nil
	}
	st := *a.status
	st.Destinations = append([]AuditShipping(nil), st.Destinations...)
	return &st, append([]Alert(nil), a.alerts...)
}

// AuditShippingStatus reports the last shipping round (nil before the first).
func (s *Backups) AuditShippingStatus() *AuditFilesStatus {
	st, _ := s.auditShip.view()
	return st
}

// startAuditShipping runs a shipping round every backup tick, on every
// node (each ships its own audit log), until ctx ends.
func (s *Backups) startAuditShipping(ctx context.Context, w *workers) {
	w.Go("audit shipping", func(context.Context) {
		t := time.NewTicker(s.cfg.BackupTick)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				if err := s.shipAudit(ctx, now); err != nil && ctx.Err() == nil {
					s.log.Warn("audit shipping", "error", err)
				}
			}
		}
	})
}

// shipAudit copies every closed audit file to every destination (but
// LOCAL) that does not have it yet, then removes the files older than
// audit.retention (measured at now) that every destination has. A failing,
// paused or held destination keeps its files on the node and is retried at
// the next round. Errors of single destinations are in the status; the
// error returned is about this node's own files.
func (s *Backups) shipAudit(ctx context.Context, now time.Time) error {
	s.auditShip.round.Lock()
	defer s.auditShip.round.Unlock()
	if s.audit == nil {
		return nil
	}
	files, err := s.audit.ClosedFiles()
	if err != nil {
		return fmt.Errorf("list closed audit files: %w", err)
	}
	dests, err := s.st.Destinations()
	if err != nil {
		return fmt.Errorf("read the destinations: %w", err)
	}
	path := AuditShippedPath(s.cfg.DataDir)
	shipped, err := loadAuditShipped(path)
	if err != nil {
		s.log.Warn("audit shipping", "error", err)
	}
	before, _ := json.Marshal(shipped)
	tl := s.st.Timeline().ID
	status := &AuditFilesStatus{ClosedFiles: len(files)}
	if s.cfg.AuditRetention > 0 {
		status.Retention = formatRetention(s.cfg.AuditRetention)
	}
	var alerts []Alert
	var targets []string
	frozen := s.frozenErr() != nil
	for _, d := range dests {
		if d.Kind == "local" {
			continue
		}
		targets = append(targets, d.Name)
		mark := shipped.Destinations[d.Name]
		if w := auditWhere(d, tl); mark.Where != w {
			mark = auditMark{Where: w}
		}
		var todo []audit.ClosedFile
		for _, f := range files {
			if f.Num > mark.Through {
				todo = append(todo, f)
			}
		}
		v := AuditShipping{Destination: d.Name}
		switch {
		case len(todo) == 0:
		case d.ArchivePaused:
			v.Held = "archiving to this destination is paused (coffer journal archive resume --destination " + d.Name + ")"
		case s.heldErr(d.Name) != nil:
			v.Held = "backups are held after a restore (coffer backup resume-after-restore)"
		case frozen:
			v.Held = "writes are frozen"
		default:
			save := func() error {
				shipped.Destinations[d.Name] = mark
				return saveAuditShipped(path, shipped)
			}
			if err := s.shipAuditTo(ctx, d.Name, todo, &mark, now, save); err != nil {
				v.Error = err.Error()
			}
		}
		s.noteAuditShipErr(d.Name, v.Error)
		shipped.Destinations[d.Name] = mark
		for _, f := range files {
			if f.Num > mark.Through {
				v.Pending++
			}
		}
		if mark.Through > 0 {
			v.ShippedThrough = audit.FileName(mark.Through)
		}
		// A paused or held destination is the operator's choice: it shows
		// in the status, and in a warning once it holds files past the
		// retention (below).
		if v.Pending > 0 && v.Error != "" {
			alerts = append(alerts, newAlert(AlertAuditNotShipped, "audit",
				fmt.Sprintf("%d closed audit files are not shipped to destination %s: %s", v.Pending, d.Name, v.Error), now.UTC()))
		}
		status.Destinations = append(status.Destinations, v)
	}
	for name := range shipped.Destinations {
		if !slices.Contains(targets, name) {
			delete(shipped.Destinations, name)
		}
	}
	if after, _ := json.Marshal(shipped); string(after) != string(before) {
		if err := saveAuditShipped(path, shipped); err != nil {
			s.log.Warn("audit shipping: recording what was shipped", "error", err)
		}
	}
	var perr error
	alerts, perr = s.pruneAuditFiles(now, files, targets, shipped, alerts)
	if a, ok, _ := audit.ReadAnchor(datadir.AuditDir(s.cfg.DataDir)); ok {
		status.PrunedThrough = a.Seq
	}
	if cf, err := s.audit.ClosedFiles(); err == nil {
		status.ClosedFiles = len(cf)
	}
	s.auditShip.mu.Lock()
	s.auditShip.status, s.auditShip.alerts = status, alerts
	s.auditShip.mu.Unlock()
	return perr
}

// shipAuditTo ships todo, in order, to one destination, moving mark (and
// saving it) after each file.
func (s *Backups) shipAuditTo(ctx context.Context, name string, todo []audit.ClosedFile, mark *auditMark, now time.Time, save func() error) error {
	ctx, cancel := context.WithTimeout(ctx, auditShipTimeout)
	defer cancel()
	h := backupHost{s}
	t, err := h.OpenTarget(ctx, name)
	if err != nil {
		return fmt.Errorf("open destination %s: %w", name, err)
	}
	defer t.Dest.Close()
	for _, f := range todo {
		af := backup.AuditFile{Name: f.Name, Path: f.Path, FirstSeq: f.FirstSeq, LastSeq: f.LastSeq, LastTime: f.LastTime}
		if _, err := backup.ShipAudit(ctx, h, t, datadir.StagingDir(s.cfg.DataDir), af); err != nil {
			return fmt.Errorf("ship %s: %w", f.Name, err)
		}
		mark.Through, mark.At = f.Num, now.UTC()
		if err := save(); err != nil {
			return fmt.Errorf("record that %s was shipped: %w", f.Name, err)
		}
	}
	return nil
}

// noteAuditShipErr logs a destination's shipping error once (until it changes).
func (s *Backups) noteAuditShipErr(name, msg string) {
	s.auditShip.mu.Lock()
	defer s.auditShip.mu.Unlock()
	if s.auditShip.lastErr == nil {
		s.auditShip.lastErr = map[string]string{}
	}
	if s.auditShip.lastErr[name] == msg {
		return
	}
	s.auditShip.lastErr[name] = msg
	if msg == "" {
		s.log.Info("audit files are shipped to the destination again", "destination", name)
		return
	}
	s.log.Error("shipping audit files failed; they stay on this node and are retried", "destination", name, "error", msg)
}

// pruneAuditFiles removes the oldest closed audit files while each is older
// than audit.retention and every destination holds it.
func (s *Backups) pruneAuditFiles(now time.Time, files []audit.ClosedFile, targets []string, shipped auditShipped, alerts []Alert) ([]Alert, error) {
	ret := s.cfg.AuditRetention
	if ret <= 0 {
		return alerts, nil
	}
	if len(targets) == 0 {
		msg := fmt.Sprintf("audit.retention is %s but no backup destination other than LOCAL is configured: audit files are pruned only once a destination holds them, so none is", formatRetention(ret))
		s.auditShip.mu.Lock()
		noted := s.auditShip.noDestNoted
		s.auditShip.noDestNoted = true
		s.auditShip.mu.Unlock()
		if !noted {
			s.log.Warn(msg)
		}
		return append(alerts, newAlert(AlertAuditNoDest, "audit", msg, now.UTC())), nil
	}
	s.auditShip.mu.Lock()
	s.auditShip.noDestNoted = false
	s.auditShip.mu.Unlock()
	var through uint64
	holder, held := "", 0
	for _, f := range files {
		if !f.LastTime.IsZero() && now.Sub(f.LastTime) < ret {
			break
		}
		if holder == "" {
			for _, name := range targets {
				if shipped.Destinations[name].Through < f.Num {
					holder = name
					break
				}
			}
		}
		if holder != "" {
			held++
			continue
		}
		through = f.Num
	}
	if held > 0 {
		alerts = append(alerts, newAlert(AlertAuditHeld, "audit", fmt.Sprintf(
			"%d audit files older than audit.retention (%s) stay on this node until destination %s holds them (see coffer status: backup.audit)",
			held, formatRetention(ret), holder), now.UTC()))
	}
	if through == 0 {
		return alerts, nil
	}
	a, removed, err := s.audit.Prune(through)
	if err != nil {
		return alerts, fmt.Errorf("prune audit files through %s: %w", audit.FileName(through), err)
	}
	if len(removed) == 0 {
		return alerts, nil
	}
	s.log.Info("audit files pruned after shipping", "files", len(removed), "through", removed[len(removed)-1],
		"anchor_seq", a.Seq, "anchor_hash", a.Hash, "retention", formatRetention(ret))
	// The prune is itself recorded in the chain, with the anchor.
	objs := append([]string(nil), removed...)
	if n := len(objs); n > 8 {
		objs = []string{objs[0], fmt.Sprintf("…%d more…", n-2), objs[n-1]}
	}
	objs = append(objs, "anchor seq="+strconv.FormatUint(a.Seq, 10)+" hash="+a.Hash)
	if _, err := s.audit.Append(audit.Record{Node: s.nodeID, Actor: "coffer", Transport: "internal", Operation: "auditPrune",
		Objects: objs, Result: "ok"}); err != nil {
		s.auditFailures.Add(1)
		s.log.Error("audit write failed", "operation", "auditPrune", "error", err)
	}
	return alerts, nil
}

// formatRetention writes whole days as "90d".
func formatRetention(d time.Duration) string {
	if d%(24*time.Hour) == 0 {
		return strconv.FormatInt(int64(d/(24*time.Hour)), 10) + "d"
	}
	return d.String()
}
