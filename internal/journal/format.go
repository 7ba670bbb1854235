package journal

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"regexp"
	"strings"
	"time"
)

// On-disk constants. See FORMAT.md.
const (
	// Magic opens every segment file.
	Magic = "COFFERJL"
	// FormatVersion is the segment format version written and accepted.
	FormatVersion uint16 = 1
	// TypeSegmentEnd is the reserved record type of a segment footer.
	TypeSegmentEnd uint16 = 0xFFFF
	// MaxBodyBytes caps a record body (fixed fields + payload), so a corrupt
	// length can never make a reader allocate more.
	MaxBodyBytes = 64 << 20
	// DefaultMaxSegmentBytes is used when Options.MaxSegmentBytes is 0.
	DefaultMaxSegmentBytes = 64 << 20
	// SegmentExt is the file name extension of segments.
	SegmentExt = ".recovery"

	frameHeaderLen   = 8  // body length u32 + CRC-32C u32
	bodyFixedLen     = 30 // index u64, prev u64, time i64, type u16, key id u32
	footerPayloadLen = 12 // last index u64 + record count u32
	footerFrameLen   = frameHeaderLen + bodyFixedLen + footerPayloadLen
	headerFixedLen   = 28 // magic 8, version 2, created 8, prev 8, name length 2
	headerCRCLen     = 4
	maxHeaderName    = 1024
	maxOptionName    = 200
	nameTimeLayout   = "20060102150405"
)

var (
	castagnoli = crc32.MakeTable(crc32.Castagnoli)
	optionName = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)
	segmentRE  = regexp.MustCompile(`^([A-Za-z0-9_.-]+)-([0-9]{14})\.recovery$`)
)

func crc(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }

// segmentName builds "<name>-<YYYYMMDDhhmmss>.recovery" from t (UTC).
func segmentName(name string, t time.Time) string {
	return name + "-" + t.UTC().Format(nameTimeLayout) + SegmentExt
}

// parseSegmentName reports whether file is a segment name and its timestamp.
func parseSegmentName(file string) (time.Time, bool) {
	m := segmentRE.FindStringSubmatch(file)
	if m == nil {
		return time.Time{}, false
	}
	t, err := time.Parse(nameTimeLayout, m[2])
	if err != nil {
		return time.Time{}, false
	}
	return t.UTC(), true
}

// toNanos stores a time as unix nanoseconds; the zero Time is stored as 0.
func toNanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// fromNanos is the inverse of toNanos; results are UTC.
func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// encodeHeader returns the segment header for the file named name.
func encodeHeader(name string, created time.Time, prev uint64) []byte {
	b := make([]byte, 0, headerFixedLen+len(name)+headerCRCLen)
	b = append(b, Magic...)
	b = binary.BigEndian.AppendUint16(b, FormatVersion)
	b = binary.BigEndian.AppendUint64(b, uint64(toNanos(created))) // #nosec G115 -- an int64 of Unix nanoseconds stored as its bits (read back with int64())
	b = binary.BigEndian.AppendUint64(b, prev)
	b = binary.BigEndian.AppendUint16(b, uint16(len(name))) // #nosec G115 -- a segment name is opts.Name (at most maxOptionName bytes, checked at Open) and a timestamp
	b = append(b, name...)
	return binary.BigEndian.AppendUint32(b, crc(b))
}

// appendFrame appends one frame to dst. For keyID != 0 the payload is sealed
// with c, binding the 30 fixed body bytes as associated data.
func appendFrame(dst []byte, index, prev uint64, t time.Time, typ uint16, keyID uint32, payload []byte, c Cipher) ([]byte, error) {
	start := len(dst)
	dst = append(dst, make([]byte, frameHeaderLen)...)
	body := len(dst)
	dst = binary.BigEndian.AppendUint64(dst, index)
	dst = binary.BigEndian.AppendUint64(dst, prev)
	dst = binary.BigEndian.AppendUint64(dst, uint64(toNanos(t))) // #nosec G115 -- an int64 of Unix nanoseconds stored as its bits (read back with int64())
	dst = binary.BigEndian.AppendUint16(dst, typ)
	dst = binary.BigEndian.AppendUint32(dst, keyID)
	if keyID == 0 {
		dst = append(dst, payload...)
	} else {
		if c == nil {
			return dst[:start], fmt.Errorf("key id %d needs a cipher", keyID)
		}
		aad := make([]byte, bodyFixedLen)
		copy(aad, dst[body:])
		sealed, err := c.Seal(keyID, payload, aad)
		if err != nil {
			return dst[:start], fmt.Errorf("seal with key %d: %w", keyID, err)
		}
		dst = append(dst, sealed...)
	}
	n := len(dst) - body
	if n > MaxBodyBytes {
		return dst[:start], fmt.Errorf("record body of %d bytes exceeds the limit of %d", n, MaxBodyBytes)
	}
	binary.BigEndian.PutUint32(dst[start:], uint32(n)) // #nosec G115 -- n <= MaxBodyBytes, checked just above
	binary.BigEndian.PutUint32(dst[start+4:], crc(dst[body:]))
	return dst, nil
}

// footerFrame is the TypeSegmentEnd frame closing a segment.
func footerFrame(last uint64, count uint32, t time.Time) []byte {
	p := make([]byte, footerPayloadLen)
	binary.BigEndian.PutUint64(p, last)
	binary.BigEndian.PutUint32(p[8:], count)
	b, _ := appendFrame(make([]byte, 0, footerFrameLen), last, last, t, TypeSegmentEnd, 0, p, nil)
	return b
}

// body is a parsed record body.
type body struct {
	index, prev uint64
	time        int64
	typ         uint16
	keyID       uint32
	payload     []byte // aliases the read buffer
}

func parseBody(b []byte) body {
	be := binary.BigEndian
	return body{
		index:   be.Uint64(b[0:]),
		prev:    be.Uint64(b[8:]),
		time:    int64(be.Uint64(b[16:])), // #nosec G115 -- Unix nanoseconds stored as the bits of an int64: the conversion restores them
		typ:     be.Uint16(b[24:]),
		keyID:   be.Uint32(b[26:]),
		payload: b[bodyFixedLen:],
	}
}

// CorruptError reports the first damage found in a journal.
type CorruptError struct {
	File   string // segment file name (base name, as SegmentInfo.Name)
	Offset int64  // byte offset in File of the damaged header (0) or frame
	Index  uint64 // record index if known (read from the damaged frame: may itself be damaged), else 0
	Reason string

	// Added to the agreed API:
	Path string // full path of File
	// Torn is set when the damage is a bad final frame of the last, unclosed
	// segment, as a crash during a write leaves it. Open repairs exactly this
	// by truncating the file at Offset; Verify still reports it.
	Torn bool

	// Gap is set when records are missing between two segments (a
	// segment was moved aside or lost): see FillGap.
	Gap *Gap

	frame   bool // damage is in frame framing/CRC (not semantics)
	noLater bool // no valid frame starts after the damage
}

// Gap describes records missing between two segments, as when a damaged
// segment was moved aside.
type Gap struct {
	From, To   uint64 // the missing indexes (inclusive)
	Prev, Next string // the segments around the gap (file names); Next starts after To
	// Older lists Prev and every segment before it, oldest first: moving
	// them aside leaves a journal that begins after the gap.
	Older []string
}

// Advice says what an open does about the gap when the raft log holds
// entries from raftFirst on (0: the log is empty): rebuild the missing
// records, or refuse, naming the segments to move aside and why.
func (g *Gap) Advice(raftFirst uint64) (rebuild bool, msg string) {
	if raftFirst != 0 && raftFirst <= g.From {
		return true, fmt.Sprintf("records %d-%d are missing between segments %s and %s (a segment was moved aside or lost); the raft log still holds them: they are rebuilt into a new segment between the two",
			g.From, g.To, g.Prev, g.Next)
	}
	held := "the raft log is empty"
	if raftFirst != 0 {
		held = fmt.Sprintf("the raft log starts at %d", raftFirst)
	}
	return false, fmt.Sprintf("records %d-%d are missing between segments %s and %s (a segment was moved aside or lost) and cannot be rebuilt: %s. "+
		"A journal must be contiguous: move aside the %d segment(s) before the gap (%s), keeping them with the moved one for analysis; the journal then begins at record %d. "+
		"Incremental backups that need the moved records fail afterwards: take a full backup once open",
		g.From, g.To, g.Prev, g.Next, held, len(g.Older), strings.Join(g.Older, ", "), g.To+1)
}

func (e *CorruptError) Error() string {
	if e.Index != 0 {
		return fmt.Sprintf("journal %s: offset %d: record %d: %s", e.File, e.Offset, e.Index, e.Reason)
	}
	return fmt.Sprintf("journal %s: offset %d: %s", e.File, e.Offset, e.Reason)
}

// Repair describes the torn tail Open removed.
type Repair struct {
	File         string // segment file name
	Offset       int64  // the file was truncated to this size
	DroppedBytes int64
	Reason       string // what was wrong with the dropped tail
	Path         string // added: full path of File
}
