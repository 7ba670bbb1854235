package restore

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/coffer-kms/coffer/internal/backup"
	"github.com/coffer-kms/coffer/internal/backup/dest"
	"github.com/coffer-kms/coffer/internal/journal"
	"github.com/coffer-kms/coffer/internal/state"
)

// source is a run of journal records: a backup file (incremental or
// archived segment) or a raw journal directory.
type source struct {
	entry  *backup.Entry
	dir    string // raw journal dir
	lo, hi uint64 // usable index range
}

func (s source) name() string {
	if s.entry != nil {
		return s.entry.File
	}
	return s.dir
}

// errStop ends a journal walk once the target is met.
var errStop = errors.New("target reached")

// replayBatch is the number of records applied in one transaction: larger
// bbolt transactions (8k, 32k) measured more CPU and allocations per record.
var replayBatch = 1024

// replay applies records after the full up to the target, choosing at each
// point the source that reaches furthest.
func (r *run) replay(ctx context.Context, full backup.Entry, t Target) error {
	defer r.dropPrefetch()
	srcs, err := r.sources(full)
	if err != nil {
		return err
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		next := r.st.AppliedIndex() + 1
		if t.Index != 0 && next > t.Index {
			return nil
		}
		best := pick(srcs, next)
		if best < 0 {
			// Nothing continues from here. Anything later means a hole.
			var after []source
			for _, s := range srcs {
				if s.lo > next {
					after = append(after, s)
				}
			}
			if len(after) > 0 {
				slices.SortFunc(after, func(a, b source) int { return cmp.Compare(a.lo, b.lo) })
				return r.gap(next, after[0].lo-1, after[0].name(), t)
			}
			if len(r.missing) > 0 {
				return fmt.Errorf("%w: records from %d on were in %v, which the catalog lists but %s no longer has. The last point that can be reached is index %d (%s); restoring to it is an explicit choice: --to-index %d",
					ErrGap, next, r.missing, r.opts.From.Location(), next-1, r.lastT.UTC().Format(time.RFC3339), next-1)
			}
			return nil
		}
		s := srcs[best]
		srcs = slices.Delete(srcs, best, best+1)
		// This file may have been fetched while the one before it was
		// applied; the file that continues it is fetched while it is.
		f := r.takePrefetch(s.entry)
		r.dropPrefetch()
		if n := pick(srcs, s.hi+1); n >= 0 && srcs[n].entry != nil && s.hi < targetIndex(t) {
			r.startPrefetch(ctx, srcs[n].entry)
		}
		if err := r.apply(ctx, s, t, f); err != nil {
			if errors.Is(err, dest.ErrNotFound) && r.st.AppliedIndex()+1 == next {
				// Listed but gone: another source may cover the range.
				r.missing = append(r.missing, s.name())
				r.event(Event{Phase: "replay", Note: err.Error()})
				continue
			}
			if errors.Is(err, errStop) {
				r.stopped = true
				return r.flush()
			}
			return err
		}
		if err := r.flush(); err != nil {
			return err
		}
		if r.st.AppliedIndex() < min(s.hi, targetIndex(t)) && !r.stopped {
			return fmt.Errorf("%w: %s should hold records up to %d but ends at %d", ErrGap, s.name(), s.hi, r.st.AppliedIndex())
		}
	}
}

// pick is the source to continue from index next: the one that reaches
// furthest (a raw journal on a tie); -1 if none covers next.
func pick(srcs []source, next uint64) int {
	best := -1
	for i, s := range srcs {
		if s.lo <= next && s.hi >= next && (best < 0 || s.hi > srcs[best].hi || s.hi == srcs[best].hi && s.dir != "") {
			best = i
		}
	}
	return best
}

// prefetch is a backup file downloaded and opened in the background.
type prefetch struct {
	entry  *backup.Entry
	dir    string
	cancel context.CancelFunc
	done   chan struct{}
	p      *payload
	err    error
}

func (r *run) startPrefetch(ctx context.Context, e *backup.Entry) {
	r.pipe.parts++
	ctx, cancel := context.WithCancel(ctx)
	f := &prefetch{entry: e, dir: filepath.Join(r.staging, fmt.Sprintf("part-%d", r.pipe.parts)), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(f.done)
		// No progress events: they are reported from the restore's own
		// goroutine when the file is used.
		f.p, f.err = fetch(ctx, r.opts.From, *e, r.opts.Keys, f.dir, nil)
	}()
	r.pipe.prefetched = f
}

// takePrefetch hands over the fetch of e, if one was started.
func (r *run) takePrefetch(e *backup.Entry) *prefetch {
	f := r.pipe.prefetched
	if f == nil || f.entry != e {
		return nil
	}
	r.pipe.prefetched = nil
	return f
}

// result waits for the fetch to end.
func (f *prefetch) result() (*payload, error) {
	<-f.done
	f.cancel()
	return f.p, f.err
}

// dropPrefetch stops and discards a fetch that was not used.
func (r *run) dropPrefetch() {
	f := r.pipe.prefetched
	if f == nil {
		return
	}
	r.pipe.prefetched = nil
	f.cancel()
	<-f.done
	if f.p != nil {
		f.p.wipe()
	}
	r.removeAll(f.dir)
}

func targetIndex(t Target) uint64 {
	if t.Index != 0 {
		return t.Index
	}
	return ^uint64(0)
}

func (r *run) gap(from, to uint64, nextFile string, t Target) error {
	gone := ""
	if len(r.missing) > 0 {
		gone = fmt.Sprintf("; listed in the catalog but gone: %v", r.missing)
	}
	return fmt.Errorf("%w: records %d-%d are missing (no incremental backup, archived segment or journal given covers them%s; the next file, %s, starts at %d). The last point that can be reached is index %d (%s); restoring to it is an explicit choice: --to-index %d",
		ErrGap, from, to, gone, nextFile, to+1, from-1, r.lastT.UTC().Format(time.RFC3339), from-1)
}

// sources lists what can continue the full: its incrementals, archived
// segments of the lineage, and the raw journals given.
func (r *run) sources(full backup.Entry) ([]source, error) {
	var out []source
	for i := range r.cat.Entries {
		e := &r.cat.Entries[i]
		switch e.Kind {
		case backup.KindIncremental:
			if e.BaseFullID != full.ID {
				continue
			}
		case backup.KindSegment:
		default:
			continue
		}
		lo, hi, ok := r.lin.clip(*e)
		if !ok || hi <= full.LastIndex {
			continue
		}
		out = append(out, source{entry: e, lo: max(lo, full.LastIndex+1), hi: hi})
	}
	for _, dir := range r.opts.Journals {
		segs, err := journal.ListSegments(dir)
		if err != nil {
			return nil, fmt.Errorf("journal %s: %w", dir, err)
		}
		tl, err := state.ReadTimelineFile(dir)
		if err != nil {
			return nil, err
		}
		tlo, thi, ok := r.lin.span(tl.ID)
		if !ok {
			return nil, fmt.Errorf("journal %s holds timeline %d, which is not part of timeline %d's history (%v): after a restore the mirror continues in %s.tlN; give that directory",
				dir, tl.ID, r.lin[len(r.lin)-1].ID, r.lin, filepath.Base(dir))
		}
		var lo, hi uint64
		for _, s := range segs {
			if s.Records == 0 {
				continue
			}
			if lo == 0 {
				lo = s.FirstIndex
			}
			hi = s.LastIndex
		}
		lo, hi = max(lo, tlo), min(hi, thi)
		if hi > full.LastIndex && lo <= hi {
			out = append(out, source{dir: dir, lo: max(lo, full.LastIndex+1), hi: hi})
			r.sum.Journals = append(r.sum.Journals, dir)
		}
	}
	return out, nil
}

// apply replays one source's records from the applied index on; f, if not
// nil, is the fetch of its file started earlier.
func (r *run) apply(ctx context.Context, s source, t Target, f *prefetch) error {
	dir, raw := s.dir, s.dir != ""
	if !raw {
		part := filepath.Join(r.staging, "part")
		var p *payload
		var err error
		if f != nil {
			p, err = f.result()
			part = f.dir
			if err == nil {
				r.event(Event{Phase: "download", File: s.entry.File, Bytes: s.entry.Size, Total: s.entry.Size})
			}
		} else {
			p, err = fetch(ctx, r.opts.From, *s.entry, r.opts.Keys, part, r.dl(s.entry.File, s.entry.Size))
		}
		if err != nil {
			return err
		}
		defer os.RemoveAll(part)
		if p.keys != nil {
			// An incremental carries the master keys current when it was
			// taken: a rotation since the full needs them.
			r.rings = append(r.rings, p.keys)
			r.keysRead = append(r.keysRead, s.entry.File)
			p.keys = nil
			if err := r.unseal(); err != nil {
				return err
			}
		}
		p.wipe()
		dir = p.journal
		r.sum.Files = append(r.sum.Files, s.entry.File)
	}
	err := journal.Read(dir, r.bar, func(seg journal.SegmentInfo, rec journal.Record) error {
		next := r.nextIndex()
		if rec.Index < next {
			return nil
		}
		if rec.Index > s.hi {
			return errLimit
		}
		if rec.Index != next {
			return fmt.Errorf("%w: %s: record %d follows %d: records %d-%d are missing; the last point that can be reached is index %d (--to-index %d)",
				ErrGap, s.name(), rec.Index, next-1, next, rec.Index-1, next-1, next-1)
		}
		if t.Index != 0 && rec.Index > t.Index {
			return errStop
		}
		if !t.Time.IsZero() && rec.Time.After(t.Time) {
			return errStop
		}
		r.pending = append(r.pending, rec)
		if rec.Time.After(r.lastT) {
			r.lastT = rec.Time
		}
		typ := state.Type(rec.Type)
		keyChange := typ == state.TypeDEKCreate || typ == state.TypeDEKRewrap || typ == state.TypeClusterInit
		if keyChange {
			if err := r.flush(); err != nil {
				return err
			}
			if err := r.unseal(); err != nil {
				return fmt.Errorf("record %d changed the data keys: %w", rec.Index, err)
			}
		} else if len(r.pending) >= replayBatch {
			if err := r.queue(); err != nil {
				return err
			}
		}
		if t.Point != "" && typ == state.TypeRestorePoint && pointName(rec.Payload) == t.Point {
			if err := r.flush(); err != nil {
				return err
			}
			return errStop
		}
		if t.Index != 0 && rec.Index == t.Index {
			if err := r.flush(); err != nil {
				return err
			}
			return errStop
		}
		return nil
	})
	if errors.Is(err, errLimit) {
		err = nil
	}
	var ce *journal.CorruptError
	if raw && errors.As(err, &ce) && ce.Torn {
		// The mirror's last write was cut by the crash: everything
		// acknowledged was fsynced before it.
		r.event(Event{Phase: "replay", Note: fmt.Sprintf("journal %s ends with a torn record (dropped): %v", dir, err)})
		err = nil
	}
	if err != nil && !errors.Is(err, errStop) {
		// Nothing may stay in flight: the caller closes the store next.
		r.pending = nil
		r.wait() // #nosec G104 -- the batch's own error is second to err, which ends the restore
		return fmt.Errorf("replay %s: %w", s.name(), err)
	}
	if ferr := r.flush(); ferr != nil {
		return ferr
	}
	return err
}

var errLimit = errors.New("end of the usable range")

// replayPipe is what a replay has in flight besides the record it reads.
type replayPipe struct {
	inflight   *inflight // a batch being applied
	prefetched *prefetch // the next backup file, being fetched
	parts      int       // prefetch directories made
}

// inflight is a batch the store applies while the next one is read,
// decrypted and decoded.
type inflight struct {
	done chan error
	n    int
	last uint64 // index of its last record
}

// nextIndex is the index the next record read must have.
func (r *run) nextIndex() uint64 {
	last := r.st.AppliedIndex()
	if r.pipe.inflight != nil {
		last = r.pipe.inflight.last
	}
	return last + uint64(len(r.pending)) + 1
}

// queue prepares the pending records and hands them to the store, which
// applies them in the background once the batch before them is applied.
// After an error nothing is left in flight.
func (r *run) queue() error {
	if len(r.pending) == 0 {
		return nil
	}
	b, err := state.PrepareReplay(r.pending, r.term)
	if werr := r.wait(); err == nil {
		err = werr
	}
	if err != nil {
		return err
	}
	last := r.pending[len(r.pending)-1].Index
	r.pending = nil
	done := make(chan error, 1)
	st := r.st // the goroutine must not read r.st, which undo clears
	go func() { done <- st.ApplyReplay(b) }()
	r.pipe.inflight = &inflight{done: done, n: b.Len(), last: last}
	return nil
}

// wait waits for the batch in flight, if any, to be applied.
func (r *run) wait() error {
	f := r.pipe.inflight
	if f == nil {
		return nil
	}
	r.pipe.inflight = nil
	if err := <-f.done; err != nil {
		return err
	}
	r.sum.Records += f.n
	r.event(Event{Phase: "replay", Index: r.st.AppliedIndex()})
	return nil
}

// flush applies every record read so far before it returns.
func (r *run) flush() error {
	if err := r.queue(); err != nil {
		return err
	}
	return r.wait()
}

// pointName reads the name out of a restore-point record's command.
func pointName(payload []byte) string {
	cmd, err := state.UnmarshalCommand(payload)
	if err != nil {
		return ""
	}
	var rp state.RestorePoint
	if json.Unmarshal(cmd.Body, &rp) != nil {
		return ""
	}
	return rp.Name
}

// checkReached fails when the target was not met.
func (r *run) checkReached(t Target) error {
	applied := r.st.AppliedIndex()
	switch {
	case t.Index != 0:
		if applied < t.Index {
			return fmt.Errorf("%w: index %d asked, but the backups on %s reach only index %d (%s): restore --to-index %d, or find the missing archive",
				ErrGap, t.Index, r.opts.From.Location(), applied, r.lastT.UTC().Format(time.RFC3339), applied)
		}
	case t.Point != "":
		if _, ok := r.restorePoint(t.Point); ok {
			return nil
		}
		return r.pointElsewhere(t.Point)
	case !t.Time.IsZero():
		if !r.stopped && r.knownUntil().Before(t.Time) {
			return fmt.Errorf("%w: time %s asked, but the backups on %s reach only %s (index %d): nothing is known of what happened after that; restore --to-time %s or --to latest explicitly",
				ErrGap, t.Time.UTC().Format(time.RFC3339), r.opts.From.Location(), r.knownUntil().UTC().Format(time.RFC3339), applied, r.knownUntil().UTC().Format(time.RFC3339))
		}
	}
	return nil
}

// knownUntil is the newest time the replayed history is known to cover:
// the full's time, or the newest record replayed after it. (A segment's
// shipping or closing time is no proof: a record made before it may sit in
// a later segment that is missing or was never shipped.)
func (r *run) knownUntil() time.Time {
	return r.lastT
}

// pointElsewhere explains a restore point missing from the lineage: it may
// exist on an abandoned timeline.
func (r *run) pointElsewhere(name string) error {
	var names []string
	if rps, err := r.st.RestorePoints(); err == nil {
		for _, rp := range rps {
			names = append(names, rp.Name)
		}
	}
	cur := r.lin[len(r.lin)-1].ID
	for i := range r.cat.Entries {
		e := r.cat.Entries[i]
		if e.Kind != backup.KindSegment && e.Kind != backup.KindIncremental {
			continue
		}
		if _, _, ok := r.lin.clip(e); ok && e.TimelineID() == cur {
			continue
		}
		idx, found := r.scanForPoint(e, name)
		if !found {
			continue
		}
		lo, hi, on := r.lin.span(e.TimelineID())
		why := fmt.Sprintf("timeline %d is not an ancestor of timeline %d", e.TimelineID(), cur)
		if on {
			why = fmt.Sprintf("timeline %d's history was used only up to index %d (indexes %d-%d) before timeline %d branched off", e.TimelineID(), hi, lo, hi, cur)
		}
		return fmt.Errorf("%w: restore point %q (index %d) was created on timeline %d, which was abandoned: %s. Restoring to it means going back to that abandoned history: add --timeline %d to do so deliberately",
			ErrNotOnTimeline, name, idx, e.TimelineID(), why, e.TimelineID())
	}
	return fmt.Errorf("restore point %q does not exist on timeline %d (restore points there: %v)", name, cur, names)
}

// scanForPoint looks for a restore point record in a backup file of another
// timeline. Restore point records are stored in clear, so no data key of
// that timeline is needed.
func (r *run) scanForPoint(e backup.Entry, name string) (uint64, bool) {
	dir := filepath.Join(r.staging, "scan")
	defer os.RemoveAll(dir)
	p, err := fetch(context.Background(), r.opts.From, e, r.opts.Keys, dir, nil)
	if err != nil || p.journal == "" {
		return 0, false
	}
	p.wipe()
	var idx uint64
	journal.Read(p.journal, nil, func(_ journal.SegmentInfo, rec journal.Record) error { // #nosec G104 -- only explains an error already being returned: a journal that cannot be read leaves that message less specific
		if state.Type(rec.Type) == state.TypeRestorePoint && rec.KeyID == 0 && pointName(rec.Payload) == name {
			idx = rec.Index
			return errStop
		}
		return nil
	})
	return idx, idx != 0
}
