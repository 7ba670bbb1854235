package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// Read returns the records with Seq >= fromSeq, oldest first, at most limit
// of them (limit <= 0: no limit), across files. It reads what was appended
// before the call and does not verify the chain (use Verify).
func (l *Log) Read(fromSeq uint64, limit int) ([]Record, error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, ErrClosed
	}
	files := slices.Clone(l.files)
	lastSize := l.size
	last := l.seq.Load()
	l.mu.Unlock()

	fromSeq = max(fromSeq, 1)
	if fromSeq > last {
		return nil, nil
	}
	// Start at the last file whose first record is not after fromSeq.
	start := 0
	for i, fe := range files {
		if fe.first != 0 && fe.first <= fromSeq {
			start = i
		}
	}
	var out []Record
	errDone := errors.New("done")
	for i := start; i < len(files); i++ {
		name := files[i].name
		f, err := os.Open(filepath.Join(l.dir, name))
		if errors.Is(err, os.ErrNotExist) && files[i].num <= l.prunedTo.Load() {
			continue // pruned since the listing
		}
		if err != nil {
			return out, fmt.Errorf("audit: read: %w", err)
		}
		var r io.Reader = f
		if i == len(files)-1 {
			r = io.NewSectionReader(f, 0, lastSize)
		}
		err = scanLines(r, func(n int, _ int64, raw []byte, partial bool) error {
			if partial {
				return fmt.Errorf("line %d: partial line", n)
			}
			if s, ok := quickSeq(raw); ok && s < fromSeq {
				return nil
			}
			var rec Record
			if err := json.Unmarshal(raw, &rec); err != nil {
				return fmt.Errorf("line %d: %w", n, err)
			}
			if rec.Seq < fromSeq {
				return nil
			}
			out = append(out, rec)
			if limit > 0 && len(out) >= limit {
				return errDone
			}
			return nil
		})
		f.Close() // #nosec G104 -- read-only file: Close cannot lose data
		if err == errDone {
			return out, nil
		}
		if err != nil {
			return out, fmt.Errorf("audit: read %s: %w", name, err)
		}
	}
	return out, nil
}

// Report summarizes a verified log.
type Report struct {
	Files    int    `json:"files"`     // log files
	Records  uint64 `json:"records"`   // records (lines)
	FirstSeq uint64 `json:"first_seq"` // 0 if empty
	LastSeq  uint64 `json:"last_seq"`
	LastHash string `json:"last_hash"` // hex SHA-256 of the last line; 64 zeros if empty
	HeadSeq  uint64 `json:"head_seq"`  // seq in audit.head: LastSeq, or lower after a crash between writing a record and the head
	// PrunedThrough is the seq of the last pruned record (audit.anchor);
	// the chain was verified from there. 0: nothing was pruned.
	PrunedThrough uint64 `json:"pruned_through,omitempty"`
}

// Verify checks the whole log in dir offline: every file in order, every
// line's place in the hash chain (from audit.anchor once old files were
// pruned, else from seq 1), and the end of the log against audit.head. It returns the first problem as a *TamperError (other errors
// are I/O errors). It reads audit.head before the log, so it may be run
// while a Log appends to dir (a line being written at that moment is retried).
func Verify(dir string) (Report, error) {
	var rep Report
	var err error
	for attempt := 1; ; attempt++ {
		rep, err = verify(dir)
		var te *TamperError
		if attempt < 5 && errors.As(err, &te) && te.transient {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		return rep, err
	}
}

func verify(dir string) (rep Report, err error) {
	rep.LastHash = zeroHash
	// A Log appending meanwhile (its head changes) can make what we read
	// inconsistent: a directory listing may miss a file created during it,
	// a read may see half a line. Such errors are retried.
	// A Prune meanwhile (the anchor changes) can remove a file we listed.
	headBefore, _ := os.ReadFile(filepath.Join(dir, HeadFile))
	anchorBefore, _ := os.ReadFile(filepath.Join(dir, AnchorFile))
	anchorChanged := func() bool {
		anchorAfter, _ := os.ReadFile(filepath.Join(dir, AnchorFile))
		return !bytes.Equal(anchorBefore, anchorAfter)
	}
	defer func() {
		var te *TamperError
		if errors.As(err, &te) && !te.transient {
			headAfter, _ := os.ReadFile(filepath.Join(dir, HeadFile))
			te.transient = !bytes.Equal(headBefore, headAfter) || anchorChanged()
		}
	}()
	hd, haveHead, err := func() (head, bool, error) {
		f, err := os.Open(filepath.Join(dir, HeadFile))
		if errors.Is(err, os.ErrNotExist) {
			return head{}, false, nil
		}
		if err != nil {
			return head{}, false, fmt.Errorf("audit: verify: %w", err)
		}
		defer f.Close()
		return readHead(f)
	}()
	if err != nil {
		var te *TamperError
		if errors.As(err, &te) {
			te.transient = true // a read racing a rewrite
		}
		return rep, err
	}
	files, anc, haveAnc, err := liveFiles(dir)
	if err != nil {
		var te *TamperError
		if errors.As(err, &te) {
			te.transient = anchorChanged() // a read racing a Prune's rename
			return rep, err
		}
		return rep, fmt.Errorf("audit: verify: %w", err)
	}
	rep.Files = len(files)

	c := &checker{last: link{hash: zeroHash}}
	if haveAnc {
		c.last = anc.link()
		rep.PrunedThrough = anc.Seq
	}
	headHash, headSeen := "", false
	if haveHead && hd.seq == c.last.seq {
		headHash, headSeen = c.last.hash, true
	}
	lastLines := 0
	prevNum := anc.File
	for i, fe := range files {
		c.gapHint = missingFiles(prevNum, fe.num)
		prevNum = fe.num
		f, err := os.Open(filepath.Join(dir, fe.name))
		if errors.Is(err, os.ErrNotExist) && anchorChanged() {
			return rep, &TamperError{File: fe.name, Kind: KindRemoved, Msg: "removed while verifying (pruned)", transient: true}
		}
		if err != nil {
			return rep, fmt.Errorf("audit: verify: %w", err)
		}
		lines := 0
		err = scanLines(f, func(n int, _ int64, raw []byte, partial bool) error {
			at := loc{file: fe.name, line: n}
			if partial {
				return &TamperError{File: fe.name, Line: n, Seq: c.last.seq + 1, Kind: KindTruncated,
					Msg: fmt.Sprintf("partial last line (%d bytes without a newline)", len(raw)),
					// The last file may be mid-append.
					transient: i == len(files)-1}
			}
			lines = n
			c.find = func(seq uint64) (loc, bool) { return findSeq(dir, files, i, n, seq) }
			if te := c.feed(at, raw); te != nil {
				return te
			}
			rep.Records++
			if rep.FirstSeq == 0 {
				rep.FirstSeq = c.last.seq
			}
			if haveHead && c.last.seq == hd.seq {
				headHash, headSeen = c.last.hash, true
			}
			return nil
		})
		f.Close() // #nosec G104 -- read-only file: Close cannot lose data
		if err != nil {
			var te *TamperError
			var tl *lineTooLongError
			switch {
			case errors.As(err, &te):
				return rep, te
			case errors.As(err, &tl):
				return rep, &TamperError{File: fe.name, Line: tl.line, Seq: c.last.seq + 1, Kind: KindEdited,
					Msg: fmt.Sprintf("line longer than %d bytes", maxLineBytes)}
			}
			return rep, fmt.Errorf("audit: verify %s: %w", fe.name, err)
		}
		lastLines = lines
	}
	rep.LastSeq, rep.LastHash = c.last.seq, c.last.hash

	lastFile := ""
	if len(files) > 0 {
		lastFile = files[len(files)-1].name
	}
	switch {
	case !haveHead:
		if c.last.seq > 0 {
			return rep, &TamperError{File: HeadFile, Kind: KindHead,
				Msg: "missing or empty: records cut from the end of the log cannot be detected"}
		}
	case hd.seq > c.last.seq:
		msg := fmt.Sprintf("log ends at seq %d but %s records seq %d", c.last.seq, HeadFile, hd.seq)
		if hd.seq == c.last.seq+1 {
			msg += fmt.Sprintf(" (seq %d missing)", hd.seq)
		} else {
			msg += fmt.Sprintf(" (seq %d-%d missing)", c.last.seq+1, hd.seq)
		}
		if len(files) == 0 {
			msg = fmt.Sprintf("no log files but %s records seq %d", HeadFile, hd.seq)
		}
		return rep, &TamperError{File: lastFile, Line: lastLines + 1, Seq: c.last.seq + 1, Kind: KindTruncated, Msg: msg}
	case headSeen && headHash != hd.hash:
		if hd.seq == c.last.seq {
			return rep, &TamperError{File: c.last.at.file, Line: c.last.at.line, Seq: c.last.seq, Kind: KindEdited,
				Msg: fmt.Sprintf("record hash does not match %s (the record or %s was modified)", HeadFile, HeadFile)}
		}
		// The chain confirms this record's hash: the head is wrong.
		return rep, &TamperError{File: HeadFile, Seq: hd.seq, Kind: KindHead,
			Msg: fmt.Sprintf("hash for seq %d does not match the log, whose chain confirms that record", hd.seq)}
	}
	rep.HeadSeq = hd.seq
	return rep, nil
}
