package bundle

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"os"
	"testing"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"
)

// checkDocumented fails unless err is nil or a documented format error.
func checkDocumented(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		kindOf(t, err)
	}
}

// fuzzSeeds are small real bundles: the vector (a passphrase the fuzz
// targets do not try: it fails with ErrWrongKey before scrypt runs) and
// X25519 bundles that testIdentity1 opens.
func fuzzSeeds(f *testing.F) [][]byte {
	vector, err := os.ReadFile(vectorFile)
	if err != nil {
		f.Fatal(err)
	}
	enc := Encryption{Recipients: []string{testRecipient1}}
	small, _ := writeBundle(f, testManifest(), enc, []byte(vectorPlain))
	empty, _ := writeBundle(f, testManifest(), enc, nil)
	two, _ := writeBundle(f, testManifest(), Encryption{Recipients: []string{testRecipient2, testRecipient1}}, bytes.Repeat([]byte("coffer "), 10000))
	return [][]byte{vector, small, empty, two, small[:len(small)/2], nil, []byte(headMagic)}
}

// FuzzOpen feeds arbitrary bytes to every reader as a bundle. With fix, the
// bytes are first resealed (checksums and hashes recomputed) so that
// mutations reach age. Only documented errors may come out, never a panic.
func FuzzOpen(f *testing.F) {
	for _, seed := range fuzzSeeds(f) {
		f.Add(seed, false)
		f.Add(seed, true)
	}
	dec := Decryption{Identities: []string{testIdentity1}}
	f.Fuzz(func(t *testing.T, b []byte, fix bool) {
		if fix {
			var ok bool
			if b, ok = reseal(b, nil); !ok {
				return
			}
		}
		r := bytes.NewReader(b)
		size := int64(len(b))
		_, rmErr := ReadManifest(r, size)
		checkDocumented(t, "ReadManifest", rmErr)
		vm, vErr := Verify(r, size, nil)
		checkDocumented(t, "Verify(nil)", vErr)
		plain, om, oErr := openAll(b, dec)
		checkDocumented(t, "Open", oErr)
		_, vdErr := Verify(r, size, &dec)
		checkDocumented(t, "Verify(dec)", vdErr)
		if rmErr != nil && (vErr == nil || oErr == nil) {
			t.Fatalf("ReadManifest failed (%v) but Verify (%v) or Open (%v) did not", rmErr, vErr, oErr)
		}
		if (oErr == nil) != (vdErr == nil) {
			t.Fatalf("Open: %v, Verify with key: %v", oErr, vdErr)
		}
		if oErr == nil {
			if vErr != nil {
				t.Fatalf("opens, but Verify without key: %v", vErr)
			}
			if int64(len(plain)) != om.PlainSize || om.ID != vm.ID {
				t.Fatalf("opened %d bytes, manifest %+v", len(plain), om)
			}
		}
	})
}

// FuzzPayload seals arbitrary bytes as the age plaintext of a bundle with
// valid framing, to exercise what Open parses after decryption: the sealed
// manifest and the zstd stream.
func FuzzPayload(f *testing.F) {
	m := testManifest()
	m.Format = 1
	m.Recipients = []string{testRecipient1}
	sealed, _ := json.Marshal(m)
	z, _ := zstd.NewWriter(nil)
	prefix := binary.BigEndian.AppendUint32(nil, uint32(len(sealed)))
	prefix = append(prefix, sealed...)
	good := append(bytes.Clone(prefix), z.EncodeAll([]byte(vectorPlain), nil)...)
	f.Add(good, int64(len(vectorPlain)))
	f.Add(prefix, int64(0))
	f.Add(append(bytes.Clone(prefix), 0x28, 0xb5, 0x2f, 0xfd), int64(0))
	f.Add([]byte{0, 0, 0, 2, '{', '}'}, int64(0))
	dec := Decryption{Identities: []string{testIdentity1}}
	f.Fuzz(func(t *testing.T, agePlain []byte, plainSize int64) {
		file := sealRaw(t, agePlain, m, plainSize)
		plain, _, err := openAll(file, dec)
		checkDocumented(t, "Open", err)
		if err == nil && int64(len(plain)) != plainSize {
			t.Fatalf("opened %d bytes, plain_size %d", len(plain), plainSize)
		}
	})
}

// sealRaw builds a bundle whose age plaintext is agePlain, with a correct
// framing around it and manifest m (sizes and hash filled in).
func sealRaw(t testing.TB, agePlain []byte, m Manifest, plainSize int64) []byte {
	rcp, err := age.ParseX25519Recipient(testRecipient1)
	if err != nil {
		t.Fatal(err)
	}
	var payload bytes.Buffer
	s := &sink{w: &payload, sum: sha256.New(), capture: new(bytes.Buffer)}
	aw, err := age.Encrypt(s, rcp)
	if err != nil {
		t.Fatal(err)
	}
	hdrLen := s.n
	hdrSum := sha256.Sum256(s.capture.Bytes())
	s.capture = nil
	if _, err := aw.Write(agePlain); err != nil {
		t.Fatal(err)
	}
	if err := aw.Close(); err != nil {
		t.Fatal(err)
	}
	m.PlainSize = plainSize
	m.PayloadSize = s.n
	m.PayloadSHA256 = hex.EncodeToString(s.sum.Sum(nil))
	js, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	file := append(encodeHead(), payload.Bytes()...)
	return append(file, encodeTrailer(js, hdrLen, hdrSum)...)
}

// TestSealRaw checks the fuzz helper against the writer.
func TestSealRaw(t *testing.T) {
	m := testManifest()
	m.Format = 1
	m.Recipients = []string{testRecipient1}
	sealed, _ := json.Marshal(m)
	z, _ := zstd.NewWriter(nil)
	agePlain := binary.BigEndian.AppendUint32(nil, uint32(len(sealed)))
	agePlain = append(agePlain, sealed...)
	agePlain = append(agePlain, z.EncodeAll([]byte("abc"), nil)...)
	plain, _, err := openAll(sealRaw(t, agePlain, m, 3), idDec(testIdentity1))
	if err != nil || string(plain) != "abc" {
		t.Fatalf("%q %v", plain, err)
	}
	// And what Open makes of broken inner parts.
	for _, tc := range []struct {
		name string
		p    []byte
		size int64
	}{
		{"empty", nil, 0},
		{"short length", []byte{0, 0}, 0},
		{"huge length", []byte{0xff, 0xff, 0xff, 0xff}, 0},
		{"not JSON", append([]byte{0, 0, 0, 2}, "xx"...), 0},
		{"other manifest", append([]byte{0, 0, 0, 2}, "{}"...), 0},
		{"not zstd", append(bytes.Clone(agePlain[:4+len(sealed)]), "not zstd"...), 0},
		{"plain_size too small", agePlain, 2},
		{"plain_size too large", agePlain, 4},
	} {
		_, _, err := openAll(sealRaw(t, tc.p, m, tc.size), idDec(testIdentity1))
		wantKind(t, err, ErrCorrupt, tc.name)
		t.Logf("%s: %v", tc.name, err)
	}
}
