package bundle

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"testing"
)

// layout locates the parts of a well-formed bundle.
type layout struct {
	size, hdrLen, trailer, json, tail int // tail: offset of L
}

func layoutOf(t testing.TB, b []byte) layout {
	t.Helper()
	tr, err := readTrailer(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	return layout{size: len(b), hdrLen: int(tr.hdrLen), trailer: int(tr.off), json: int(tr.off) + bodyFixed, tail: len(b) - tailLen}
}

// reseal rewrites b's trailer around edit(manifest) and recomputes every
// checksum and hash (head CRC, age header hash, payload hash and size,
// trailer CRC), keeping the version bytes as they are: the file then passes
// every check that needs no key. It works on any b long enough to hold a
// head and a tail whose length field points inside the file.
func reseal(b []byte, edit func(m map[string]any)) ([]byte, bool) {
	if len(b) < headLen+bodyFixed+tailLen {
		return nil, false
	}
	tail := b[len(b)-tailLen:]
	bodyLen := int(binary.BigEndian.Uint32(tail))
	trailerOff := len(b) - tailLen - bodyLen
	if bodyLen < bodyFixed || trailerOff < headLen {
		return nil, false
	}
	body := b[trailerOff : len(b)-tailLen]
	hdrLen := int(binary.BigEndian.Uint32(body))
	payload := b[headLen:trailerOff]
	if hdrLen > len(payload) {
		return nil, false
	}
	var m map[string]any
	if json.Unmarshal(body[bodyFixed:], &m) != nil || m == nil {
		return nil, false
	}
	sum := sha256.Sum256(payload)
	m["payload_sha256"] = hex.EncodeToString(sum[:])
	m["payload_size"] = len(payload)
	if edit != nil {
		edit(m)
	}
	js, err := json.Marshal(m)
	if err != nil {
		return nil, false
	}
	out := append([]byte(nil), b[:headLen-4]...)
	out = binary.BigEndian.AppendUint32(out, crc(out))
	out = append(out, payload...)
	hdrSum := sha256.Sum256(payload[:hdrLen])
	tr := encodeTrailer(js, int64(hdrLen), hdrSum)
	tr[len(tr)-tailLen+4] = tail[4] // keep the trailer version
	binary.BigEndian.PutUint32(tr[len(tr)-tailLen+5:], crc(tr[:len(tr)-tailLen+5]))
	return append(out, tr...), true
}

// expect is the kind of error each reader must return (nil: success).
type expect struct {
	rm    error // ReadManifest
	noKey error // Verify without decryption
	key   error // Verify with decryption, and Open + reading all
}

// all expects the same kind from every reader.
func all(k error) expect { return expect{k, k, k} }

// head expects a kind from every reader but ReadManifest, which reads only
// the trailer.
func head(k error) expect { return expect{nil, k, k} }

// keyed expects a kind only from the readers that decrypt.
func keyed(k error) expect { return expect{key: k} }

// checkAll runs every reader on b and checks the kinds of error.
func checkAll(t *testing.T, what string, b []byte, dec Decryption, want expect) {
	t.Helper()
	r := bytes.NewReader(b)
	size := int64(len(b))
	check := func(fn string, err, want error) {
		t.Helper()
		if want == nil {
			if err != nil {
				t.Fatalf("%s: %s: %v", what, fn, err)
			}
			return
		}
		wantKind(t, err, want, what+": "+fn)
	}
	_, err := ReadManifest(r, size)
	check("ReadManifest", err, want.rm)
	_, err = Verify(r, size, nil)
	check("Verify(nil)", err, want.noKey)
	_, err = Verify(r, size, &dec)
	check("Verify(dec)", err, want.key)
	_, _, err = openAll(b, dec)
	check("Open", err, want.key)
}

func damageFile(t *testing.T) []byte {
	plain, err := io.ReadAll(newGen(200<<10, 4)) // 4 chunks
	if err != nil {
		t.Fatal(err)
	}
	file, _ := writeBundle(t, testManifest(), passEnc(), plain)
	return file
}

func TestTruncated(t *testing.T) {
	file := damageFile(t)
	l := layoutOf(t, file)
	cuts := []int{0, 1, 13, 14, 15, 18, 19, 20, 19 + l.hdrLen/2, 19 + l.hdrLen - 1, 19 + l.hdrLen, 19 + l.hdrLen + 1,
		(19 + l.trailer) / 2, l.trailer - 1, l.trailer, l.trailer + 1, l.json, (l.json + l.tail) / 2,
		l.tail - 1, l.tail, l.tail + 4, l.tail + 5, l.tail + 9, l.size - len(endMagic)/2, l.size - 1}
	for _, n := range cuts {
		checkAll(t, fmt.Sprintf("cut at %d of %d", n, l.size), file[:n], passDec(), all(ErrTruncated))
	}
	// The caller's size is larger than what the reader can deliver.
	for _, n := range []int{l.size - 1, l.trailer, 100} {
		r := bytes.NewReader(file[:n])
		for _, fn := range []func() error{
			func() error { _, err := ReadManifest(r, int64(l.size)); return err },
			func() error { _, err := Verify(r, int64(l.size), nil); return err },
			func() error {
				_, err := Verify(r, int64(l.size), &Decryption{Passphrase: []byte(testPassphrase)})
				return err
			},
		} {
			wantKind(t, fn(), ErrTruncated, fmt.Sprintf("reader of %d bytes, size %d", n, l.size))
		}
	}
	// Cut inside the payload, but the caller's reader is a real prefix of
	// the file plus a good trailer: the payload itself is short.
	var e *Error
	_, err := Verify(bytes.NewReader(file[:l.trailer-1000]), int64(l.size), nil)
	if !errors.As(err, &e) || e.Kind != ErrTruncated {
		t.Fatalf("got %v", err)
	}
}

func TestBitFlips(t *testing.T) {
	file := damageFile(t)
	l := layoutOf(t, file)
	type region struct {
		name     string
		from, to int
		step     int
		want     expect
		wrongKey bool // also try a wrong key: the damage must be reported
	}
	regions := []region{
		{"head magic", 0, 14, 1, head(ErrNotBundle), true},
		{"head version", 14, 15, 1, head(ErrCorrupt), true},
		{"head CRC", 15, 19, 1, head(ErrCorrupt), true},
		{"age header", 19, 19 + l.hdrLen, 1, head(ErrCorrupt), true},
		{"payload", 19 + l.hdrLen, l.trailer, 1499, head(ErrCorrupt), false},
		{"payload end", l.trailer - 40, l.trailer, 1, head(ErrCorrupt), false},
		{"trailer header length+hash", l.trailer, l.json, 1, all(ErrCorrupt), true},
		{"manifest JSON", l.json, l.tail, 3, all(ErrCorrupt), true},
		{"trailer length", l.tail, l.tail + 4, 1, all(ErrCorrupt), false},
		{"trailer version", l.tail + 4, l.tail + 5, 1, all(ErrCorrupt), false},
		{"trailer CRC", l.tail + 5, l.tail + 9, 1, all(ErrCorrupt), false},
		{"end magic", l.tail + 9, l.size, 1, all(ErrCorrupt), false},
	}
	n := 0
	for _, rg := range regions {
		for off := rg.from; off < rg.to; off += rg.step {
			for _, bit := range []int{off % 8, 7 - off%8} {
				b := bytes.Clone(file)
				b[off] ^= 1 << bit
				what := fmt.Sprintf("%s: bit %d of byte %d", rg.name, bit, off)
				checkAll(t, what, b, passDec(), rg.want)
				if rg.wrongKey {
					_, _, err := openAll(b, Decryption{Passphrase: []byte("wrong")})
					wantKind(t, err, rg.want.key, what+" (wrong key)")
				}
				n++
			}
		}
	}
	t.Logf("%d flips", n)
}

// TestDamageTable is the table of FORMAT.md ("Broken files"), on a real file.
func TestDamageTable(t *testing.T) {
	file := damageFile(t)
	other, _ := writeBundle(t, func() Manifest { m := testManifest(); m.ID = "other"; return m }(), passEnc(), []byte("other payload"))
	for _, tc := range brokenCases(t, file, other) {
		t.Run(tc.name, func(t *testing.T) {
			checkAll(t, tc.name, tc.b, passDec(), tc.want)
			t.Log(errOf(tc.b, passDec()))
		})
	}
}

func errOf(b []byte, dec Decryption) error {
	_, _, err := openAll(b, dec)
	return err
}

type brokenCase struct {
	name string
	b    []byte
	want expect
}

// brokenCases derives the broken files of FORMAT.md from a good file (and
// another good file with the same key).
func brokenCases(t testing.TB, file, other []byte) []brokenCase {
	l := layoutOf(t, file)
	mod := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(file)) }
	resealed := func(b []byte, edit func(m map[string]any)) []byte {
		out, ok := reseal(b, edit)
		if !ok {
			t.Fatal("reseal failed")
		}
		return out
	}
	lo := layoutOf(t, other)
	swapped := append(bytes.Clone(other[:lo.trailer]), file[l.trailer:]...) // other's payload, file's trailer
	return []brokenCase{
		{"intact", file, expect{}},
		{"empty file", nil, all(ErrTruncated)},
		{"not a bundle", []byte("-----BEGIN AGE ENCRYPTED FILE-----\n"), all(ErrNotBundle)},
		{"cut in the header", file[:10], all(ErrTruncated)},
		{"cut in the payload", file[:l.trailer/2], all(ErrTruncated)},
		{"cut in the trailer", file[:l.size-1], all(ErrTruncated)},
		{"bytes appended", append(bytes.Clone(file), '\n'), all(ErrCorrupt)},
		{"bad magic", mod(func(b []byte) []byte { b[0] = 'c'; return b }), head(ErrNotBundle)},
		{"bad header CRC", mod(func(b []byte) []byte { b[17] ^= 1; return b }), head(ErrCorrupt)},
		{"header version 2", resealed(mod(func(b []byte) []byte { b[14] = 2; return b }), nil), head(ErrUnsupported)},
		{"header version 0", resealed(mod(func(b []byte) []byte { b[14] = 0; return b }), nil), head(ErrCorrupt)},
		{"age header changed", mod(func(b []byte) []byte { b[19+8] ^= 0x20; return b }), head(ErrCorrupt)},
		{"payload changed", mod(func(b []byte) []byte { b[l.trailer-100] ^= 1; return b }), head(ErrCorrupt)},
		{"payload changed, hashes recomputed", resealed(mod(func(b []byte) []byte { b[l.trailer-100] ^= 1; return b }), nil), keyed(ErrCorrupt)},
		{"trailer CRC", mod(func(b []byte) []byte { b[l.tail+6] ^= 1; return b }), all(ErrCorrupt)},
		{"trailer length", mod(func(b []byte) []byte { b[l.tail+3]--; return b }), all(ErrCorrupt)},
		{"end magic", mod(func(b []byte) []byte { b[l.size-2] = 'X'; return b }), all(ErrCorrupt)},
		{"trailer version 2", resealed(mod(func(b []byte) []byte { b[l.tail+4] = 2; return b }), nil), all(ErrUnsupported)},
		{"manifest format 2", resealed(file, func(m map[string]any) { m["format"] = 2 }), all(ErrUnsupported)},
		{"manifest not a manifest", resealed(file, func(m map[string]any) { m["format"] = "one" }), all(ErrCorrupt)},
		{"payload_size wrong", resealed(file, func(m map[string]any) { m["payload_size"] = l.trailer }), all(ErrCorrupt)},
		{"payload_sha256 wrong", resealed(file, func(m map[string]any) { m["payload_sha256"] = hex.EncodeToString(make([]byte, 32)) }), head(ErrCorrupt)},
		{"plain_size wrong", resealed(file, func(m map[string]any) { m["plain_size"] = 1 }), keyed(ErrCorrupt)},
		{"last_index changed", resealed(file, func(m map[string]any) { m["last_index"] = 41 }), keyed(ErrCorrupt)},
		{"payload of another bundle", resealed(swapped, nil), keyed(ErrCorrupt)},
	}
}
