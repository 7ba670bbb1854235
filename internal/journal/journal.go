// Package journal is Coffer's recovery journal: every command the state
// machine applies is appended as a framed, checksummed (CRC-32C), optionally
// encrypted record to segment files named <name>-<YYYYMMDDhhmmss>.recovery.
// Segments rotate by size, by age, on request (SIGUSR2, API); a closed segment
// ends with a footer. Verify checks a journal offline and reports the first bad
// record by file and byte offset; Open repairs only a torn tail of the last,
// unclosed segment. The byte format is described in FORMAT.md.
//
// The journal never encrypts by itself: it calls the caller's Cipher, and it
// never puts payload bytes into errors.
package journal

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/coffer-kms/coffer/internal/fsutil"
)

// Cipher is provided by the caller (Coffer's barrier: AES-256-GCM under data keys).
type Cipher interface {
	// Seal encrypts plaintext under key keyID, binding aad; output includes its nonce.
	Seal(keyID uint32, plaintext, aad []byte) ([]byte, error)
	Open(keyID uint32, ciphertext, aad []byte) ([]byte, error)
}

// Record is one journal entry.
type Record struct {
	Index   uint64    // raft index; strictly increasing across the journal
	Prev    uint64    // index of the previous record (0 for the very first); filled in by Append, checked by readers
	Time    time.Time // leader timestamp (stored as unix nanoseconds, UTC; the zero Time is stored as 0)
	Type    uint16    // command type (opaque, except TypeSegmentEnd which is reserved)
	KeyID   uint32    // data key used; 0 = payload stored in clear
	Payload []byte    // plaintext on Append; plaintext on read (nil when read without a Cipher and KeyID != 0)
}

// Options configure Open.
type Options struct {
	Dir             string
	Name            string           // segment name prefix; [A-Za-z0-9_.-]+ (at most 200 bytes)
	MaxSegmentBytes int64            // rotate before a write that would exceed it (footer included); 0 => 64 MiB
	MaxSegmentAge   time.Duration    // rotate before a write when the open segment is older; 0 => off
	Now             func() time.Time // nil => time.Now
	// StartAfter is the index the journal continues from when the directory
	// holds no segment yet (a restored node's journal begins after the
	// restored index); ignored otherwise.
	StartAfter uint64
}

// SegmentInfo describes one segment file.
type SegmentInfo struct {
	Name                  string
	Path                  string
	FirstIndex, LastIndex uint64 // 0,0 if empty
	Prev                  uint64 // last index of the journal before this segment (from the header)
	Records               int
	Size                  int64
	Created               time.Time
	Closed                bool      // has its TypeSegmentEnd footer
	ClosedAt              time.Time // when the footer was written (zero if open)
}

// ErrClosed is returned by operations on a closed Journal.
var ErrClosed = errors.New("journal is closed")

// segFile is the open segment as the writer uses it (a hook for tests).
type segFile interface {
	io.WriterAt
	Truncate(size int64) error
	Sync() error
	Close() error
}

// Journal appends to a journal directory. It is safe for concurrent use.
type Journal struct {
	mu     sync.Mutex
	opts   Options
	segs   []SegmentInfo // oldest first; the last one is open iff f != nil
	f      segFile       // open segment, nil if none (closed Journal, or creation failed)
	size   int64         // end of the last good write in f
	dirty  bool          // a failed write could not be truncated back yet
	last   uint64        // last index in the journal
	lastTS time.Time     // timestamp in the newest segment's name
	repair *Repair
	closed bool
	buf    []byte

	wrap func(segFile) segFile // tests: wraps every segment opened for writing
}

// Open scans opts.Dir (creating it 0700), checks the chain of segments,
// reads the last segment in full, repairs only a torn tail of it when it is
// unclosed (see Repaired), and continues it or creates the next one. Closed
// segments before it are read by their header, first record and footer only
// (the cost of an open does not grow with the history); Verify reads every
// frame. Damage Open sees fails it with a *CorruptError.
func Open(opts Options) (*Journal, error) { return openWith(opts, nil) }

func openWith(opts Options, wrap func(segFile) segFile) (*Journal, error) {
	if opts.Dir == "" {
		return nil, errors.New("journal: no directory")
	}
	if !optionName.MatchString(opts.Name) || len(opts.Name) > maxOptionName {
		return nil, fmt.Errorf("journal: invalid segment name prefix %q (want [A-Za-z0-9_.-]+, at most %d bytes)", opts.Name, maxOptionName)
	}
	if opts.MaxSegmentBytes < 0 || opts.MaxSegmentAge < 0 {
		return nil, errors.New("journal: negative segment limit")
	}
	if opts.MaxSegmentBytes == 0 {
		opts.MaxSegmentBytes = DefaultMaxSegmentBytes
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if err := fsutil.EnsureDir(opts.Dir); err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	j := &Journal{opts: opts, wrap: wrap}
	segs, err := walk(opts.Dir, &scanOpts{closedByFooter: true})
	if err != nil {
		var ce *CorruptError
		if !errors.As(err, &ce) || !ce.Torn {
			return nil, err
		}
		s := &segs[len(segs)-1]
		f, err := os.OpenFile(s.info.Path, os.O_RDWR, 0)
		if err != nil {
			return nil, fmt.Errorf("journal: repair torn tail: %w", err)
		}
		if err := f.Truncate(s.goodEnd); err != nil {
			f.Close() // #nosec G104 -- closing after the failed truncate, which is the one returned
			return nil, fmt.Errorf("journal %s: repair torn tail: truncate to %d: %w", s.info.Name, s.goodEnd, err)
		}
		if err := f.Sync(); err != nil {
			f.Close() // #nosec G104 -- closing after the failed fsync, which is the one returned
			return nil, fmt.Errorf("journal %s: repair torn tail: fsync: %w", s.info.Name, err)
		}
		if err := f.Close(); err != nil {
			return nil, fmt.Errorf("journal %s: repair torn tail: %w", s.info.Name, err)
		}
		j.repair = &Repair{File: s.info.Name, Path: s.info.Path, Offset: s.goodEnd,
			DroppedBytes: s.info.Size - s.goodEnd, Reason: ce.Reason}
		s.info.Size = s.goodEnd
	}
	j.last = opts.StartAfter
	for _, s := range segs {
		j.segs = append(j.segs, s.info)
		j.last = s.last
	}
	if n := len(segs); n > 0 {
		j.lastTS, _ = parseSegmentName(segs[n-1].info.Name)
		if !segs[n-1].info.Closed {
			if err := j.openWriter(segs[n-1].info.Path, segs[n-1].info.Size); err != nil {
				return nil, err
			}
			return j, nil
		}
	}
	if err := j.createSegment(opts.Now()); err != nil {
		return nil, err
	}
	return j, nil
}

// openWriter opens path, whose good content is size bytes, for appending.
func (j *Journal) openWriter(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close() // #nosec G104 -- closing after an earlier error, which is the one returned; nothing was written through this handle
		return fmt.Errorf("journal: %w", err)
	}
	if st.Size() != size {
		f.Close() // #nosec G104 -- closing after an earlier error, which is the one returned; nothing was written through this handle
		return fmt.Errorf("journal %s: size changed while opening (%d, expected %d)", filepath.Base(path), st.Size(), size)
	}
	var sf segFile = f
	if j.wrap != nil {
		sf = j.wrap(sf)
	}
	j.f, j.size, j.dirty = sf, size, false
	return nil
}

// createSegment writes a new segment (header only, fsynced with its
// directory) and makes it the open one. Its name time is now, moved forward
// by whole seconds past the newest segment and any existing file.
func (j *Journal) createSegment(now time.Time) error {
	ts := now.UTC().Truncate(time.Second)
	if !j.lastTS.IsZero() && !ts.After(j.lastTS) {
		ts = j.lastTS.Add(time.Second)
	}
	var name, path string
	for {
		name = segmentName(j.opts.Name, ts)
		path = filepath.Join(j.opts.Dir, name)
		_, err := os.Lstat(path)
		if errors.Is(err, os.ErrNotExist) {
			break
		}
		if err != nil {
			return fmt.Errorf("journal: create segment: %w", err)
		}
		ts = ts.Add(time.Second)
	}
	created := fromNanos(toNanos(now))
	hdr := encodeHeader(name, created, j.last)
	if err := fsutil.WriteFile(path, hdr); err != nil {
		return fmt.Errorf("journal: create segment: %w", err)
	}
	j.lastTS = ts
	j.segs = append(j.segs, SegmentInfo{Name: name, Path: path, Prev: j.last, Size: int64(len(hdr)), Created: created})
	if err := j.openWriter(path, int64(len(hdr))); err != nil {
		// Remove the empty segment so that a retry does not leave an
		// unclosed segment followed by another.
		j.segs = j.segs[:len(j.segs)-1]
		if rerr := fsutil.Remove(path); rerr != nil {
			return errors.Join(err, fmt.Errorf("journal: remove unused segment: %w", rerr))
		}
		return err
	}
	return nil
}

// Repaired describes the torn tail Open removed, or is nil.
func (j *Journal) Repaired() *Repair {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.repair == nil {
		return nil
	}
	r := *j.repair
	return &r
}

// LastIndex is the index of the last record in the journal (or the Prev of
// the first segment if the journal holds no record).
func (j *Journal) LastIndex() uint64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.last
}

// Append writes recs with one write call and no fsync. Records with Index <=
// LastIndex() are skipped; the batch must otherwise have strictly increasing
// indexes. Prev of each written record is set (in recs too). Rotation by size
// or age happens before the batch. On a write error the segment is truncated
// back to its previous end and the error returned; Append can be retried.
// c may be nil if every KeyID is 0.
func (j *Journal) Append(recs []Record, c Cipher) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return ErrClosed
	}
	for i := 1; i < len(recs); i++ {
		if recs[i].Index <= recs[i-1].Index {
			return fmt.Errorf("journal: append: record %d follows %d in the batch: indexes must increase", recs[i].Index, recs[i-1].Index)
		}
	}
	start := 0
	for start < len(recs) && recs[start].Index <= j.last {
		start++
	}
	todo := recs[start:]
	if len(todo) == 0 {
		return nil
	}
	buf := j.buf[:0]
	prev := j.last
	for i := range todo {
		r := &todo[i]
		if r.Type == TypeSegmentEnd {
			return fmt.Errorf("journal: append: record %d: type %#x is reserved", r.Index, r.Type)
		}
		if !r.Time.IsZero() && (r.Time.Year() < 1678 || r.Time.Year() > 2261) {
			return fmt.Errorf("journal: append: record %d: time %v cannot be stored as unix nanoseconds", r.Index, r.Time)
		}
		var err error
		buf, err = appendFrame(buf, r.Index, prev, r.Time, r.Type, r.KeyID, r.Payload, c)
		if err != nil {
			return fmt.Errorf("journal: append: record %d: %w", r.Index, err)
		}
		prev = r.Index
	}
	if cap(buf) <= 4<<20 {
		j.buf = buf[:0]
	}
	now := j.opts.Now()
	if j.f == nil {
		if err := j.createSegment(now); err != nil {
			return err
		}
	}
	cur := &j.segs[len(j.segs)-1]
	if cur.Records > 0 && (j.size+int64(len(buf))+footerFrameLen > j.opts.MaxSegmentBytes ||
		j.opts.MaxSegmentAge > 0 && now.Sub(cur.Created) >= j.opts.MaxSegmentAge) {
		if _, err := j.rotate(now); err != nil {
			return err
		}
		cur = &j.segs[len(j.segs)-1]
	}
	if err := j.write(buf); err != nil {
		return err
	}
	prev = j.last
	for i := range todo {
		todo[i].Prev = prev
		prev = todo[i].Index
	}
	if cur.Records == 0 {
		cur.FirstIndex = todo[0].Index
	}
	cur.Records += len(todo)
	cur.LastIndex = prev
	cur.Size = j.size
	j.last = prev
	return nil
}

// write appends b at the end of the open segment; on failure it truncates
// the segment back so nothing half-written stays.
func (j *Journal) write(b []byte) error {
	name := j.segs[len(j.segs)-1].Name
	if j.dirty {
		if err := j.f.Truncate(j.size); err != nil {
			return fmt.Errorf("journal %s: truncate after a failed write: %w", name, err)
		}
		j.dirty = false
	}
	if _, err := j.f.WriteAt(b, j.size); err != nil {
		if terr := j.f.Truncate(j.size); terr != nil {
			j.dirty = true
		}
		return fmt.Errorf("journal %s: write: %w", name, err)
	}
	j.size += int64(len(b))
	return nil
}

// Sync fsyncs the open segment.
func (j *Journal) Sync() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return ErrClosed
	}
	if j.f == nil {
		return nil
	}
	if err := j.f.Sync(); err != nil {
		return fmt.Errorf("journal %s: fsync: %w", j.segs[len(j.segs)-1].Name, err)
	}
	return nil
}

// Rotate closes the open segment (footer, fsync) and starts a new one. If the
// open segment has no record it does nothing and returns that segment.
func (j *Journal) Rotate() (closed SegmentInfo, err error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return SegmentInfo{}, ErrClosed
	}
	now := j.opts.Now()
	if j.f == nil { // creating the next segment failed earlier
		var prev SegmentInfo
		if n := len(j.segs); n > 0 {
			prev = j.segs[n-1]
		}
		return prev, j.createSegment(now)
	}
	if cur := j.segs[len(j.segs)-1]; cur.Records == 0 {
		return cur, nil
	}
	return j.rotate(now)
}

// rotate closes the open segment and creates the next one. If only the
// creation fails, the closed segment is returned with the error and the next
// Append or Rotate creates it.
func (j *Journal) rotate(now time.Time) (SegmentInfo, error) {
	cur := &j.segs[len(j.segs)-1]
	before := j.size
	if err := j.write(footerFrame(j.last, uint32(cur.Records), now)); err != nil { // #nosec G115 -- a segment rotates long before 2^32 records (journal.max_segment_bytes)
		return *cur, err
	}
	if err := j.f.Sync(); err != nil {
		// Take the footer back: the segment stays open.
		j.size = before
		if terr := j.f.Truncate(before); terr != nil {
			j.dirty = true
		}
		return *cur, fmt.Errorf("journal %s: fsync: %w", cur.Name, err)
	}
	// The footer is durable: the segment is closed even if close(2) fails.
	cerr := j.f.Close()
	j.f = nil
	cur.Closed = true
	cur.ClosedAt = fromNanos(toNanos(now))
	cur.Size = j.size
	closed := *cur
	if err := j.createSegment(now); err != nil {
		return closed, err
	}
	if cerr != nil {
		return closed, fmt.Errorf("journal %s: close: %w", closed.Name, cerr)
	}
	return closed, nil
}

// Prune removes the oldest closed segments whose records all lie below
// index below (LastIndex < below), keeping at least keep closed segments and
// never the open one. It goes oldest first and stops at the first segment
// that must stay, so the journal never gets a hole: what remains still
// verifies (the chain is checked from the first segment present). It returns
// the segments it removed, also when a removal fails part way. limit > 0
// caps how many go in one call (each removal holds up appends).
func (j *Journal) Prune(below uint64, keep, limit int) ([]SegmentInfo, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return nil, ErrClosed
	}
	n := j.prunableLocked(below, keep, limit)
	var removed []SegmentInfo
	var err error
	for _, s := range j.segs[:n] {
		if rerr := os.Remove(s.Path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			err = fmt.Errorf("journal: prune %s: %w", s.Name, rerr)
			break
		}
		removed = append(removed, s)
	}
	j.segs = j.segs[len(removed):]
	if len(removed) > 0 {
		if serr := fsutil.SyncDir(j.opts.Dir); serr != nil && err == nil {
			err = fmt.Errorf("journal: prune: %w", serr)
		}
	}
	return removed, err
}

// Prunable lists the segments Prune(below, keep, limit) would remove.
func (j *Journal) Prunable(below uint64, keep, limit int) []SegmentInfo {
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]SegmentInfo(nil), j.segs[:j.prunableLocked(below, keep, limit)]...)
}

func (j *Journal) prunableLocked(below uint64, keep, limit int) int {
	closed := 0
	for _, s := range j.segs {
		if s.Closed {
			closed++
		}
	}
	n := 0
	for n < len(j.segs) && closed-n > max(keep, 0) && (limit <= 0 || n < limit) {
		s := j.segs[n]
		// The last segment is never removed, even when closed (a failed
		// creation of the next one): it carries the journal's last index.
		if !s.Closed || n == len(j.segs)-1 || (s.Records > 0 && s.LastIndex >= below) {
			break
		}
		n++
	}
	return n
}

// Segments lists the segments oldest first, including the open one.
func (j *Journal) Segments() []SegmentInfo {
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]SegmentInfo(nil), j.segs...)
}

// Close fsyncs and closes the open segment without writing a footer: the next
// Open continues it.
func (j *Journal) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.closed {
		return nil
	}
	j.closed = true
	if j.f == nil {
		return nil
	}
	name := j.segs[len(j.segs)-1].Name
	var err error
	if j.dirty {
		if terr := j.f.Truncate(j.size); terr != nil {
			err = fmt.Errorf("journal %s: truncate after a failed write: %w", name, terr)
		}
	}
	if serr := j.f.Sync(); serr != nil && err == nil {
		err = fmt.Errorf("journal %s: fsync: %w", name, serr)
	}
	if cerr := j.f.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("journal %s: close: %w", name, cerr)
	}
	j.f = nil
	return err
}

// FillGap writes the records missing in g (every index from g.From to g.To,
// read from get) as a new closed segment between g.Prev and g.Next, so that
// the journal is contiguous again: the repair for a segment moved aside,
// when the records are still available elsewhere (Coffer's raft log). The
// new segment is named opts.Name plus a timestamp strictly between those of
// g.Prev and g.Next, and created atomically (temp file, fsync, rename,
// fsync of the directory). Nothing else is changed; on error nothing is
// left behind. c may be nil if every KeyID is 0.
func FillGap(opts Options, g Gap, c Cipher, get func(index uint64) (Record, error)) (SegmentInfo, error) {
	if !optionName.MatchString(opts.Name) || len(opts.Name) > maxOptionName {
		return SegmentInfo{}, fmt.Errorf("journal: invalid segment name prefix %q", opts.Name)
	}
	if g.From == 0 || g.To < g.From || g.To-g.From >= 1<<32-1 {
		return SegmentInfo{}, fmt.Errorf("journal: fill gap: bad range %d-%d", g.From, g.To)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	files, err := listSegmentFiles(opts.Dir)
	if err != nil {
		return SegmentInfo{}, err
	}
	pi := -1
	for i, f := range files {
		if f.name == g.Prev {
			pi = i
		}
	}
	if pi < 0 || pi+1 >= len(files) || files[pi+1].name != g.Next {
		return SegmentInfo{}, fmt.Errorf("journal: fill gap %d-%d: segments %s and %s are no longer next to each other in %s", g.From, g.To, g.Prev, g.Next, opts.Dir)
	}
	var name, path string
	for ts := files[pi].ts.Add(time.Second); ts.Before(files[pi+1].ts); ts = ts.Add(time.Second) {
		n := segmentName(opts.Name, ts)
		p := filepath.Join(opts.Dir, n)
		if _, err := os.Lstat(p); errors.Is(err, os.ErrNotExist) {
			name, path = n, p
			break
		}
	}
	if name == "" {
		return SegmentInfo{}, fmt.Errorf("journal: fill gap %d-%d: no segment name is free between %s and %s", g.From, g.To, g.Prev, g.Next)
	}
	now := opts.Now()
	info := SegmentInfo{Name: name, Path: path, Prev: g.From - 1, FirstIndex: g.From, LastIndex: g.To,
		Created: fromNanos(toNanos(now)), Closed: true, ClosedAt: fromNanos(toNanos(now))}
	err = fsutil.WriteFileFrom(path, func(w io.Writer) error {
		buf := encodeHeader(name, now, g.From-1)
		size := int64(0)
		flush := func() error {
			n, err := w.Write(buf)
			size += int64(n)
			buf = buf[:0]
			return err
		}
		prev := g.From - 1
		for idx := g.From; idx <= g.To; idx++ {
			r, err := get(idx)
			if err != nil {
				return fmt.Errorf("record %d: %w", idx, err)
			}
			if r.Index != idx {
				return fmt.Errorf("record %d: got record %d instead", idx, r.Index)
			}
			if r.Type == TypeSegmentEnd {
				return fmt.Errorf("record %d: type %#x is reserved", idx, r.Type)
			}
			if buf, err = appendFrame(buf, idx, prev, r.Time, r.Type, r.KeyID, r.Payload, c); err != nil {
				return fmt.Errorf("record %d: %w", idx, err)
			}
			prev = idx
			if len(buf) >= 1<<20 {
				if err := flush(); err != nil {
					return err
				}
			}
		}
		buf = append(buf, footerFrame(g.To, uint32(g.To-g.From+1), now)...) // #nosec G115 -- a gap filler covers at most one segment: fewer records than a uint32 holds
		err := flush()
		info.Size = size
		return err
	})
	if err != nil {
		return SegmentInfo{}, fmt.Errorf("journal: fill gap %d-%d: %w", g.From, g.To, err)
	}
	info.Records = int(g.To - g.From + 1) // #nosec G115 -- at most one segment of records (see the footer above)
	return info, nil
}
