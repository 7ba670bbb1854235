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
	"strings"
	"time"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"
)

// zstd parameters. The window bounds the memory of writer and reader; a
// reader refuses frames whose window exceeds maxWindow (FORMAT.md).
//
// Two threads pipeline one stream (klauspost/compress): the caller's Write
// only fills a block, the match search of the previous block and the
// entropy coding, encryption and writing of the one before run in
// goroutines. Memory stays bounded (three blocks and the window), and the
// frame is an ordinary single zstd frame, read by any reader.
const (
	zstdWindow  = 4 << 20
	maxWindow   = 8 << 20
	zstdThreads = 2
)

// zstdLevel is the compression level. A backup is mostly bbolt pages: runs
// of zeros (the unused part of each page) and sealed key material, which
// does not compress; the fastest level finds about the same matches in
// them as SpeedDefault for less CPU (docs/performance.md, "Backups").
// Readers do not depend on the level: bundles written at SpeedDefault read
// the same (TestOpenOtherLevels). A variable only so that the tests can
// write what other levels write.
var zstdLevel = zstd.SpeedFastest

// Writer writes one bundle: plaintext in, one file out. It is not safe for
// concurrent use.
type Writer struct {
	dst    *sink
	age    io.WriteCloser
	z      *zstd.Encoder
	m      Manifest
	hdrLen int64
	hdrSum [sha256.Size]byte
	plain  int64
	err    error // sticky
	closed bool
}

// sink counts and hashes the age ciphertext on its way to the file.
type sink struct {
	w       io.Writer
	n       int64
	sum     hash.Hash
	capture *bytes.Buffer // the age header, while age.Encrypt writes it
	err     error
}

func (s *sink) Write(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	n, err := s.w.Write(p)
	s.n += int64(n)
	s.sum.Write(p[:n])
	if s.capture != nil {
		s.capture.Write(p[:n])
	}
	if err == nil && n < len(p) {
		err = io.ErrShortWrite
	}
	if err != nil {
		s.err = fmt.Errorf("bundle: writing at offset %d: %w", int64(headLen)+s.n, err)
	}
	return n, s.err
}

// NewWriter starts a bundle on w: it validates m, writes the header and the
// age header, and returns a Writer for the payload. m.ID and m.Kind are
// required; m.Format 0 means FormatVersion; a zero m.Created becomes the
// current time (UTC); m.Recipients is set from enc, and the sizes and the
// hash by Close. Nothing is written to w if an argument is invalid.
func NewWriter(w io.Writer, m Manifest, enc Encryption) (*Writer, error) {
	rs, fps, err := enc.recipients()
	if err != nil {
		return nil, err
	}
	if err := validate(&m); err != nil {
		return nil, err
	}
	m.Recipients = fps
	m.PlainSize, m.PayloadSize, m.PayloadSHA256 = 0, 0, ""
	if m.Created.IsZero() {
		m.Created = time.Now().UTC()
	}
	inner, err := json.Marshal(&m)
	if err != nil {
		return nil, fmt.Errorf("bundle: manifest: %w", err)
	}
	if len(inner) > maxManifest-200 { // room for the fields Close sets
		return nil, fmt.Errorf("bundle: manifest: %d bytes of JSON, more than %d", len(inner), maxManifest-200)
	}

	if _, err := w.Write(encodeHead()); err != nil {
		return nil, fmt.Errorf("bundle: writing the header: %w", err)
	}
	bw := &Writer{m: m, dst: &sink{w: w, sum: sha256.New(), capture: new(bytes.Buffer)}}
	bw.age, err = ageEncrypt(bw.dst, rs)
	if err != nil {
		return nil, err
	}
	bw.hdrLen = bw.dst.n
	bw.hdrSum = sha256.Sum256(bw.dst.capture.Bytes())
	bw.dst.capture = nil
	if bw.hdrLen == 0 || bw.hdrLen > maxAgeHdr {
		return nil, fmt.Errorf("bundle: age header of %d bytes (too many recipients?)", bw.hdrLen)
	}
	// The payload starts with the manifest, sealed with it.
	prefix := binary.BigEndian.AppendUint32(nil, uint32(len(inner))) // #nosec G115 -- the sealed manifest is a few KiB, far below 4 GiB
	if _, err := bw.age.Write(append(prefix, inner...)); err != nil {
		return nil, err
	}
	bw.z, err = zstd.NewWriter(bw.age,
		zstd.WithEncoderLevel(zstdLevel),
		zstd.WithEncoderConcurrency(zstdThreads),
		zstd.WithWindowSize(zstdWindow),
		zstd.WithLowerEncoderMem(false),
		zstd.WithZeroFrames(true),
		zstd.WithEncoderCRC(true))
	if err != nil {
		return nil, fmt.Errorf("bundle: zstd: %w", err)
	}
	return bw, nil
}

func ageEncrypt(dst *sink, rs []age.Recipient) (io.WriteCloser, error) {
	aw, err := age.Encrypt(dst, rs...)
	if err != nil {
		if dst.err != nil {
			return nil, dst.err
		}
		return nil, fmt.Errorf("bundle: age: %w", err)
	}
	return aw, nil
}

var kinds = []string{KindFull, KindIncremental, KindSegment, KindDump, KindAudit}

func validate(m *Manifest) error {
	switch {
	case m.Format == 0:
		m.Format = FormatVersion
	case m.Format != FormatVersion:
		return fmt.Errorf("bundle: manifest: format %d, this build writes %d", m.Format, FormatVersion)
	}
	if m.ID == "" {
		return errors.New("bundle: manifest: no ID")
	}
	if !slices.Contains(kinds, m.Kind) {
		return fmt.Errorf("bundle: manifest: kind %q is not one of %s", m.Kind, strings.Join(kinds, ", "))
	}
	if m.FirstIndex > m.LastIndex {
		return fmt.Errorf("bundle: manifest: first index %d after last index %d", m.FirstIndex, m.LastIndex)
	}
	return nil
}

// Write compresses and encrypts p. After an error every later call fails.
func (w *Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.closed {
		return 0, errors.New("bundle: write after Close")
	}
	n, err := w.z.Write(p)
	w.plain += int64(n)
	if err != nil {
		w.err = w.cause(err)
	}
	return n, w.err
}

// cause prefers the file's write error to what zstd or age made of it.
func (w *Writer) cause(err error) error {
	if w.dst.err != nil {
		return w.dst.err
	}
	return fmt.Errorf("bundle: %w", err)
}

// Close finishes the zstd stream and the age ciphertext, writes the trailer
// and returns the completed manifest. It does not close the underlying
// writer. Call it even after a Write error, to release the compressor.
func (w *Writer) Close() (Manifest, error) {
	if w.closed {
		return Manifest{}, errors.New("bundle: Close called twice")
	}
	w.closed = true
	zerr := w.z.Close()
	if w.err != nil {
		return Manifest{}, w.err
	}
	if zerr != nil {
		w.err = w.cause(zerr)
		return Manifest{}, w.err
	}
	if err := w.age.Close(); err != nil {
		w.err = w.cause(err)
		return Manifest{}, w.err
	}
	m := w.m
	m.PlainSize = w.plain
	m.PayloadSize = w.dst.n
	m.PayloadSHA256 = hex.EncodeToString(w.dst.sum.Sum(nil))
	js, err := json.Marshal(&m)
	if err != nil {
		w.err = fmt.Errorf("bundle: manifest: %w", err)
		return Manifest{}, w.err
	}
	if len(js) > maxManifest {
		w.err = fmt.Errorf("bundle: manifest: %d bytes of JSON, more than %d", len(js), maxManifest)
		return Manifest{}, w.err
	}
	t := encodeTrailer(js, w.hdrLen, w.hdrSum)
	if n, err := w.dst.w.Write(t); err != nil || n < len(t) {
		if err == nil {
			err = io.ErrShortWrite
		}
		w.err = fmt.Errorf("bundle: writing the trailer at offset %d: %w", int64(headLen)+w.dst.n, err)
		return Manifest{}, w.err
	}
	return m, nil
}
