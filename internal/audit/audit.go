// Package audit is Coffer's audit log: one JSON line per audited request in
// files dir/audit-NNNNNNNN.log, each line carrying the SHA-256 of the line
// before it, so that an edited, removed or reordered record breaks the chain.
// A small head file (audit.head) holds the last seq and hash, so that records
// cut from the end are noticed too. Each line can be mirrored to syslog, an
// external copy an attacker on this host cannot rewrite. Verify checks a log
// offline and names the first bad record by file, line and seq; Open repairs
// only a torn final line. The format is described in FORMAT.md.
//
// Records never contain key material, passphrases or tokens: callers put
// object ids and names in them, never secrets.
package audit

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coffer-kms/coffer/internal/fsutil"
)

// Record is one audited request. It never contains key material, passphrases or tokens.
type Record struct {
	Seq       uint64    `json:"seq"`  // 1, 2, 3... assigned by Append
	Time      time.Time `json:"time"` // set by Append if zero; stored in UTC
	Prev      string    `json:"prev"` // hex SHA-256 of the previous record's encoded line (64 zeros for seq 1); set by Append
	Node      string    `json:"node,omitempty"`
	Actor     string    `json:"actor"` // e.g. "user:alice", "endpoint:db1", "root", "local"
	Roles     []string  `json:"roles,omitempty"`
	Source    string    `json:"source,omitempty"`    // remote address
	Transport string    `json:"transport,omitempty"` // rest, vault, kmip, socket
	Operation string    `json:"operation"`
	Objects   []string  `json:"objects,omitempty"` // object ids / names touched
	Result    string    `json:"result"`            // "ok" or an error code
	Status    int       `json:"status,omitempty"`
	Error     string    `json:"error,omitempty"`
	LatencyMS float64   `json:"latency_ms"`
}

// DefaultMaxFileBytes is the rotation size when Options.MaxFileBytes is 0.
const DefaultMaxFileBytes = 64 << 20

// Options configure Open.
type Options struct {
	// MaxFileBytes: a record that would take the current file past this
	// size goes into a new file (a file holds at least one record).
	// 0 => DefaultMaxFileBytes.
	MaxFileBytes int64
	// Syslog, if set, receives every record's JSON line (with its newline),
	// e.g. a *syslog.Writer from MirrorSyslog. Lines are handed to it from
	// a queue by a separate goroutine, so a slow or dead mirror never blocks
	// or fails Append; lines it cannot take are dropped and counted (see
	// MirrorStats), failures are counted and logged. Log never closes it.
	Syslog io.Writer
	// Logger receives warnings (torn tail repaired, mirror failing). nil => slog.Default().
	Logger *slog.Logger
}

// ErrClosed is returned by operations on a closed Log.
var ErrClosed = errors.New("audit: log is closed")

// Log appends to an audit directory. It is safe for concurrent use; only one
// Log (process) may have a directory open at a time (audit.head is flock'ed).
type Log struct {
	dir  string
	opts Options
	log  *slog.Logger

	mu      sync.Mutex
	f       *os.File // current file
	num     uint64   // its number
	size    int64    // end of its last good line
	dirty   bool     // a failed write could not be truncated away yet
	hash    string   // hex hash of the last line (zeroHash if none)
	files   []fileEnt
	headF   *os.File
	headBuf []byte
	line    []byte                  // the buffer of the line being appended
	latest  atomic.Pointer[headRec] // the chain's end, for writeHead

	headMu     sync.Mutex // writes of audit.head after open (headBuf, headErr, headSeq, headClosed)
	headSeq    uint64     // the seq audit.head was last written with
	headClosed bool       // Close has closed audit.head
	headErr    bool       // last head write failed (logged once per failure streak)
	closed     bool

	seq    atomic.Uint64 // last seq; written under mu
	mirror *mirror

	pruneMu  sync.Mutex    // one Prune at a time
	prunedTo atomic.Uint64 // number of the newest pruned file (0: none)
}

// Open opens (creating it 0700) the audit log in dir and resumes its chain.
//
// Open checks the last file completely and its link to the file before it,
// but not older files (use Verify). The only damage it repairs is a torn
// final line - bytes after the last newline of the last file, as a crash
// in the middle of a write leaves them - which it truncates away with a
// logged warning. Any other damage of the last file, or an audit.head that
// is ahead of the log (records cut from the end) or contradicts it, makes
// Open fail with a *TamperError naming the file and line: the log is not
// silently repaired or continued, so an operator notices. To resume after
// investigating, move the damaged files (or audit.head, which Open then
// recreates from the log with a warning) out of the directory.
func Open(dir string, opts Options) (*Log, error) {
	if dir == "" {
		return nil, errors.New("audit: no directory")
	}
	if opts.MaxFileBytes < 0 {
		return nil, errors.New("audit: negative MaxFileBytes")
	}
	if opts.MaxFileBytes == 0 {
		opts.MaxFileBytes = DefaultMaxFileBytes
	}
	lg := opts.Logger
	if lg == nil {
		lg = slog.Default()
	}
	if err := fsutil.EnsureDir(dir); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	l := &Log{dir: dir, opts: opts, log: lg, hash: zeroHash}
	if err := l.open(); err != nil {
		if l.f != nil {
			l.f.Close() // #nosec G104 -- closing after an earlier error, which is the one returned
		}
		if l.headF != nil {
			l.headF.Close() // #nosec G104 -- closing after an earlier error, which is the one returned
		}
		return nil, err
	}
	if opts.Syslog != nil {
		l.mirror = startMirror(opts.Syslog, lg)
	}
	return l, nil
}

func (l *Log) open() error {
	hp := filepath.Join(l.dir, HeadFile)
	hf, err := os.OpenFile(hp, os.O_RDWR|os.O_CREATE, fsutil.FileMode)
	if err != nil {
		return fmt.Errorf("audit: open %s: %w", hp, err)
	}
	l.headF = hf
	if err := syscall.Flock(int(hf.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return fmt.Errorf("audit: %s is in use by another process: %w", l.dir, err)
	}
	if err := hf.Chmod(fsutil.FileMode); err != nil {
		return fmt.Errorf("audit: set permissions on %s: %w", hp, err)
	}
	hd, haveHead, err := readHead(hf)
	if err != nil {
		var te *TamperError
		if errors.As(err, &te) {
			te.Msg += " (move it aside to let Open recreate it from the log)"
		}
		return err
	}

	files, anc, haveAnc, err := liveFiles(l.dir)
	if err != nil {
		return err
	}
	// The chain starts at the anchor when older files were pruned.
	start := link{hash: zeroHash}
	if haveAnc {
		start = anc.link()
		l.prunedTo.Store(anc.File)
	}
	if len(files) == 0 {
		if haveHead && hd.seq > start.seq {
			return &TamperError{Kind: KindTruncated, Seq: start.seq + 1,
				Msg: fmt.Sprintf("no log files in %s but %s records seq %d", l.dir, HeadFile, hd.seq)}
		}
		if err := l.createFile(anc.File + 1); err != nil {
			return err
		}
		l.hash = start.hash
		l.seq.Store(start.seq)
		return l.writeHeadAtOpen(start.seq, start.hash)
	}
	for i := range files[:len(files)-1] {
		files[i].first = readFirstSeq(filepath.Join(l.dir, files[i].name))
	}

	// Where the chain stands before the last file: the last line of the
	// nearest non-empty file before it (or the anchor).
	c := &checker{last: start}
	lastEnt := &files[len(files)-1]
	prevNum := anc.File
	for i := len(files) - 2; i >= 0; i-- {
		p := filepath.Join(l.dir, files[i].name)
		raw, ok, err := tailLine(p)
		if err != nil {
			if te := (*TamperError)(nil); errors.As(err, &te) {
				return te
			}
			return fmt.Errorf("audit: read %s: %w", p, err)
		}
		if !ok {
			continue
		}
		seq, _, perr := parseLine(raw)
		if perr != nil {
			return &TamperError{File: files[i].name, Line: countLines(p), Kind: KindEdited,
				Msg: "not a valid record: " + perr.Error()}
		}
		c.last = link{seq: seq, hash: hashHex(raw), at: loc{file: files[i].name}}
		prevNum = files[i].num
		break
	}
	if hint := missingFiles(prevNum, lastEnt.num); hint != "" {
		c.gapHint = hint
	}
	start = c.last

	// Check the last file, through the descriptor Append will use.
	p := filepath.Join(l.dir, lastEnt.name)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("audit: open %s: %w", p, err)
	}
	l.f, l.num = f, lastEnt.num
	if err := f.Chmod(fsutil.FileMode); err != nil {
		return fmt.Errorf("audit: set permissions on %s: %w", p, err)
	}
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("audit: stat %s: %w", p, err)
	}
	size := st.Size()
	var headAt *link // the record at hd.seq, if seen
	if haveHead && hd.seq == start.seq {
		s := start
		headAt = &s
	}
	var tornAt int64 = -1
	var lines int
	err = scanLines(io.NewSectionReader(f, 0, size), func(n int, off int64, raw []byte, partial bool) error {
		if partial {
			tornAt = off
			return nil
		}
		lines = n
		c.find = func(seq uint64) (loc, bool) {
			return findSeq(l.dir, files[len(files)-1:], 0, n, seq)
		}
		if te := c.feed(loc{file: lastEnt.name, line: n}, raw); te != nil {
			return te
		}
		if lastEnt.first == 0 {
			lastEnt.first = c.last.seq
		}
		if haveHead && c.last.seq == hd.seq {
			s := c.last
			headAt = &s
		}
		return nil
	})
	if err != nil {
		var te *TamperError
		var tl *lineTooLongError
		switch {
		case errors.As(err, &te):
			if te.Line == 0 && te.File != "" {
				te.Line = countLines(filepath.Join(l.dir, te.File))
			}
			return te
		case errors.As(err, &tl):
			return &TamperError{File: lastEnt.name, Line: tl.line, Seq: c.last.seq + 1, Kind: KindEdited,
				Msg: fmt.Sprintf("line longer than %d bytes", maxLineBytes)}
		}
		return fmt.Errorf("audit: read %s: %w", p, err)
	}
	if tornAt >= 0 {
		if err := f.Truncate(tornAt); err != nil {
			return fmt.Errorf("audit: repair torn tail of %s: truncate to %d: %w", lastEnt.name, tornAt, err)
		}
		if err := f.Sync(); err != nil {
			return fmt.Errorf("audit: repair torn tail of %s: fsync: %w", lastEnt.name, err)
		}
		l.log.Warn("audit: removed a torn final line (partial write, e.g. after a crash)",
			"file", lastEnt.name, "line", lines+1, "offset", tornAt, "dropped_bytes", size-tornAt)
		size = tornAt
	}

	last := c.last
	if haveHead {
		switch {
		case hd.seq > last.seq:
			return &TamperError{File: lastEnt.name, Line: lines + 1, Seq: last.seq + 1, Kind: KindTruncated,
				Msg: fmt.Sprintf("log ends at seq %d but %s records seq %d", last.seq, HeadFile, hd.seq)}
		case headAt != nil && headAt.hash != hd.hash:
			if hd.seq == last.seq {
				line := last.at.line
				if line == 0 {
					line = countLines(filepath.Join(l.dir, last.at.file))
				}
				return &TamperError{File: last.at.file, Line: line, Seq: last.seq, Kind: KindEdited,
					Msg: fmt.Sprintf("record hash does not match %s (the record or %s was modified)", HeadFile, HeadFile)}
			}
			return &TamperError{File: HeadFile, Seq: hd.seq, Kind: KindHead,
				Msg: fmt.Sprintf("hash for seq %d does not match the log (move it aside to let Open recreate it from the log)", hd.seq)}
		case headAt == nil:
			l.log.Warn("audit: audit.head lags the log; not checked", "head_seq", hd.seq, "last_seq", last.seq)
		}
	} else if last.seq > 0 {
		l.log.Warn("audit: audit.head missing; recreating it from the log", "last_seq", last.seq)
	}

	l.size = size
	l.files = files
	l.hash = last.hash
	l.seq.Store(last.seq)
	return l.writeHeadAtOpen(last.seq, last.hash)
}

// writeHeadAtOpen (re)writes the head file and fsyncs it once.
func (l *Log) writeHeadAtOpen(seq uint64, hash string) error {
	l.headBuf = appendHead(l.headBuf[:0], seq, hash)
	if _, err := l.headF.WriteAt(l.headBuf, 0); err != nil {
		return fmt.Errorf("audit: write %s: %w", HeadFile, err)
	}
	if err := l.headF.Truncate(int64(len(l.headBuf))); err != nil {
		return fmt.Errorf("audit: write %s: %w", HeadFile, err)
	}
	if err := l.headF.Sync(); err != nil {
		return fmt.Errorf("audit: write %s: fsync: %w", HeadFile, err)
	}
	l.headSeq = seq
	l.latest.Store(&headRec{seq: seq, hash: hash})
	return nil
}

// createFile creates log file num (0600, directory fsynced) and makes it current.
func (l *Log) createFile(num uint64) error {
	name := fileName(num)
	p := filepath.Join(l.dir, name)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, fsutil.FileMode)
	if err != nil {
		return fmt.Errorf("audit: create %s: %w", p, err)
	}
	if err := fsutil.SyncDir(l.dir); err != nil {
		f.Close() // #nosec G104 -- a new, empty file closed after an earlier error, which is the one returned
		if rerr := os.Remove(p); rerr != nil {
			l.log.Warn("audit: remove unused new file", "file", name, "err", rerr)
		}
		return fmt.Errorf("audit: create %s: %w", p, err)
	}
	if l.f != nil {
		if err := l.f.Sync(); err != nil {
			l.log.Error("audit: fsync of finished file failed", "file", fileName(l.num), "err", err)
		}
		l.f.Close() // #nosec G104 -- after the Sync above (its failure logged): Close cannot lose more
	}
	l.f, l.num, l.size, l.dirty = f, num, 0, false
	l.files = append(l.files, fileEnt{num: num, name: name})
	return nil
}

// Append assigns r its Seq, Prev and (if zero) Time, writes it as one JSON
// line with a single write, and returns the stored record. It does not
// fsync: a process crash loses nothing, a machine crash may lose the last
// records (Sync, Close and rotation fsync).
func (l *Log) Append(r Record) (Record, error) {
	// Everything after the chain fields depends on r alone: encoded before
	// the lock, so that appends from many requests overlap there.
	tp := tailPool.Get().(*[]byte)
	defer func() {
		if cap(*tp) <= maxPooledLine {
			tailPool.Put(tp)
		}
	}()
	tail, err := appendTail((*tp)[:0], &r)
	*tp = tail
	if err != nil {
		return Record{}, fmt.Errorf("audit: append: encode: %w", err)
	}

	l.mu.Lock()
	r, line, err := l.appendLocked(r, tail)
	if err != nil {
		l.mu.Unlock()
		return Record{}, err
	}
	seq := r.Seq
	l.latest.Store(&headRec{seq: seq, hash: l.hash})
	if l.mirror != nil {
		l.mirror.send(bytes.Clone(line)) // line's buffer is the next append's
	}
	l.mu.Unlock()
	l.writeHead(seq)
	return r, nil
}

// appendLocked writes r's line (its chain fields, then tail) to the
// current file and advances the chain; l.mu is held.
func (l *Log) appendLocked(r Record, tail []byte) (Record, []byte, error) {
	if l.closed {
		return Record{}, nil, ErrClosed
	}
	if l.dirty {
		if err := l.f.Truncate(l.size); err != nil {
			return Record{}, nil, fmt.Errorf("audit: append: remove failed write from %s: %w", fileName(l.num), err)
		}
		l.dirty = false
	}
	seq := l.seq.Load() + 1
	r.Seq, r.Prev = seq, l.hash
	if r.Time.IsZero() {
		r.Time = time.Now()
	}
	r.Time = r.Time.UTC()
	line, err := appendChain(l.line[:0], seq, r.Time, r.Prev)
	if err != nil {
		return Record{}, nil, fmt.Errorf("audit: append seq %d: encode: %w", seq, err)
	}
	line = append(line, tail...)
	if cap(line) <= maxPooledLine {
		l.line = line
	}
	if len(line) > maxLineBytes {
		return Record{}, nil, fmt.Errorf("audit: append seq %d: record is %d bytes, more than %d", seq, len(line), maxLineBytes)
	}
	hash := hashHex(line)
	line = append(line, '\n')

	if l.size > 0 && l.size+int64(len(line)) > l.opts.MaxFileBytes {
		if err := l.createFile(l.num + 1); err != nil {
			return Record{}, nil, fmt.Errorf("audit: append seq %d: rotate: %w", seq, err)
		}
	}
	n, err := l.f.WriteAt(line, l.size)
	if err != nil {
		if n > 0 {
			if terr := l.f.Truncate(l.size); terr != nil {
				l.dirty = true
			}
		}
		return Record{}, nil, fmt.Errorf("audit: append seq %d to %s: %w", seq, fileName(l.num), err)
	}
	l.size += int64(n)
	l.hash = hash
	l.seq.Store(seq)
	if e := &l.files[len(l.files)-1]; e.first == 0 {
		e.first = seq
	}

	return r, line, nil
}

// headRec is the chain's end as audit.head records it.
type headRec struct {
	seq  uint64
	hash string
}

// writeHead brings audit.head to at least seq, the record just appended.
//
// The head is rewritten in place after every record: one pwrite of a
// fixed-length line, no fsync. Written after the record, it is never ahead
// of the log when the process dies (at worst behind by the records whose
// appends had not returned, which Open and Verify accept), and it is
// current when Append returns, so cutting even the last acknowledged
// record is detected. An atomic replace every N records would cost an
// fsync and a rename and leave the last N records open to undetected
// truncation. It is written outside the log's lock, under its own: the
// next record's write overlaps with it, and one pwrite of the latest head
// covers every append that waited for it.
func (l *Log) writeHead(seq uint64) {
	l.headMu.Lock()
	defer l.headMu.Unlock()
	if l.headSeq >= seq || l.headClosed {
		return
	}
	l.writeHeadLocked()
}

// writeHeadLocked writes the latest head; headMu is held.
func (l *Log) writeHeadLocked() {
	h := l.latest.Load()
	l.headBuf = appendHead(l.headBuf[:0], h.seq, h.hash)
	if _, err := l.headF.WriteAt(l.headBuf, 0); err != nil {
		if !l.headErr {
			l.log.Error("audit: cannot update audit.head; truncation of the log end would go unnoticed", "err", err)
		}
		l.headErr = true
		return
	}
	l.headErr = false
	l.headSeq = h.seq
}

// maxPooledLine is the largest line buffer kept for the next append.
const maxPooledLine = 16 << 10

// tailPool holds buffers for the part of a line encoded before the lock.
var tailPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// Count returns the seq of the last record (the number of records appended,
// over the life of the log).
func (l *Log) Count() uint64 { return l.seq.Load() }

// Sync fsyncs the current file and audit.head.
func (l *Log) Sync() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	return l.sync()
}

func (l *Log) sync() error {
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("audit: fsync %s: %w", fileName(l.num), err)
	}
	if err := l.headF.Sync(); err != nil {
		return fmt.Errorf("audit: fsync %s: %w", HeadFile, err)
	}
	return nil
}

// Close fsyncs and closes the log, then lets the syslog mirror drain its
// queue for a moment. Closing twice is not an error.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	// The head brought to the last record (an append may have written it
	// and not its head yet), then fsynced; no head write after that.
	l.headMu.Lock()
	if h := l.latest.Load(); l.headSeq < h.seq {
		l.writeHeadLocked()
	}
	l.headClosed = true
	err := l.sync()
	l.headMu.Unlock()
	if cerr := l.f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("audit: close %s: %w", fileName(l.num), cerr)
	}
	if cerr := l.headF.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("audit: close %s: %w", HeadFile, cerr)
	}
	m := l.mirror
	l.mu.Unlock()
	if m != nil {
		m.close()
	}
	return err
}

// MirrorStats counts what happened to lines handed to the syslog mirror.
type MirrorStats struct {
	Sent    uint64 // written to the mirror
	Failed  uint64 // the mirror's Write returned an error
	Dropped uint64 // the queue was full (mirror too slow or stuck)
}

// MirrorStats reports the syslog mirror's counters (zero without a mirror).
func (l *Log) MirrorStats() MirrorStats {
	if l.mirror == nil {
		return MirrorStats{}
	}
	return l.mirror.stats()
}
