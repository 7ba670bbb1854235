package bundle

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// File layout (FORMAT.md):
//
//	head     magic "COFFER-BACKUP\n" (14) | version u8 | CRC-32C u32 of bytes 0..14
//	payload  age ciphertext (P bytes): age header + nonce (h bytes), then STREAM chunks
//	trailer  body: h u32 | SHA-256 of the h header bytes | manifest JSON
//	         L u32 (body length) | version u8 | CRC-32C u32 of body..version | end magic
const (
	headMagic = "COFFER-BACKUP\n"
	headLen   = len(headMagic) + 1 + 4 // 19

	endMagic = "COFFER-BACKUP-END\n"
	tailLen  = 4 + 1 + 4 + len(endMagic) // 27: the fixed end of the trailer

	bodyFixed   = 4 + sha256.Size // h and the header hash, before the JSON
	maxManifest = 1 << 20         // JSON bytes, in the trailer and in the payload
	maxAgeHdr   = 1 << 20         // h
	tailRead    = 64 << 10        // first read from the end of the file

	// age STREAM: 64 KiB plaintext chunks, 16-byte Poly1305 tags.
	ageChunk    = 64 << 10
	ageEncChunk = ageChunk + 16
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func crc(b ...[]byte) uint32 {
	var c uint32
	for _, p := range b {
		c = crc32.Update(c, castagnoli, p)
	}
	return c
}

func encodeHead() []byte {
	b := make([]byte, 0, headLen)
	b = append(b, headMagic...)
	b = append(b, FormatVersion)
	return binary.BigEndian.AppendUint32(b, crc(b))
}

// checkHead reads and checks the fixed header.
func checkHead(r io.ReaderAt, size int64) error {
	n := min(size, int64(headLen))
	b := make([]byte, n)
	if err := readAt(r, b, 0, size, "header"); err != nil {
		return err
	}
	if m := min(len(b), len(headMagic)); string(b[:m]) != headMagic[:m] {
		return errf(ErrNotBundle, 0, "no %q magic", headMagic)
	}
	if n < int64(headLen) {
		return errf(ErrTruncated, n, "file ends inside the %d-byte header", headLen)
	}
	if got, want := binary.BigEndian.Uint32(b[15:]), crc(b[:15]); got != want {
		return errf(ErrCorrupt, 15, "header CRC-32C mismatch (stored %08x, computed %08x)", got, want)
	}
	return checkVersion(b[14], 14, "header")
}

func checkVersion(v byte, off int64, where string) error {
	switch {
	case v == 0:
		return errf(ErrCorrupt, off, "%s format version 0", where)
	case v > FormatVersion:
		return errf(ErrUnsupported, off, "%s format version %d (this build reads %d)", where, v, FormatVersion)
	}
	return nil
}

// trailer is a decoded trailer.
type trailer struct {
	m      Manifest
	hdrLen int64             // h: age header + nonce bytes at the start of the payload
	hdrSum [sha256.Size]byte // their SHA-256
	off    int64             // offset of the trailer = headLen + PayloadSize
}

// encodeTrailer builds the trailer for a manifest JSON.
func encodeTrailer(js []byte, hdrLen int64, hdrSum [sha256.Size]byte) []byte {
	b := make([]byte, 0, bodyFixed+len(js)+tailLen)
	b = binary.BigEndian.AppendUint32(b, uint32(hdrLen)) // #nosec G115 -- hdrLen <= maxAgeHdr, checked by the writer
	b = append(b, hdrSum[:]...)
	b = append(b, js...)
	b = binary.BigEndian.AppendUint32(b, uint32(bodyFixed+len(js))) // #nosec G115 -- a manifest is a few KiB (its reader refuses more than maxManifest)
	b = append(b, FormatVersion)
	b = binary.BigEndian.AppendUint32(b, crc(b))
	return append(b, endMagic...)
}

// ReadManifest returns the manifest of the bundle r of size bytes. It reads
// only the end of the file (one read of up to 64 KiB, a second one for
// larger manifests) and needs no key. The manifest is checked by its CRC-32C
// and against the file size; the payload is not read (see [Verify]).
func ReadManifest(r io.ReaderAt, size int64) (Manifest, error) {
	t, err := readTrailer(r, size)
	if err != nil {
		return Manifest{}, err
	}
	return t.m, nil
}

func readTrailer(r io.ReaderAt, size int64) (*trailer, error) {
	if size < 0 {
		return nil, fmt.Errorf("bundle: negative size %d", size)
	}
	start := max(0, size-tailRead)
	buf := make([]byte, size-start)
	if err := readAt(r, buf, start, size, "trailer"); err != nil {
		return nil, err
	}
	if !bytes.HasSuffix(buf, []byte(endMagic)) {
		return nil, noEndMagic(r, size, buf, start)
	}
	return parseTrailer(r, size, buf, start)
}

// noEndMagic explains why the file does not end with the end magic.
func noEndMagic(r io.ReaderAt, size int64, buf []byte, start int64) error {
	// Only the end magic itself damaged: the rest of the trailer checks out.
	if _, err := parseTrailer(r, size, buf, start); err == nil {
		return errf(ErrCorrupt, size-int64(len(endMagic)), "end magic damaged (the rest of the trailer is intact)")
	}
	// Something appended after a complete bundle.
	if i := bytes.LastIndex(buf, []byte(endMagic)); i >= 0 {
		end := start + int64(i+len(endMagic))
		return errf(ErrCorrupt, end, "%d bytes of unknown data after the end magic", size-end)
	}
	if err := checkHead(r, size); err != nil && (errors.Is(err, ErrNotBundle) || !isFormatError(err)) {
		return err
	}
	return errf(ErrTruncated, size, "file ends without a trailer (%q); it was cut", endMagic)
}

func isFormatError(err error) bool {
	var e *Error
	return errors.As(err, &e)
}

// parseTrailer decodes the trailer of a file of the given size whose last
// len(buf) bytes, starting at offset start, are in buf. It assumes the end
// magic is present without checking it.
func parseTrailer(r io.ReaderAt, size int64, buf []byte, start int64) (*trailer, error) {
	if size < int64(headLen+bodyFixed+tailLen) {
		return nil, errf(ErrCorrupt, 0, "file of %d bytes is too small for a bundle", size)
	}
	tail := buf[len(buf)-tailLen:]
	lOff := size - int64(tailLen)
	bodyLen := int64(binary.BigEndian.Uint32(tail))
	version := tail[4]
	sum := binary.BigEndian.Uint32(tail[5:])
	if bodyLen < bodyFixed+2 || bodyLen > bodyFixed+maxManifest {
		return nil, errf(ErrCorrupt, lOff, "trailer length %d out of range %d..%d", bodyLen, bodyFixed+2, bodyFixed+maxManifest)
	}
	off := lOff - bodyLen
	if off < int64(headLen) {
		return nil, errf(ErrCorrupt, lOff, "trailer length %d exceeds the file (%d bytes)", bodyLen, size)
	}
	var body []byte
	if off >= start {
		body = buf[off-start : lOff-start]
	} else {
		body = make([]byte, bodyLen)
		if err := readAt(r, body, off, size, "trailer"); err != nil {
			return nil, err
		}
	}
	if got := crc(body, tail[:5]); got != sum {
		return nil, errf(ErrCorrupt, lOff+5, "trailer CRC-32C mismatch (stored %08x, computed %08x over offsets %d..%d)", sum, got, off, lOff+5)
	}
	if err := checkVersion(version, lOff+4, "trailer"); err != nil {
		return nil, err
	}
	t := &trailer{off: off, hdrLen: int64(binary.BigEndian.Uint32(body))}
	copy(t.hdrSum[:], body[4:bodyFixed])
	js := body[bodyFixed:]
	jsOff := off + bodyFixed
	if err := json.Unmarshal(js, &t.m); err != nil {
		return nil, &Error{Kind: ErrCorrupt, Offset: jsOff, Reason: "manifest JSON", Err: err}
	}
	m := &t.m
	if m.Format != FormatVersion {
		if m.Format > FormatVersion {
			return nil, errf(ErrUnsupported, jsOff, "manifest format %d (this build reads %d)", m.Format, FormatVersion)
		}
		return nil, errf(ErrCorrupt, jsOff, "manifest format %d", m.Format)
	}
	if m.PayloadSize != off-int64(headLen) {
		return nil, errf(ErrCorrupt, jsOff, "manifest payload_size %d, but the payload spans %d bytes (offsets %d..%d)", m.PayloadSize, off-int64(headLen), headLen, off)
	}
	if b, err := hex.DecodeString(m.PayloadSHA256); err != nil || len(b) != sha256.Size || hex.EncodeToString(b) != m.PayloadSHA256 {
		return nil, errf(ErrCorrupt, jsOff, "manifest payload_sha256 %q is not a lowercase hex SHA-256", m.PayloadSHA256)
	}
	if m.PlainSize < 0 {
		return nil, errf(ErrCorrupt, jsOff, "manifest plain_size %d", m.PlainSize)
	}
	if t.hdrLen == 0 || t.hdrLen > maxAgeHdr || t.hdrLen > m.PayloadSize {
		return nil, errf(ErrCorrupt, off, "age header length %d out of range 1..%d", t.hdrLen, min(maxAgeHdr, m.PayloadSize))
	}
	return t, nil
}

// readAt fills b from offset off of a file the caller says has size bytes.
func readAt(r io.ReaderAt, b []byte, off, size int64, what string) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || err == io.EOF || err == io.ErrUnexpectedEOF {
		return errf(ErrTruncated, off+int64(n), "reading the %s: the file ends before its given size %d", what, size)
	}
	return fmt.Errorf("bundle: reading the %s at offset %d: %w", what, off+int64(n), err)
}
