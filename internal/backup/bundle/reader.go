package bundle

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"slices"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"
)

// checkFraming checks what needs no key: the header, the trailer and the
// SHA-256 of the age header. It returns the trailer and the age header bytes.
func checkFraming(r io.ReaderAt, size int64) (*trailer, []byte, error) {
	if size < 0 {
		return nil, nil, fmt.Errorf("bundle: negative size %d", size)
	}
	if err := checkHead(r, size); err != nil {
		return nil, nil, err
	}
	t, err := readTrailer(r, size)
	if err != nil {
		return nil, nil, err
	}
	hdr := make([]byte, t.hdrLen)
	if err := readAt(r, hdr, int64(headLen), size, "age header"); err != nil {
		return t, nil, err
	}
	if sha256.Sum256(hdr) != t.hdrSum {
		return t, nil, errf(ErrCorrupt, int64(headLen), "age header (%d bytes) does not match its SHA-256 in the trailer", t.hdrLen)
	}
	return t, hdr, nil
}

// Verify checks the bundle r of size bytes without trusting anything in it:
// header, trailer, and the SHA-256 of the whole ciphertext. With dec it also
// decrypts and decompresses everything (to io.Discard), which authenticates
// the payload and the manifest. The manifest is returned whenever the
// trailer could be decoded, also with an error.
func Verify(r io.ReaderAt, size int64, dec *Decryption) (Manifest, error) {
	if dec != nil {
		rc, m, err := Open(r, size, *dec)
		if err != nil {
			return m, err
		}
		defer rc.Close()
		_, err = io.Copy(io.Discard, rc)
		return m, err
	}
	t, hdr, err := checkFraming(r, size)
	if err != nil {
		if t != nil {
			return t.m, err
		}
		return Manifest{}, err
	}
	// Large reads: r may be remote (io.Discard's ReadFrom would read 8 KiB
	// at a time).
	src := newSource(r, size, t, hdr)
	buf := make([]byte, 256<<10)
	for {
		_, err := io.ReadFull(src, buf)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return t.m, err
		}
	}
	return t.m, src.check()
}

// source reads the ciphertext after the age header, hashing it (from the
// age header on) and turning short reads into ErrTruncated.
type source struct {
	r    *io.SectionReader
	off  int64 // file offset of r's start
	want int64 // bytes r should yield
	n    int64
	size int64
	t    *trailer
	sum  hash.Hash
	err  error // the first error other than io.EOF, as returned
}

func newSource(r io.ReaderAt, size int64, t *trailer, hdr []byte) *source {
	off := int64(headLen) + t.hdrLen
	s := &source{r: io.NewSectionReader(r, off, t.off-off), off: off, want: t.off - off, size: size, t: t, sum: sha256.New()}
	s.sum.Write(hdr)
	return s
}

func (s *source) Read(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	n, err := s.r.Read(p)
	s.sum.Write(p[:n])
	s.n += int64(n)
	switch {
	case err == io.EOF && s.n < s.want:
		err = errf(ErrTruncated, s.off+s.n, "reading the payload: the file ends before its given size %d", s.size)
	case err != nil && err != io.EOF:
		err = fmt.Errorf("bundle: reading the payload at offset %d: %w", s.off+s.n, err)
	}
	if err != nil && err != io.EOF {
		s.err = err
	}
	return n, err
}

// check compares the hash of everything read with the manifest.
func (s *source) check() error {
	if s.n != s.want {
		return errf(ErrCorrupt, s.off+s.n, "payload read stopped %d bytes before its end", s.want-s.n)
	}
	if got := hex.EncodeToString(s.sum.Sum(nil)); got != s.t.m.PayloadSHA256 {
		return errf(ErrCorrupt, int64(headLen), "payload (offsets %d..%d) does not match payload_sha256 (computed %s)", headLen, s.t.off, got)
	}
	return nil
}

// Open returns the plaintext of the bundle r of size bytes and its manifest.
//
// Before it returns, Open checks the header, the trailer and the age header,
// unwraps the file key (a wrong key fails here, with ErrWrongKey) and
// compares the manifest with the copy sealed in the payload. The payload is
// authenticated chunk by chunk as it is read, and its SHA-256 and size are
// checked at the end: callers must stage the plaintext and trust it only
// after Read returned io.EOF, never after another error. The manifest is
// returned whenever the trailer could be decoded, also with an error.
func Open(r io.ReaderAt, size int64, dec Decryption) (io.ReadCloser, Manifest, error) {
	ids, given, err := dec.identities()
	if err != nil {
		return nil, Manifest{}, err
	}
	t, hdr, err := checkFraming(r, size)
	if err != nil {
		if t != nil {
			return nil, t.m, err
		}
		return nil, Manifest{}, err
	}
	pr := &reader{t: t, src: newSource(r, size, t, hdr)}
	ar, err := age.Decrypt(io.MultiReader(bytes.NewReader(hdr), pr.src), ids...)
	if err != nil {
		var nomatch *age.NoIdentityMatchError
		switch {
		case pr.src.err != nil:
			err = pr.src.err
		case errors.As(err, &nomatch):
			err = &Error{Kind: ErrWrongKey, Offset: int64(headLen), Reason: fmt.Sprintf("the file is encrypted to %v; tried %s", t.m.Recipients, given), Err: err}
		default:
			err = &Error{Kind: ErrCorrupt, Offset: int64(headLen), Reason: "age header", Err: err}
		}
		return nil, t.m, err
	}
	pr.age = &counter{r: ar}
	if err := pr.readSealed(); err != nil {
		return nil, t.m, err
	}
	pr.z, err = zstd.NewReader(pr.age,
		// Two: block decoding runs in goroutines ahead of the caller's
		// reads (a bounded pipeline), so decryption, decompression and
		// whatever the caller does with the plaintext overlap.
		zstd.WithDecoderConcurrency(2),
		zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxWindow(maxWindow))
	if err != nil {
		return nil, t.m, pr.fail(err)
	}
	return pr, t.m, nil
}

// counter counts the plaintext age returns and keeps its first error.
type counter struct {
	r   io.Reader
	n   int64
	err error
}

func (c *counter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if err != nil && err != io.EOF && c.err == nil {
		c.err = err
	}
	return n, err
}

type reader struct {
	t     *trailer
	src   *source
	age   *counter
	z     *zstd.Decoder
	plain int64
	err   error // sticky
}

// payloadOff is the file offset of the first age STREAM chunk.
func (r *reader) payloadOff() int64 { return int64(headLen) + r.t.hdrLen }

// fail turns an error seen while reading the payload into the error of its
// cause: the file (I/O, truncation), age (a chunk fails authentication), or
// else what is inside the ciphertext (zstd, sealed manifest).
func (r *reader) fail(err error) error {
	if r.z != nil {
		// The decoder reads ahead on its own goroutine: stopped before
		// the counters it advances are read.
		r.z.Close()
		r.z = nil
	}
	chunk := r.age.n / ageChunk
	at := r.payloadOff() + chunk*ageEncChunk
	switch {
	case r.src.err != nil:
		return r.src.err
	case r.age.err != nil:
		return &Error{Kind: ErrCorrupt, Offset: at, Reason: fmt.Sprintf("payload chunk %d fails authentication", chunk), Err: r.age.err}
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		return errf(ErrCorrupt, at, "payload ends early (chunk %d)", chunk)
	}
	return &Error{Kind: ErrCorrupt, Offset: at, Reason: fmt.Sprintf("zstd stream (in payload chunk %d)", chunk), Err: err}
}

// readSealed reads the manifest at the start of the payload and compares it
// with the trailer's.
func (r *reader) readSealed() error {
	var lb [4]byte
	if _, err := io.ReadFull(r.age, lb[:]); err != nil {
		return r.fail(err)
	}
	n := binary.BigEndian.Uint32(lb[:])
	if n < 2 || n > maxManifest {
		return errf(ErrCorrupt, r.payloadOff(), "sealed manifest length %d out of range 2..%d", n, maxManifest)
	}
	js := make([]byte, n)
	if _, err := io.ReadFull(r.age, js); err != nil {
		return r.fail(err)
	}
	var sealed Manifest
	if err := json.Unmarshal(js, &sealed); err != nil {
		return &Error{Kind: ErrCorrupt, Offset: r.payloadOff(), Reason: "sealed manifest JSON", Err: err}
	}
	if field := manifestDiff(sealed, r.t.m); field != "" {
		return errf(ErrCorrupt, r.t.off+bodyFixed, "manifest field %q differs from the copy sealed in the payload", field)
	}
	return nil
}

// manifestDiff names the first JSON field in which a and b differ, ignoring
// the fields Close sets, or returns "".
func manifestDiff(a, b Manifest) string {
	enc := func(m Manifest) ([]byte, map[string]json.RawMessage) {
		m.PlainSize, m.PayloadSize, m.PayloadSHA256 = 0, 0, ""
		js, _ := json.Marshal(&m)
		var fields map[string]json.RawMessage
		json.Unmarshal(js, &fields) // #nosec G104 -- js was just produced by json.Marshal of a struct: it decodes into a map
		return js, fields
	}
	ja, fa := enc(a)
	jb, fb := enc(b)
	if bytes.Equal(ja, jb) {
		return ""
	}
	var keys []string
	for k := range fa {
		keys = append(keys, k)
	}
	for k := range fb {
		if _, ok := fa[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		if !bytes.Equal(fa[k], fb[k]) {
			return k
		}
	}
	return "?"
}

func (r *reader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if r.z == nil {
		return 0, errors.New("bundle: read after Close")
	}
	n, err := r.z.Read(p)
	r.plain += int64(n)
	switch {
	case r.plain > r.t.m.PlainSize:
		err = errf(ErrCorrupt, r.t.off+bodyFixed, "payload longer than plain_size %d", r.t.m.PlainSize)
	case err == io.EOF:
		if err = r.finish(); err == nil {
			err = io.EOF
		}
	case err != nil:
		err = r.fail(err)
	}
	if err != nil {
		r.err = err
	}
	return n, err
}

// finish runs at the end of the zstd stream: age must end there too, and
// the size and hash must match the manifest.
func (r *reader) finish() error {
	n, err := io.Copy(io.Discard, r.age)
	switch {
	case err != nil:
		return r.fail(err)
	case n > 0:
		return errf(ErrCorrupt, r.payloadOff()+(r.age.n-n)/ageChunk*ageEncChunk, "%d bytes after the end of the zstd stream", n)
	case r.plain != r.t.m.PlainSize:
		return errf(ErrCorrupt, r.t.off+bodyFixed, "payload has %d bytes, plain_size says %d", r.plain, r.t.m.PlainSize)
	}
	return r.src.check()
}

// Close releases the decompressor. It does not close the underlying reader.
func (r *reader) Close() error {
	if r.z != nil {
		r.z.Close()
		r.z = nil
	}
	return nil
}
