package journal

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"
)

// Report summarises a verified journal.
type Report struct {
	Segments   int
	Records    int
	FirstIndex uint64
	LastIndex  uint64
}

// segFileName is a segment file found in a directory.
type segFileName struct {
	name string
	ts   time.Time
}

// listSegmentFiles returns the segment files of dir sorted by the timestamp
// in their names (then by name). Other files are ignored.
func listSegmentFiles(dir string) ([]segFileName, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	var out []segFileName
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		if ts, ok := parseSegmentName(e.Name()); ok {
			out = append(out, segFileName{e.Name(), ts})
		}
	}
	sort.Slice(out, func(i, k int) bool {
		if !out[i].ts.Equal(out[k].ts) {
			return out[i].ts.Before(out[k].ts)
		}
		return out[i].name < out[k].name
	})
	return out, nil
}

// segScan is what scanning one segment found.
type segScan struct {
	info    SegmentInfo
	goodEnd int64  // end of the header and of the last good frame
	last    uint64 // last record index, or the header's Prev if none
}

type scanOpts struct {
	c  Cipher // decrypt payloads with c when non-nil
	fn func(seg SegmentInfo, r Record) error
	// gap, when set, is told of records missing between two segments and
	// the walk goes on (an error from it stops the walk).
	gap func(g Gap) error
	// closedByFooter (Open): a segment that is not the last is read by its
	// header, first record and footer only, when they agree (trustClosed).
	closedByFooter bool
	quick          bool // set by walk for the segment being scanned
}

// scanSegment reads one segment. chained says whether prevLast (the last
// index of the previous segment) must match the header's Prev.
func scanSegment(dir, name string, chained bool, prevLast uint64, o *scanOpts) (s segScan, err error) {
	path := filepath.Join(dir, name)
	s.info = SegmentInfo{Name: name, Path: path}
	f, err := os.Open(path)
	if err != nil {
		return s, fmt.Errorf("journal: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return s, fmt.Errorf("journal: %w", err)
	}
	size := st.Size()
	s.info.Size = size
	bad := func(off int64, idx uint64, format string, args ...any) *CorruptError {
		return &CorruptError{File: name, Path: path, Offset: off, Index: idx, Reason: fmt.Sprintf(format, args...)}
	}
	ioErr := func(off int64, err error) error {
		return fmt.Errorf("journal %s: offset %d: %w", name, off, err)
	}
	br := bufio.NewReaderSize(io.NewSectionReader(f, 0, size), 256<<10)

	// Header.
	hdr := make([]byte, headerFixedLen, headerFixedLen+64)
	if n, err := io.ReadFull(br, hdr); err != nil {
		if isEOF(err) {
			return s, bad(0, 0, "truncated: segment header incomplete (%d bytes)", n)
		}
		return s, ioErr(0, err)
	}
	if string(hdr[:8]) != Magic {
		return s, bad(0, 0, "not a journal segment (bad magic)")
	}
	if v := binary.BigEndian.Uint16(hdr[8:]); v != FormatVersion {
		return s, bad(0, 0, "unsupported format version %d, this build reads version %d", v, FormatVersion)
	}
	nl := int(binary.BigEndian.Uint16(hdr[26:]))
	if nl > maxHeaderName {
		return s, bad(0, 0, "bad segment header: name length %d", nl)
	}
	rest := make([]byte, nl+headerCRCLen)
	if _, err := io.ReadFull(br, rest); err != nil {
		if isEOF(err) {
			return s, bad(0, 0, "truncated: segment header incomplete (%d bytes)", size)
		}
		return s, ioErr(0, err)
	}
	hdr = append(hdr, rest[:nl]...)
	if crc(hdr) != binary.BigEndian.Uint32(rest[nl:]) {
		return s, bad(0, 0, "segment header CRC mismatch")
	}
	if hn := string(rest[:nl]); hn != name {
		return s, bad(0, 0, "segment header names file %q", hn)
	}
	s.info.Created = fromNanos(int64(binary.BigEndian.Uint64(hdr[10:]))) // #nosec G115 -- Unix nanoseconds stored as the bits of an int64: the conversion restores them
	s.info.Prev = binary.BigEndian.Uint64(hdr[18:])
	if chained && s.info.Prev != prevLast {
		if s.info.Prev > prevLast {
			e := bad(0, 0, "gap: previous segment ended at %d, this one continues from %d (indexes %d-%d missing)",
				prevLast, s.info.Prev+1, prevLast+1, s.info.Prev)
			e.Gap = &Gap{From: prevLast + 1, To: s.info.Prev, Next: name}
			return s, e
		}
		return s, bad(0, 0, "overlap: previous segment ended at %d, this one continues from %d", prevLast, s.info.Prev+1)
	}
	off := int64(len(hdr) + headerCRCLen)
	s.goodEnd = off
	s.last = s.info.Prev
	if o.quick {
		ok, err := trustClosed(f, off, size, &s)
		if err != nil {
			return s, ioErr(off, err)
		}
		if ok {
			return s, nil
		}
		// Anything odd: read every frame, which names the damage.
	}

	// frameBad reports damage to framing or checksum, and whether any valid
	// frame starts after it (if none, it may be a torn tail).
	frameBad := func(idx uint64, format string, args ...any) error {
		e := bad(off, idx, format, args...)
		e.frame = true
		later, err := laterFrame(f, off+1, size, s.last)
		if err != nil {
			return ioErr(off, err)
		}
		e.noLater = !later
		return e
	}
	var fh [frameHeaderLen]byte
	var buf []byte
	for {
		n, err := io.ReadFull(br, fh[:])
		if n == 0 && err == io.EOF {
			break
		}
		if err != nil {
			if isEOF(err) {
				return s, frameBad(0, "truncated: incomplete frame header (%d of %d bytes)", n, frameHeaderLen)
			}
			return s, ioErr(off, err)
		}
		blen := int64(binary.BigEndian.Uint32(fh[:]))
		if blen < bodyFixedLen || blen > MaxBodyBytes {
			return s, frameBad(0, "bad record length %d (must be %d to %d)", blen, bodyFixedLen, MaxBodyBytes)
		}
		if left := size - off - frameHeaderLen; blen > left {
			var idx uint64
			if p, _ := br.Peek(8); len(p) == 8 {
				idx = binary.BigEndian.Uint64(p)
			}
			return s, frameBad(idx, "truncated: record of %d bytes, only %d bytes left in the file", blen, left)
		}
		if int64(cap(buf)) < blen {
			buf = make([]byte, blen)
		}
		b := buf[:blen]
		if _, err := io.ReadFull(br, b); err != nil {
			return s, ioErr(off, err)
		}
		r := parseBody(b)
		if crc(b) != binary.BigEndian.Uint32(fh[4:]) {
			return s, frameBad(r.index, "CRC mismatch")
		}
		if r.typ == TypeSegmentEnd {
			if e := checkFooter(r, s.last, s.info.Records); e != "" {
				return s, bad(off, 0, "bad segment footer: %s", e)
			}
			off += frameHeaderLen + blen
			s.goodEnd = off
			s.info.Closed = true
			s.info.ClosedAt = fromNanos(r.time)
			if off != size {
				return s, bad(off, 0, "%d bytes after the segment footer", size-off)
			}
			break
		}
		if r.prev != s.last {
			return s, bad(off, r.index, "chain broken: record names %d as previous, but the previous record is %d", r.prev, s.last)
		}
		if r.index <= r.prev {
			return s, bad(off, r.index, "index %d does not follow %d", r.index, r.prev)
		}
		var payload []byte
		if r.keyID == 0 {
			if o.fn != nil {
				payload = append([]byte{}, r.payload...)
			}
		} else if o.c != nil {
			pt, err := o.c.Open(r.keyID, r.payload, b[:bodyFixedLen])
			if err != nil {
				return s, bad(off, r.index, "payload does not decrypt with key %d: %v", r.keyID, err)
			}
			payload = pt
		}
		if s.info.Records == 0 {
			s.info.FirstIndex = r.index
		}
		s.info.LastIndex = r.index
		s.info.Records++
		s.last = r.index
		if o.fn != nil {
			rec := Record{Index: r.index, Prev: r.prev, Time: fromNanos(r.time), Type: r.typ, KeyID: r.keyID, Payload: payload}
			if err := o.fn(s.info, rec); err != nil {
				return s, err
			}
		}
		off += frameHeaderLen + blen
		s.goodEnd = off
	}
	return s, nil
}

// trustClosed reads a closed segment by its footer and first record only:
// the footer frame (CRC, type, last index, record count) at the end of the
// file, and the first record frame after the header (CRC, prev = the
// header's prev). When they agree it fills s as a full scan would and
// returns true; otherwise false and s unchanged (the caller scans every
// frame). Records between the first one and the footer are not read: Verify
// and Read check those.
func trustClosed(f io.ReaderAt, off, size int64, s *segScan) (bool, error) {
	end := size - footerFrameLen
	if end < off {
		return false, nil
	}
	var ft [footerFrameLen]byte
	if _, err := f.ReadAt(ft[:], end); err != nil {
		return false, err
	}
	be := binary.BigEndian
	if be.Uint32(ft[:]) != bodyFixedLen+footerPayloadLen || crc(ft[frameHeaderLen:]) != be.Uint32(ft[4:]) {
		return false, nil
	}
	r := parseBody(ft[frameHeaderLen:])
	last, count := be.Uint64(r.payload), be.Uint32(r.payload[8:])
	if r.typ != TypeSegmentEnd || r.keyID != 0 || r.index != last || r.prev != last {
		return false, nil
	}
	prev := s.info.Prev
	var first uint64
	if count == 0 {
		if last != prev || end != off {
			return false, nil
		}
	} else {
		if last <= prev || end-off < int64(count)*(frameHeaderLen+bodyFixedLen) {
			return false, nil
		}
		var fh [frameHeaderLen]byte
		if _, err := f.ReadAt(fh[:], off); err != nil {
			return false, err
		}
		blen := int64(be.Uint32(fh[:]))
		if blen < bodyFixedLen || blen > MaxBodyBytes || off+frameHeaderLen+blen > end {
			return false, nil
		}
		b := make([]byte, blen)
		if _, err := f.ReadAt(b, off+frameHeaderLen); err != nil {
			return false, err
		}
		fr := parseBody(b)
		if crc(b) != be.Uint32(fh[4:]) || fr.typ == TypeSegmentEnd || fr.prev != prev || fr.index <= prev || fr.index > last ||
			(count == 1) != (off+frameHeaderLen+blen == end) || count == 1 && fr.index != last {
			return false, nil
		}
		first = fr.index
	}
	s.info.FirstIndex, s.info.Records = first, int(count)
	if count > 0 {
		s.info.LastIndex = last
	}
	s.info.Closed, s.info.ClosedAt = true, fromNanos(r.time)
	s.last, s.goodEnd = last, size
	return true, nil
}

func checkFooter(r body, last uint64, records int) string {
	if r.keyID != 0 || len(r.payload) != footerPayloadLen {
		return fmt.Sprintf("key id %d, payload %d bytes", r.keyID, len(r.payload))
	}
	fl := binary.BigEndian.Uint64(r.payload)
	fc := binary.BigEndian.Uint32(r.payload[8:])
	if r.index != last || r.prev != last || fl != last {
		return fmt.Sprintf("last index %d/%d/%d, segment ends at %d", r.index, r.prev, fl, last)
	}
	if int64(fc) != int64(records) {
		return fmt.Sprintf("record count %d, segment has %d", fc, records)
	}
	return ""
}

func isEOF(err error) bool { return err == io.EOF || err == io.ErrUnexpectedEOF }

// laterFrame reports whether a plausible, CRC-valid frame that continues the
// chain after index `after` starts anywhere in [from, end). It tells a bad
// final frame (a torn write) from damage followed by good records.
func laterFrame(f io.ReaderAt, from, end int64, after uint64) (bool, error) {
	const chunk = 1 << 20
	const need = frameHeaderLen + bodyFixedLen
	buf := make([]byte, chunk+need)
	var body []byte
	for base := from; base+need <= end; base += chunk {
		n := int64(len(buf))
		if base+n > end {
			n = end - base
		}
		w := buf[:n]
		if _, err := f.ReadAt(w, base); err != nil && err != io.EOF {
			return false, err
		}
		for i := 0; i+need <= len(w) && i < chunk; i++ {
			blen := int64(binary.BigEndian.Uint32(w[i:]))
			if blen < bodyFixedLen || blen > MaxBodyBytes || base+int64(i)+frameHeaderLen+blen > end {
				continue
			}
			idx := binary.BigEndian.Uint64(w[i+8:])
			prev := binary.BigEndian.Uint64(w[i+16:])
			if idx < after || idx-after > 1<<32 || prev < after || prev > idx {
				continue
			}
			if int64(cap(body)) < blen {
				body = make([]byte, blen)
			}
			b := body[:blen]
			if _, err := f.ReadAt(b, base+int64(i)+frameHeaderLen); err != nil && err != io.EOF {
				return false, err
			}
			if crc(b) == binary.BigEndian.Uint32(w[i+4:]) {
				return true, nil
			}
		}
	}
	return false, nil
}

// walk scans every segment of dir in order, checking the chain between them.
// It returns what it scanned (including the segment where it stopped).
func walk(dir string, o *scanOpts) ([]segScan, error) {
	files, err := listSegmentFiles(dir)
	if err != nil {
		return nil, err
	}
	var out []segScan
	var last uint64
	for i, sf := range files {
		o.quick = o.closedByFooter && i < len(files)-1
		s, err := scanSegment(dir, sf.name, i > 0, last, o)
		var ce *CorruptError
		if errors.As(err, &ce) && ce.Gap != nil {
			ce.Gap.Prev = files[i-1].name
			for _, f := range files[:i] {
				ce.Gap.Older = append(ce.Gap.Older, f.name)
			}
			if o.gap != nil {
				if err = o.gap(*ce.Gap); err == nil {
					s, err = scanSegment(dir, sf.name, false, 0, o)
				}
			}
		}
		out = append(out, s)
		if err != nil {
			if errors.As(err, &ce) && ce.frame && ce.noLater && i == len(files)-1 {
				ce.Torn = true
			}
			return out, err
		}
		if !s.info.Closed && i < len(files)-1 {
			return out, &CorruptError{File: sf.name, Path: s.info.Path, Offset: s.info.Size,
				Reason: fmt.Sprintf("segment has no footer but is followed by %s", files[i+1].name)}
		}
		last = s.last
	}
	return out, nil
}

// ListSegments describes the segments of dir, oldest first, reading every
// frame. A torn tail of the last, unclosed segment (which Open will repair)
// is tolerated: that segment is listed with its good records and its file
// size. Any other damage returns the segments read so far and a
// *CorruptError.
func ListSegments(dir string) ([]SegmentInfo, error) {
	segs, err := walk(dir, &scanOpts{})
	infos := make([]SegmentInfo, len(segs))
	for i, s := range segs {
		infos[i] = s.info
	}
	var ce *CorruptError
	if errors.As(err, &ce) && ce.Torn {
		err = nil
	}
	return infos, err
}

// Verify reads every segment in order and checks headers, framing, CRCs,
// the index chain within and across segments, footers, and (with c non-nil)
// that every encrypted payload decrypts. It returns what it read and the
// first problem, as a *CorruptError for damage (Torn set for a torn tail,
// which Open would repair). It never modifies anything.
func Verify(dir string, c Cipher) (Report, error) {
	segs, err := walk(dir, &scanOpts{c: c})
	var r Report
	r.Segments = len(segs)
	for _, s := range segs {
		if s.info.Records == 0 {
			continue
		}
		if r.Records == 0 {
			r.FirstIndex = s.info.FirstIndex
		}
		r.Records += s.info.Records
		r.LastIndex = s.info.LastIndex
	}
	return r, err
}

// CheckOpen reports what Open would say about dir, reading what Open reads
// and changing nothing: nil when Open would succeed (repairing a torn tail
// if there is one), else Open's error (a *CorruptError for damage).
func CheckOpen(dir string) error {
	_, err := walk(dir, &scanOpts{closedByFooter: true})
	var ce *CorruptError
	if errors.As(err, &ce) && ce.Torn {
		return nil
	}
	return err
}

// ReadAcrossGaps is Read, except that records missing between two segments
// (a segment moved aside) are reported to gap, which may stop the walk with
// an error, and the walk goes on with the next segment.
func ReadAcrossGaps(dir string, c Cipher, gap func(g Gap) error, fn func(seg SegmentInfo, r Record) error) error {
	if fn == nil {
		fn = func(SegmentInfo, Record) error { return nil }
	}
	if gap == nil {
		gap = func(Gap) error { return nil }
	}
	_, err := walk(dir, &scanOpts{c: c, fn: fn, gap: gap})
	return err
}

// Read calls fn for every record of dir in order, with the segment as read
// so far. Payloads with KeyID != 0 are decrypted with c, or nil if c is nil.
// Records are delivered as they are read, so a problem found later (returned
// as *CorruptError, including a torn tail) comes after the good records
// before it. An error from fn stops the walk and is returned as is.
func Read(dir string, c Cipher, fn func(seg SegmentInfo, r Record) error) error {
	if fn == nil {
		fn = func(SegmentInfo, Record) error { return nil }
	}
	_, err := walk(dir, &scanOpts{c: c, fn: fn})
	return err
}
