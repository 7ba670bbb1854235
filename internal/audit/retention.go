package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/coffer-kms/coffer/internal/fsutil"
)

// AnchorFile holds where the chain starts after pruning (see FORMAT.md).
const AnchorFile = "audit.anchor"

// KindAnchor: audit.anchor is malformed, or the first record after it does
// not continue the chain it names.
const KindAnchor = "anchor"

// Anchor is the end of the pruned part of the log: the number of the newest
// removed file and the seq and hash of its last record. Verify and Open
// start the chain there. Seq 0 (hash of 64 zeros) when the removed files
// held no record.
type Anchor struct {
	File uint64 `json:"file"`
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"`
}

const (
	anchorPrefix = "coffer-audit-anchor v1 file="
	anchorLen    = len(anchorPrefix) + 20 + len(" seq=") + 20 + len(headMid) + 64 + 1
)

func (a Anchor) encode() []byte {
	return fmt.Appendf(nil, "%s%020d seq=%020d%s%s\n", anchorPrefix, a.File, a.Seq, headMid, a.Hash)
}

// FormatVersion is the version of the audit log's files (record lines,
// audit.head and audit.anchor) this build writes and reads.
const FormatVersion = 1

func parseAnchor(b []byte) (Anchor, error) {
	if v, ok := bytes.CutPrefix(b, []byte("coffer-audit-anchor v")); ok {
		if n, _, _ := bytes.Cut(v, []byte(" ")); string(n) != strconv.Itoa(FormatVersion) {
			if x, err := strconv.Atoi(string(n)); err == nil && x > FormatVersion {
				return Anchor{}, fmt.Errorf("%s format version %d, this build reads version %d", AnchorFile, x, FormatVersion)
			}
		}
	}
	if len(b) != anchorLen || !bytes.HasPrefix(b, []byte(anchorPrefix)) || b[anchorLen-1] != '\n' {
		return Anchor{}, fmt.Errorf("not a %d-byte %q line", anchorLen, strings.TrimSpace(anchorPrefix))
	}
	var a Anchor
	s := string(b[len(anchorPrefix) : anchorLen-1])
	fileS, rest, ok1 := strings.Cut(s, " seq=")
	seqS, hash, ok2 := strings.Cut(rest, headMid)
	var err1, err2 error
	a.File, err1 = strconv.ParseUint(fileS, 10, 64)
	a.Seq, err2 = strconv.ParseUint(seqS, 10, 64)
	a.Hash = hash
	if !ok1 || !ok2 || err1 != nil || err2 != nil || a.File == 0 || !isHash(a.Hash) || (a.Seq == 0) != (a.Hash == zeroHash) {
		return Anchor{}, errors.New("bad file, seq or hash field")
	}
	return a, nil
}

// ReadAnchor returns dir's anchor; ok=false when there is none (nothing was
// ever pruned). A malformed anchor is a *TamperError of kind KindAnchor.
func ReadAnchor(dir string) (a Anchor, ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(dir, AnchorFile))
	if errors.Is(err, os.ErrNotExist) {
		return Anchor{}, false, nil
	}
	if err != nil {
		return Anchor{}, false, fmt.Errorf("audit: read %s: %w", AnchorFile, err)
	}
	a, err = parseAnchor(b)
	if err != nil {
		return Anchor{}, false, &TamperError{File: AnchorFile, Kind: KindAnchor, Msg: "not a valid anchor: " + err.Error()}
	}
	return a, true, nil
}

// link is where the anchor puts the chain before the first remaining file.
func (a Anchor) link() link { return link{seq: a.Seq, hash: a.Hash, at: loc{file: AnchorFile}} }

// liveFiles lists the log files after the anchor, with the anchor. Files at
// or below the anchor's file number are left over from a prune that was
// interrupted after writing the anchor; they are no longer part of the log.
func liveFiles(dir string) ([]fileEnt, Anchor, bool, error) {
	a, ok, err := ReadAnchor(dir)
	if err != nil {
		return nil, Anchor{}, false, err
	}
	files, err := listFiles(dir)
	if err != nil {
		return nil, Anchor{}, false, fmt.Errorf("audit: list %s: %w", dir, err)
	}
	if ok {
		i := 0
		for i < len(files) && files[i].num <= a.File {
			i++
		}
		files = files[i:]
	}
	return files, a, ok, nil
}

// ClosedFile is a log file that no longer grows (every file but the last).
type ClosedFile struct {
	Num      uint64
	Name     string
	Path     string
	Size     int64
	FirstSeq uint64    // 0 if the file holds no record
	LastSeq  uint64    // 0 if the file holds no record
	LastTime time.Time // time of its last record; zero if none
}

// ClosedFiles lists the files Append no longer writes to, oldest first
// (pruned files are not listed). Their content never changes.
func (l *Log) ClosedFiles() ([]ClosedFile, error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, ErrClosed
	}
	var files []fileEnt
	for _, fe := range l.files {
		if fe.num < l.num {
			files = append(files, fe)
		}
	}
	l.mu.Unlock()
	out := make([]ClosedFile, 0, len(files))
	for _, fe := range files {
		p := filepath.Join(l.dir, fe.name)
		st, err := os.Stat(p)
		if err != nil {
			if fe.num <= l.prunedTo.Load() {
				continue // pruned meanwhile
			}
			return nil, fmt.Errorf("audit: %w", err)
		}
		cf := ClosedFile{Num: fe.num, Name: fe.name, Path: p, Size: st.Size(), FirstSeq: fe.first}
		raw, ok, err := tailLine(p)
		if err != nil {
			return nil, fmt.Errorf("audit: read the last record of %s: %w", fe.name, err)
		}
		if ok {
			var r struct {
				Seq  uint64    `json:"seq"`
				Time time.Time `json:"time"`
			}
			if err := json.Unmarshal(raw, &r); err != nil {
				return nil, &TamperError{File: fe.name, Line: countLines(p), Kind: KindEdited, Msg: "not a valid record: " + err.Error()}
			}
			cf.LastSeq, cf.LastTime = r.Seq, r.Time
			if cf.FirstSeq == 0 {
				cf.FirstSeq = readFirstSeq(p)
			}
		}
		out = append(out, cf)
	}
	return out, nil
}

// Prune removes the closed files numbered up to through (never the file
// Append writes to). It first checks their chain from the current anchor
// (a file that fails is not removed: the error is a *TamperError), then
// durably writes the new anchor - the seq and hash of the last removed
// record - and only then removes the files, oldest first. A crash between
// the two leaves files at or below the anchor, which Open and Verify ignore
// and the next Prune removes. It returns the anchor in force afterwards and
// the names of the removed files (none: the anchor is the old one, ok=false
// if there is none).
func (l *Log) Prune(through uint64) (a Anchor, removed []string, err error) {
	l.pruneMu.Lock()
	defer l.pruneMu.Unlock()
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return Anchor{}, nil, ErrClosed
	}
	var files []fileEnt
	for _, fe := range l.files {
		if fe.num <= through && fe.num < l.num {
			files = append(files, fe)
		}
	}
	l.mu.Unlock()

	old, haveOld, err := ReadAnchor(l.dir)
	if err != nil {
		return Anchor{}, nil, err
	}
	if len(files) == 0 {
		if !haveOld {
			return Anchor{}, nil, nil
		}
		return old, l.removeAnchored(old), nil
	}
	c := &checker{last: link{hash: zeroHash}}
	if haveOld {
		c.last = old.link()
	}
	prevNum := old.File
	for _, fe := range files {
		c.gapHint = missingFiles(prevNum, fe.num)
		prevNum = fe.num
		if err := checkFile(l.dir, fe, c); err != nil {
			return old, nil, fmt.Errorf("audit: not pruning %s: %w", fe.name, err)
		}
	}
	a = Anchor{File: files[len(files)-1].num, Seq: c.last.seq, Hash: c.last.hash}
	if err := fsutil.WriteFile(filepath.Join(l.dir, AnchorFile), a.encode()); err != nil {
		return old, nil, fmt.Errorf("audit: write %s: %w", AnchorFile, err)
	}
	l.prunedTo.Store(a.File)
	l.mu.Lock()
	i := 0
	for i < len(l.files) && l.files[i].num <= a.File {
		i++
	}
	l.files = append([]fileEnt(nil), l.files[i:]...)
	l.mu.Unlock()
	l.log.Info("audit: pruned files; the chain now starts after the anchor",
		"through_file", fileName(a.File), "anchor_seq", a.Seq, "anchor_hash", a.Hash)
	return a, l.removeAnchored(a), nil
}

// removeAnchored removes files at or below the anchor, oldest first, and
// fsyncs the directory. Failures are logged: the files are no longer part
// of the log, the next Prune tries again.
func (l *Log) removeAnchored(a Anchor) []string {
	all, err := listFiles(l.dir)
	if err != nil {
		l.log.Warn("audit: list files to prune", "err", err)
		return nil
	}
	var removed []string
	for _, fe := range all {
		if fe.num > a.File {
			break
		}
		if err := os.Remove(filepath.Join(l.dir, fe.name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			l.log.Warn("audit: remove a pruned file", "file", fe.name, "err", err)
			continue
		}
		removed = append(removed, fe.name)
	}
	if len(removed) > 0 {
		if err := fsutil.SyncDir(l.dir); err != nil {
			l.log.Warn("audit: fsync after pruning", "err", err)
		}
	}
	return removed
}

// checkFile feeds every line of a closed file to c.
func checkFile(dir string, fe fileEnt, c *checker) error {
	f, err := os.Open(filepath.Join(dir, fe.name))
	if err != nil {
		return err
	}
	defer f.Close()
	err = scanLines(f, func(n int, _ int64, raw []byte, partial bool) error {
		if partial {
			return &TamperError{File: fe.name, Line: n, Seq: c.last.seq + 1, Kind: KindTruncated,
				Msg: fmt.Sprintf("partial last line (%d bytes without a newline)", len(raw))}
		}
		if te := c.feed(loc{file: fe.name, line: n}, raw); te != nil {
			return te
		}
		return nil
	})
	var tl *lineTooLongError
	if errors.As(err, &tl) {
		return &TamperError{File: fe.name, Line: tl.line, Seq: c.last.seq + 1, Kind: KindEdited,
			Msg: fmt.Sprintf("line longer than %d bytes", maxLineBytes)}
	}
	return err
}

// FileName is the name of log file num (audit-NNNNNNNN.log).
func FileName(num uint64) string { return fileName(num) }

// VerifyFiles checks the chain through log files copied without audit.head
// or audit.anchor (for example fetched from a backup destination): every
// line of every file in dir, in number order, with no gap between files.
// The chain starts at the first record of the first file: at seq 1 its prev
// must be 64 zeros, a later first record's prev is taken as given (compare
// it with what precedes it elsewhere). Nothing says where such a copy ends:
// compare Report.LastSeq and LastHash with the node's audit.anchor or with
// the next record's prev.
func VerifyFiles(dir string) (Report, error) {
	rep := Report{LastHash: zeroHash}
	files, err := listFiles(dir)
	if err != nil {
		return rep, fmt.Errorf("audit: verify: %w", err)
	}
	rep.Files = len(files)
	c := &checker{last: link{hash: zeroHash}}
	started := false
	prevNum := uint64(0)
	for _, fe := range files {
		if started {
			c.gapHint = missingFiles(prevNum, fe.num)
		}
		prevNum = fe.num
		p := filepath.Join(dir, fe.name)
		if !started {
			if raw, ok, _ := firstLine(p); ok {
				seq, prev, perr := parseLine(raw)
				if perr != nil {
					return rep, &TamperError{File: fe.name, Line: 1, Kind: KindEdited, Msg: "not a valid record: " + perr.Error()}
				}
				if seq > 1 {
					c.last = link{seq: seq - 1, hash: prev, at: loc{file: "(before " + fe.name + ")"}}
				}
				rep.FirstSeq = seq
				started = true
			}
		}
		before := c.last.seq
		if err := checkFile(dir, fe, c); err != nil {
			return rep, err
		}
		rep.Records += c.last.seq - before
	}
	rep.LastSeq, rep.LastHash = c.last.seq, c.last.hash
	if rep.Records == 0 {
		rep.FirstSeq, rep.LastSeq, rep.LastHash = 0, 0, zeroHash
	}
	return rep, nil
}

// firstLine returns the first line of path (without its newline).
func firstLine(path string) ([]byte, bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	var out []byte
	stop := errors.New("stop")
	err = scanLines(f, func(_ int, _ int64, raw []byte, partial bool) error {
		if !partial {
			out = append([]byte(nil), raw...)
		}
		return stop
	})
	if err != nil && err != stop {
		return nil, false, err
	}
	return out, out != nil, nil
}
