package audit

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// File layout (see FORMAT.md).
const (
	HeadFile     = "audit.head"
	filePrefix   = "audit-"
	fileSuffix   = ".log"
	maxLineBytes = 1 << 20 // longest record line Append writes and readers accept
)

// Kinds of damage reported in TamperError.Kind.
const (
	KindEdited    = "edited"    // a record's bytes changed (hash no longer matches the chain or audit.head), or a line is not a valid record
	KindRemoved   = "removed"   // seq gap: records (or a whole file) missing from the middle or start
	KindReordered = "reordered" // a seq out of order: moved or duplicated records
	KindTruncated = "truncated" // records missing at the end (audit.head is ahead) or a partial last line
	KindHead      = "head"      // audit.head is missing, unreadable, or contradicts a record the chain confirms
)

// zeroHash is the prev of seq 1.
var zeroHash = strings.Repeat("0", 64)

// TamperError reports the first place where a log fails verification.
type TamperError struct {
	File string // base name of the log file (or HeadFile); "" if there is no log file at all
	Line int    // 1-based line in File; 0 if not about a line
	Seq  uint64 // the record concerned; for "removed" and "truncated" the first missing seq; for an unparseable line the seq expected there
	Kind string // one of the Kind* constants
	Msg  string

	transient bool // may be a write in progress (Verify of a live log retries)
}

func (e *TamperError) Error() string {
	var b strings.Builder
	b.WriteString("audit: ")
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			fmt.Fprintf(&b, " line %d", e.Line)
		}
		if e.Seq > 0 {
			fmt.Fprintf(&b, " (seq %d)", e.Seq)
		}
		b.WriteString(": ")
	} else if e.Seq > 0 {
		fmt.Fprintf(&b, "seq %d: ", e.Seq)
	}
	b.WriteString(e.Kind)
	b.WriteString(": ")
	b.WriteString(e.Msg)
	return b.String()
}

func fileName(num uint64) string { return fmt.Sprintf("%s%08d%s", filePrefix, num, fileSuffix) }

// parseFileName returns the number of a log file name in canonical form.
func parseFileName(name string) (uint64, bool) {
	s, ok := strings.CutPrefix(name, filePrefix)
	if !ok {
		return 0, false
	}
	if s, ok = strings.CutSuffix(s, fileSuffix); !ok || len(s) < 8 {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n == 0 || fileName(n) != name {
		return 0, false
	}
	return n, true
}

type fileEnt struct {
	num   uint64
	name  string
	first uint64 // seq of its first record, 0 if empty or unknown
}

// listFiles returns the log files in dir, by number.
func listFiles(dir string) ([]fileEnt, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []fileEnt
	for _, e := range ents {
		if n, ok := parseFileName(e.Name()); ok && e.Type().IsRegular() {
			out = append(out, fileEnt{num: n, name: e.Name()})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].num < out[j].num })
	return out, nil
}

// missingFiles describes log files absent between numbers a and b (exclusive).
func missingFiles(a, b uint64) string {
	switch {
	case b <= a+1:
		return ""
	case b == a+2:
		return fileName(a+1) + " is missing"
	default:
		return fmt.Sprintf("%s to %s are missing", fileName(a+1), fileName(b-1))
	}
}

func hashHex(line []byte) string {
	s := sha256.Sum256(line)
	var x [2 * sha256.Size]byte
	hex.Encode(x[:], s[:])
	return string(x[:])
}

// The head file: one fixed-length line, so that rewriting it in place with a
// single pwrite at offset 0 always replaces all of it.
const (
	headPrefix = "coffer-audit-head v1 seq="
	headMid    = " hash="
	headLen    = len(headPrefix) + 20 + len(headMid) + 64 + 1
)

func appendHead(b []byte, seq uint64, hash string) []byte {
	b = append(b, headPrefix...)
	b = appendPadded(b, seq)
	b = append(b, headMid...)
	b = append(b, hash...)
	return append(b, '\n')
}

// appendPadded appends seq in decimal, zero-padded to 20 digits.
func appendPadded(b []byte, seq uint64) []byte {
	var d [20]byte
	for i := len(d) - 1; i >= 0; i-- {
		d[i] = byte('0' + seq%10)
		seq /= 10
	}
	return append(b, d[:]...)
}

type head struct {
	seq  uint64
	hash string
}

func parseHead(b []byte) (head, error) {
	if len(b) != headLen || !bytes.HasPrefix(b, []byte(headPrefix)) || b[headLen-1] != '\n' {
		return head{}, fmt.Errorf("not a %d-byte %q line", headLen, strings.TrimSpace(headPrefix))
	}
	s := b[len(headPrefix):]
	seq, err := strconv.ParseUint(string(s[:20]), 10, 64)
	if err != nil {
		return head{}, fmt.Errorf("bad seq %q", s[:20])
	}
	s = s[20:]
	if !bytes.HasPrefix(s, []byte(headMid)) {
		return head{}, errors.New("bad hash field")
	}
	h := string(s[len(headMid) : len(headMid)+64])
	if !isHash(h) {
		return head{}, fmt.Errorf("bad hash %q", h)
	}
	if seq == 0 && h != zeroHash {
		return head{}, errors.New("seq 0 with a non-zero hash")
	}
	return head{seq: seq, hash: h}, nil
}

func isHash(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// readHead reads dir's head file: ok=false if it is missing or empty (a crash
// right after creating it); a malformed head is a *TamperError.
func readHead(r io.ReaderAt) (h head, ok bool, err error) {
	b := make([]byte, headLen+1)
	n, err := r.ReadAt(b, 0)
	if err != nil && err != io.EOF {
		return head{}, false, fmt.Errorf("audit: read %s: %w", HeadFile, err)
	}
	if n == 0 {
		return head{}, false, nil
	}
	h, err = parseHead(b[:n])
	if err != nil {
		return head{}, false, &TamperError{File: HeadFile, Kind: KindHead, Msg: "not a valid head file: " + err.Error()}
	}
	return h, true, nil
}

// errLineTooLong is returned through scanLines' callback path.
type lineTooLongError struct {
	line int
	off  int64
}

func (e *lineTooLongError) Error() string {
	return fmt.Sprintf("line %d longer than %d bytes", e.line, maxLineBytes)
}

// scanLines calls fn for every line of r with its 1-based number, byte
// offset and bytes without the newline (valid only during the call).
// partial is set for a final line without a newline.
func scanLines(r io.Reader, fn func(n int, off int64, raw []byte, partial bool) error) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var long []byte
	var off int64
	n := 0
	for {
		chunk, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			long = append(long, chunk...)
			if len(long) > maxLineBytes {
				return &lineTooLongError{line: n + 1, off: off}
			}
			continue
		}
		line := chunk
		if len(long) > 0 {
			long = append(long, chunk...)
			line = long
			if len(line) > maxLineBytes+1 {
				return &lineTooLongError{line: n + 1, off: off}
			}
		}
		if err == io.EOF {
			if len(line) == 0 {
				return nil
			}
			return fn(n+1, off, line, true)
		}
		if err != nil {
			return err
		}
		n++
		if err := fn(n, off, line[:len(line)-1], false); err != nil {
			return err
		}
		off += int64(len(line))
		long = long[:0]
	}
}

// lineHead is what the chain needs from a line.
type lineHead struct {
	Seq  *uint64 `json:"seq"`
	Prev *string `json:"prev"`
}

func parseLine(raw []byte) (seq uint64, prev string, err error) {
	var h lineHead
	if err := json.Unmarshal(raw, &h); err != nil {
		return 0, "", err
	}
	if h.Seq == nil || *h.Seq == 0 {
		return 0, "", errors.New("no seq")
	}
	if h.Prev == nil || !isHash(*h.Prev) {
		return 0, "", errors.New("no valid prev")
	}
	return *h.Seq, *h.Prev, nil
}

// quickSeq reads the seq of a line as Append encodes it ({"seq":N,...}),
// falling back to a full parse.
func quickSeq(raw []byte) (uint64, bool) {
	if s, ok := bytes.CutPrefix(raw, []byte(`{"seq":`)); ok {
		if i := bytes.IndexByte(s, ','); i > 0 && i <= 20 {
			if n, err := strconv.ParseUint(string(s[:i]), 10, 64); err == nil {
				return n, true
			}
		}
	}
	seq, _, err := parseLine(raw)
	return seq, err == nil
}

// loc is where a line is.
type loc struct {
	file string
	line int // 0: unknown (filled in when reported)
}

// link is the last record the checker accepted.
type link struct {
	seq  uint64
	hash string // hex SHA-256 of its line; zeroHash before seq 1
	at   loc
}

// checker applies the chain rules to consecutive lines.
type checker struct {
	last link
	// find looks for seq in the lines after the current one, to tell a
	// moved record from a removed one.
	find func(seq uint64) (loc, bool)
	// gapHint, if set, explains a seq gap at the first line of a file.
	gapHint string
}

func (c *checker) feed(at loc, raw []byte) *TamperError {
	want := c.last.seq + 1
	seq, prev, err := parseLine(raw)
	if err != nil {
		msg := "not a valid record: " + err.Error()
		if len(raw) == 0 {
			msg = "not a valid record: empty line"
		}
		return &TamperError{File: at.file, Line: at.line, Seq: want, Kind: KindEdited, Msg: msg}
	}
	switch {
	case seq == want:
		if prev != c.last.hash {
			if c.last.at.file == AnchorFile {
				return &TamperError{File: AnchorFile, Seq: c.last.seq, Kind: KindAnchor,
					Msg: fmt.Sprintf("hash for seq %d does not match the prev of seq %d (%s line %d): the anchor or that record was modified", c.last.seq, seq, at.file, at.line)}
			}
			if c.last.seq == 0 {
				return &TamperError{File: at.file, Line: at.line, Seq: seq, Kind: KindEdited,
					Msg: "first record's prev is not 64 zeros"}
			}
			return &TamperError{File: c.last.at.file, Line: c.last.at.line, Seq: c.last.seq, Kind: KindEdited,
				Msg: "record hash does not match the chain (next record's prev)"}
		}
	case seq > want:
		if c.find != nil {
			if w, ok := c.find(want); ok {
				return &TamperError{File: at.file, Line: at.line, Seq: seq, Kind: KindReordered,
					Msg: fmt.Sprintf("seq %d follows seq %d; seq %d is later, at %s line %d", seq, c.last.seq, want, w.file, w.line)}
			}
		}
		var msg string
		switch {
		case seq == want+1:
			msg = fmt.Sprintf("seq %d is missing", want)
		default:
			msg = fmt.Sprintf("seq %d-%d are missing", want, seq-1)
		}
		switch {
		case c.last.at.file == AnchorFile:
			msg += fmt.Sprintf(" (%s ends the pruned records at seq %d; the log continues at seq %d)", AnchorFile, c.last.seq, seq)
		case c.last.seq == 0:
			msg += fmt.Sprintf(" (the log starts at seq %d)", seq)
		default:
			msg += fmt.Sprintf(" (seq %d is followed by seq %d)", c.last.seq, seq)
		}
		if c.gapHint != "" {
			msg += "; " + c.gapHint
		}
		return &TamperError{File: at.file, Line: at.line, Seq: want, Kind: KindRemoved, Msg: msg}
	case c.last.at.file == AnchorFile:
		return &TamperError{File: AnchorFile, Seq: c.last.seq, Kind: KindAnchor,
			Msg: fmt.Sprintf("the pruned records end at seq %d but the log continues at seq %d (%s line %d)", c.last.seq, seq, at.file, at.line)}
	default:
		msg := fmt.Sprintf("seq %d follows seq %d", seq, c.last.seq)
		if seq == c.last.seq {
			msg = fmt.Sprintf("seq %d appears twice", seq)
		}
		return &TamperError{File: at.file, Line: at.line, Seq: seq, Kind: KindReordered, Msg: msg}
	}
	c.last = link{seq: seq, hash: hashHex(raw), at: at}
	c.gapHint = ""
	return nil
}

// findSeq looks for a line holding seq in files[fi] after line afterLine,
// then in the following files.
func findSeq(dir string, files []fileEnt, fi, afterLine int, seq uint64) (loc, bool) {
	errFound := errors.New("found")
	for i := fi; i < len(files); i++ {
		var at loc
		f, err := os.Open(filepath.Join(dir, files[i].name))
		if err != nil {
			continue
		}
		err = scanLines(f, func(n int, _ int64, raw []byte, partial bool) error {
			if partial || (i == fi && n <= afterLine) {
				return nil
			}
			if s, ok := quickSeq(raw); ok && s == seq {
				at = loc{file: files[i].name, line: n}
				return errFound
			}
			return nil
		})
		f.Close() // #nosec G104 -- read-only file: Close cannot lose data
		if err == errFound {
			return at, true
		}
	}
	return loc{}, false
}

// countLines returns the number of newline-terminated lines in path.
func countLines(path string) int {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	n := 0
	buf := make([]byte, 64<<10)
	for {
		m, err := f.Read(buf)
		n += bytes.Count(buf[:m], []byte{'\n'})
		if err != nil {
			return n
		}
	}
}

// readFirstSeq returns the seq of the first line of path (0 if none/unreadable).
func readFirstSeq(path string) uint64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	var seq uint64
	stop := errors.New("stop")
	scanLines(f, func(_ int, _ int64, raw []byte, partial bool) error { // #nosec G104 -- the function stops at the first line; an unreadable file gives 0, a hint only (reads then start at an earlier file, and reading this one reports its error)
		if !partial {
			seq, _ = quickSeq(raw)
		}
		return stop
	})
	return seq
}

// tailLine returns the last line of path (without its newline); ok=false if
// the file is empty. A file not ending in a newline is reported as truncated.
func tailLine(path string) (raw []byte, ok bool, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, false, err
	}
	size := st.Size()
	if size == 0 {
		return nil, false, nil
	}
	n := min(size, int64(maxLineBytes)+1)
	buf := make([]byte, n)
	if _, err := f.ReadAt(buf, size-n); err != nil {
		return nil, false, err
	}
	name := filepath.Base(path)
	if buf[n-1] != '\n' {
		return nil, false, &TamperError{File: name, Line: countLines(path) + 1, Kind: KindTruncated,
			Msg: "partial last line (no newline at the end of a file that is not the last one)"}
	}
	buf = buf[:n-1]
	i := bytes.LastIndexByte(buf, '\n')
	if i < 0 && n < size {
		return nil, false, &TamperError{File: name, Line: countLines(path), Kind: KindEdited,
			Msg: fmt.Sprintf("last line longer than %d bytes", maxLineBytes)}
	}
	return buf[i+1:], true, nil
}

// ReadHeadFile returns the seq and hash a head file names (for an operator
// or a repair to compare with the log).
func ReadHeadFile(path string) (seq uint64, hash string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	h, ok, err := readHead(f)
	if err != nil {
		return 0, "", err
	}
	if !ok {
		return 0, "", fmt.Errorf("audit: %s is empty", path)
	}
	return h.seq, h.hash, nil
}
