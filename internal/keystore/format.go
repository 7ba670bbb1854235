package keystore

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"time"

	"golang.org/x/crypto/argon2"
)

// FormatVersion and AutoOpenVersion are the versions of keystore.ks and
// keystore.aks this build writes and reads.
const (
	FormatVersion   = formatVersion
	AutoOpenVersion = aksVersion
)

// Layout constants; see FORMAT.md.
const (
	ksMagic       = "COFFERKS"
	aksMagic      = "COFFERAK"
	formatVersion = 1
	aksVersion    = 1
	kdfArgon2id   = 1

	saltSize    = 16
	nonceSize   = 12
	keySize     = 32
	tagSize     = 16
	trailerSize = sha256.Size

	// keystore.ks fixed header.
	ksOffVersion = 8
	ksOffKDFID   = 10
	ksOffTime    = 11
	ksOffMemory  = 15
	ksOffThreads = 19
	ksOffSalt    = 20
	ksOffNonce   = 36
	ksOffLength  = 48
	ksOffCRC     = 52
	ksHeaderSize = 56

	// keystore.aks fixed header.
	aksOffVersion = 8
	aksOffSalt    = 10
	aksOffNonce   = 26
	aksOffLength  = 38
	aksOffCRC     = 42
	aksHeaderSize = 46

	// One MEK record in a payload: number u32, created unix-nanoseconds i64, key.
	mekRecordSize = 4 + 8 + keySize
	// The fixed part of the aks payload before the MEK list.
	aksPayloadFixed = sha256.Size + 1 + 4 + 4 + 1 + saltSize + keySize

	// maxFileSize bounds what is read from disk: about 380,000 generations.
	maxFileSize = 16 << 20

	aksInfo = "coffer keystore.aks v1"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// mek is one master key generation.
type mek struct {
	number  uint32
	created time.Time
	key     []byte
}

func wipeMEKs(gens []mek) {
	for i := range gens {
		clear(gens[i].key)
	}
}

// sealing is what seals keystore.ks: the Argon2id parameters and salt, and
// the KEK derived from the passphrase with them.
type sealing struct {
	kdf  KDFParams
	salt [saltSize]byte
	kek  []byte
}

func deriveKEK(passphrase, salt []byte, p KDFParams) []byte {
	return argon2.IDKey(passphrase, salt, p.Time, p.MemoryKiB, p.Threads, keySize)
}

func deriveAKSKey(identity, salt []byte, absDir string) ([]byte, error) {
	k, err := hkdf.Key(sha256.New, identity, salt, aksInfo+absDir, keySize)
	if err != nil {
		return nil, fmt.Errorf("derive auto-open key: %w", err)
	}
	return k, nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// readLimited reads a keystore file, refusing anything larger than
// maxFileSize without reading it. A missing file wraps os.ErrNotExist.
func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("%w: %s: larger than %d bytes, not a keystore file", ErrCorrupt, path, maxFileSize)
	}
	return data, nil
}

// frame describes the integrity framing shared by keystore.ks and
// keystore.aks: magic, fixed header ending in a CRC-32C, total length field,
// body, SHA-256 trailer.
type frame struct {
	magic      string
	headerSize int
	offLength  int
}

var (
	ksFrame  = frame{magic: ksMagic, headerSize: ksHeaderSize, offLength: ksOffLength}
	aksFrame = frame{magic: aksMagic, headerSize: aksHeaderSize, offLength: aksOffLength}
)

// check verifies data in the order documented in FORMAT.md so that any
// truncation is ErrTruncated and any other damage ErrCorrupt.
func (f frame) check(path string, data []byte) error {
	n := len(data)
	hs := f.headerSize
	if n < hs {
		return fmt.Errorf("%w: %s: expected at least %d bytes (fixed header), found %d", ErrTruncated, path, hs, n)
	}
	if string(data[:len(f.magic)]) != f.magic {
		return fmt.Errorf("%w: %s: bad magic in bytes 0-%d (expected %q)", ErrCorrupt, path, len(f.magic)-1, f.magic)
	}
	crcOff := hs - 4
	if crc32.Checksum(data[:crcOff], castagnoli) != binary.BigEndian.Uint32(data[crcOff:hs]) {
		return fmt.Errorf("%w: %s: header checksum (CRC-32C in bytes %d-%d) does not match header bytes 0-%d",
			ErrCorrupt, path, crcOff, hs-1, crcOff-1)
	}
	declared := int64(binary.BigEndian.Uint32(data[f.offLength:]))
	minLen := int64(hs + tagSize + trailerSize)
	if declared < minLen || declared > maxFileSize {
		return fmt.Errorf("%w: %s: declared length %d (bytes %d-%d) is outside %d..%d",
			ErrCorrupt, path, declared, f.offLength, f.offLength+3, minLen, maxFileSize)
	}
	if declared > int64(n) {
		return fmt.Errorf("%w: %s: expected %d bytes, found %d", ErrTruncated, path, declared, n)
	}
	if declared < int64(n) {
		return fmt.Errorf("%w: %s: %d trailing bytes after the declared length %d (bytes %d-%d)",
			ErrCorrupt, path, int64(n)-declared, declared, declared, n-1)
	}
	sum := sha256.Sum256(data[:n-trailerSize])
	if subtle.ConstantTimeCompare(sum[:], data[n-trailerSize:]) != 1 {
		return fmt.Errorf("%w: %s: SHA-256 trailer (bytes %d-%d) does not match bytes 0-%d",
			ErrCorrupt, path, n-trailerSize, n-1, n-trailerSize-1)
	}
	return nil
}

// finish fills in length and CRC of hdr (already holding the other fields)
// for a file of total length total.
func (f frame) finish(hdr []byte, total int) {
	binary.BigEndian.PutUint32(hdr[f.offLength:], uint32(total)) // #nosec G115 -- a keystore file is at most maxFileSize (16 MiB)
	crcOff := f.headerSize - 4
	binary.BigEndian.PutUint32(hdr[crcOff:], crc32.Checksum(hdr[:crcOff], castagnoli))
}

// seal returns hdr || GCM(key, nonce, payload, aad=hdr) || SHA-256.
func (f frame) seal(hdr, nonce, key, payload []byte) ([]byte, error) {
	total := f.headerSize + len(payload) + tagSize + trailerSize
	if total > maxFileSize {
		return nil, fmt.Errorf("keystore file would be %d bytes, more than the maximum %d", total, maxFileSize)
	}
	f.finish(hdr, total)
	aead, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	out := make([]byte, f.headerSize, total)
	copy(out, hdr)
	out = aead.Seal(out, nonce, payload, hdr)
	sum := sha256.Sum256(out)
	return append(out, sum[:]...), nil
}

// ksHeader is the parsed fixed header of keystore.ks.
type ksHeader struct {
	version uint16
	kdf     KDFParams
	salt    [saltSize]byte
	nonce   [nonceSize]byte
	length  int
	raw     []byte
}

// parseKS verifies the framing of keystore.ks and parses its header.
func parseKS(path string, data []byte) (*ksHeader, error) {
	if err := ksFrame.check(path, data); err != nil {
		return nil, err
	}
	h := &ksHeader{
		version: binary.BigEndian.Uint16(data[ksOffVersion:]),
		kdf: KDFParams{
			Time:      binary.BigEndian.Uint32(data[ksOffTime:]),
			MemoryKiB: binary.BigEndian.Uint32(data[ksOffMemory:]),
			Threads:   data[ksOffThreads],
		},
		length: len(data),
		raw:    data[:ksHeaderSize],
	}
	copy(h.salt[:], data[ksOffSalt:])
	copy(h.nonce[:], data[ksOffNonce:])
	switch {
	case h.version == 0:
		return nil, fmt.Errorf("%w: %s: format version 0 (bytes %d-%d) is invalid", ErrCorrupt, path, ksOffVersion, ksOffVersion+1)
	case h.version != formatVersion:
		return nil, fmt.Errorf("%w: %s: format version %d, this build reads version %d", ErrUnsupportedVersion, path, h.version, formatVersion)
	}
	if id := data[ksOffKDFID]; id != kdfArgon2id {
		return nil, fmt.Errorf("%w: %s: KDF id %d, this build knows %d (Argon2id)", ErrUnsupportedVersion, path, id, kdfArgon2id)
	}
	if err := h.kdf.validate(); err != nil {
		return nil, fmt.Errorf("%w: %s: KDF parameters in bytes %d-%d: %v", ErrCorrupt, path, ksOffTime, ksOffThreads, err)
	}
	return h, nil
}

// openKS decrypts the payload of a verified keystore.ks.
func openKS(h *ksHeader, data, kek []byte) ([]byte, error) {
	aead, err := newGCM(kek)
	if err != nil {
		return nil, err
	}
	return aead.Open(nil, h.nonce[:], data[ksHeaderSize:h.length-trailerSize], h.raw)
}

// sealKS builds a keystore.ks file.
func sealKS(sl sealing, payload []byte) ([]byte, error) {
	hdr := make([]byte, ksHeaderSize)
	copy(hdr, ksMagic)
	binary.BigEndian.PutUint16(hdr[ksOffVersion:], formatVersion)
	hdr[ksOffKDFID] = kdfArgon2id
	binary.BigEndian.PutUint32(hdr[ksOffTime:], sl.kdf.Time)
	binary.BigEndian.PutUint32(hdr[ksOffMemory:], sl.kdf.MemoryKiB)
	hdr[ksOffThreads] = sl.kdf.Threads
	copy(hdr[ksOffSalt:], sl.salt[:])
	nonce := hdr[ksOffNonce : ksOffNonce+nonceSize]
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("generate nonce: %w", err)
	}
	return ksFrame.seal(hdr, nonce, sl.kek, payload)
}

// aksHeader is the parsed fixed header of keystore.aks.
type aksHeader struct {
	salt   [saltSize]byte
	nonce  [nonceSize]byte
	length int
	raw    []byte
}

func parseAKS(path string, data []byte) (*aksHeader, error) {
	// The version is read before the frame is checked: a newer format may
	// frame the file differently, and is to be named as newer, not damaged.
	newer := len(data) >= aksOffVersion+2 && string(data[:len(aksMagic)]) == aksMagic &&
		binary.BigEndian.Uint16(data[aksOffVersion:]) > aksVersion
	if err := aksFrame.check(path, data); err != nil {
		if newer {
			return nil, fmt.Errorf("%w: %s: format version %d, this build reads version %d; the rest does not check in this build's layout (%w)",
				ErrUnsupportedVersion, path, binary.BigEndian.Uint16(data[aksOffVersion:]), aksVersion, err)
		}
		return nil, err
	}
	switch v := binary.BigEndian.Uint16(data[aksOffVersion:]); {
	case v == 0:
		return nil, fmt.Errorf("%w: %s: format version 0 (bytes %d-%d) is invalid", ErrCorrupt, path, aksOffVersion, aksOffVersion+1)
	case v != aksVersion:
		return nil, fmt.Errorf("%w: %s: format version %d, this build reads version %d", ErrUnsupportedVersion, path, v, aksVersion)
	}
	h := &aksHeader{length: len(data), raw: data[:aksHeaderSize]}
	copy(h.salt[:], data[aksOffSalt:])
	copy(h.nonce[:], data[aksOffNonce:])
	return h, nil
}

func openAKS(h *aksHeader, data, key []byte) ([]byte, error) {
	aead, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	return aead.Open(nil, h.nonce[:], data[aksHeaderSize:h.length-trailerSize], h.raw)
}

func sealAKS(salt [saltSize]byte, key, payload []byte) ([]byte, error) {
	hdr := make([]byte, aksHeaderSize)
	copy(hdr, aksMagic)
	binary.BigEndian.PutUint16(hdr[aksOffVersion:], aksVersion)
	copy(hdr[aksOffSalt:], salt[:])
	nonce := hdr[aksOffNonce : aksOffNonce+nonceSize]
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("generate nonce: %w", err)
	}
	return aksFrame.seal(hdr, nonce, key, payload)
}

// encodeMEKs encodes the MEK list: current u32, count u32, then per
// generation number u32, created i64 (Unix nanoseconds), key [32].
func encodeMEKs(gens []mek, current uint32) []byte {
	return appendMEKs(make([]byte, 0, 8+len(gens)*mekRecordSize), gens, current)
}

func appendMEKs(b []byte, gens []mek, current uint32) []byte {
	b = binary.BigEndian.AppendUint32(b, current)
	b = binary.BigEndian.AppendUint32(b, uint32(len(gens))) // #nosec G115 -- master key generations are numbered by a uint32 already
	for _, g := range gens {
		b = binary.BigEndian.AppendUint32(b, g.number)
		b = binary.BigEndian.AppendUint64(b, uint64(g.created.UnixNano()))
		b = append(b, g.key...)
	}
	return b
}

// decodeMEKs parses an MEK list; the keys are copies (wipe them with wipeMEKs).
// Errors describe the structure only.
func decodeMEKs(b []byte) ([]mek, uint32, error) {
	if len(b) < 8 {
		return nil, 0, fmt.Errorf("master key list is %d bytes, shorter than its 8-byte header", len(b))
	}
	current := binary.BigEndian.Uint32(b)
	count := binary.BigEndian.Uint32(b[4:])
	rest := b[8:]
	if count == 0 {
		return nil, 0, errors.New("master key list is empty")
	}
	if uint64(count)*mekRecordSize != uint64(len(rest)) {
		return nil, 0, fmt.Errorf("master key list declares %d generations (%d bytes), has %d bytes", count, uint64(count)*mekRecordSize, len(rest))
	}
	gens := make([]mek, count)
	hasCurrent := false
	for i := range gens {
		r := rest[i*mekRecordSize : (i+1)*mekRecordSize]
		g := mek{
			number:  binary.BigEndian.Uint32(r),
			created: time.Unix(0, int64(binary.BigEndian.Uint64(r[4:]))).UTC(), // #nosec G115 -- Unix nanoseconds stored as the bits of an int64: the conversion restores them
			key:     append([]byte(nil), r[12:]...),
		}
		if g.number == 0 || (i > 0 && g.number <= gens[i-1].number) {
			wipeMEKs(gens)
			return nil, 0, fmt.Errorf("master key generation numbers not strictly ascending from 1 at record %d", i)
		}
		gens[i] = g
		hasCurrent = hasCurrent || g.number == current
	}
	if !hasCurrent {
		wipeMEKs(gens)
		return nil, 0, fmt.Errorf("current generation %d is not in the list", current)
	}
	return gens, current, nil
}

// aksContent is the decrypted payload of keystore.aks.
type aksContent struct {
	ksHash  [sha256.Size]byte
	seal    sealing
	gens    []mek
	current uint32
}

func (a *aksContent) wipe() {
	clear(a.seal.kek)
	wipeMEKs(a.gens)
}

// encodeAKSPayload encodes: SHA-256 of keystore.ks, KDF id u8, time u32,
// memory u32, threads u8, salt [16], KEK [32], MEK list. Caller holds r.mu.
func encodeAKSPayload(r *ring) []byte {
	b := make([]byte, 0, aksPayloadFixed+8+len(r.gens)*mekRecordSize)
	b = append(b, r.ksHash[:]...)
	b = append(b, kdfArgon2id)
	b = binary.BigEndian.AppendUint32(b, r.seal.kdf.Time)
	b = binary.BigEndian.AppendUint32(b, r.seal.kdf.MemoryKiB)
	b = append(b, r.seal.kdf.Threads)
	b = append(b, r.seal.salt[:]...)
	b = append(b, r.seal.kek...)
	gens := make([]mek, len(r.gens))
	for i, g := range r.gens {
		gens[i] = g.mek // shares the key bytes; appendMEKs only reads them
	}
	return appendMEKs(b, gens, r.current)
}

func decodeAKSPayload(b []byte) (*aksContent, error) {
	if len(b) < aksPayloadFixed {
		return nil, fmt.Errorf("payload is %d bytes, shorter than its fixed part of %d", len(b), aksPayloadFixed)
	}
	a := &aksContent{}
	copy(a.ksHash[:], b)
	p := b[sha256.Size:]
	if p[0] != kdfArgon2id {
		return nil, fmt.Errorf("KDF id %d unknown", p[0])
	}
	a.seal.kdf = KDFParams{
		Time:      binary.BigEndian.Uint32(p[1:]),
		MemoryKiB: binary.BigEndian.Uint32(p[5:]),
		Threads:   p[9],
	}
	if err := a.seal.kdf.validate(); err != nil {
		return nil, fmt.Errorf("KDF parameters: %w", err)
	}
	copy(a.seal.salt[:], p[10:])
	a.seal.kek = append([]byte(nil), p[10+saltSize:10+saltSize+keySize]...)
	gens, current, err := decodeMEKs(b[aksPayloadFixed:])
	if err != nil {
		clear(a.seal.kek)
		return nil, err
	}
	a.gens, a.current = gens, current
	return a, nil
}
