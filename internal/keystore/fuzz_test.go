package keystore

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"
)

// Fuzz tests for the two keystore file parsers (FORMAT.md). Each input is
// used in two ways:
//
//   - as the file itself (keystore.ks for Open, keystore.aks for OpenAuto);
//     the framing checks (CRC, SHA-256 trailer) stop almost every mutation,
//     which is what they are for, so
//   - also as the decrypted payload, sealed by the package's own writer
//     (sealKS / sealAKS) under the key Open / OpenAuto will derive, so the
//     fuzzer reaches the payload decoders behind AES-GCM.
//
// The expected outcome is computed independently from FORMAT.md (fuzzSpec*
// below) and compared with what the package returns.

var (
	fuzzPass     = passA // 8..200 bytes
	fuzzIdentity = []byte("fuzz-machine-identity")
	fuzzSalt     = [saltSize]byte{'c', 'o', 'f', 'f', 'e', 'r', ' ', 'f', 'u', 'z', 'z', ' ', 's', 'a', 'l', 't'}
)

func fuzzIdentityFn() ([]byte, error) { return bytes.Clone(fuzzIdentity), nil }

// fuzzKDFTooSlow reports whether a keystore.ks whose header passes the
// framing would make Open run Argon2id with parameters too large for a fast
// fuzz loop (the package accepts up to 100 passes and 4 GiB).
func fuzzKDFTooSlow(b []byte) bool {
	if len(b) < ksHeaderSize {
		return false
	}
	return binary.BigEndian.Uint32(b[ksOffTime:]) > 2 || binary.BigEndian.Uint32(b[ksOffMemory:]) > 1024
}

// fuzzReframe returns b with the length field, header CRC-32C and SHA-256
// trailer recomputed (b must be at least headerSize+32 bytes), so that header
// fields behind the integrity checks get exercised.
func fuzzReframe(b []byte, headerSize, offLength int) []byte {
	b = bytes.Clone(b)
	binary.BigEndian.PutUint32(b[offLength:], uint32(len(b)))
	crcOff := headerSize - 4
	binary.BigEndian.PutUint32(b[crcOff:], crc32.Checksum(b[:crcOff], crc32.MakeTable(crc32.Castagnoli)))
	sum := sha256.Sum256(b[:len(b)-32])
	copy(b[len(b)-32:], sum[:])
	return b
}

// fuzzSpecFraming returns the error FORMAT.md prescribes for the integrity
// framing (checks 2-8), or nil if the framing is intact.
func fuzzSpecFraming(b []byte, magic string, headerSize, offLength int) error {
	n := len(b)
	if n < headerSize {
		return ErrTruncated
	}
	if string(b[:8]) != magic {
		return ErrCorrupt
	}
	crcOff := headerSize - 4
	if crc32.Checksum(b[:crcOff], crc32.MakeTable(crc32.Castagnoli)) != binary.BigEndian.Uint32(b[crcOff:]) {
		return ErrCorrupt
	}
	l := int64(binary.BigEndian.Uint32(b[offLength:]))
	switch {
	case l < int64(headerSize+16+32) || l > 16<<20:
		return ErrCorrupt
	case l > int64(n):
		return ErrTruncated
	case l < int64(n):
		return ErrCorrupt
	}
	sum := sha256.Sum256(b[:n-32])
	if !bytes.Equal(sum[:], b[n-32:]) {
		return ErrCorrupt
	}
	return nil
}

// fuzzSpecKSHeader returns the error FORMAT.md prescribes for keystore.ks
// checks 2-10, or nil if Open goes on to decrypt.
func fuzzSpecKSHeader(b []byte) error {
	if err := fuzzSpecFraming(b, "COFFERKS", 56, 48); err != nil {
		return err
	}
	switch v := binary.BigEndian.Uint16(b[8:]); {
	case v == 0:
		return ErrCorrupt
	case v > 1:
		return ErrUnsupportedVersion
	}
	if b[10] != 1 {
		return ErrUnsupportedVersion
	}
	t, m, th := binary.BigEndian.Uint32(b[11:]), binary.BigEndian.Uint32(b[15:]), uint32(b[19])
	if t < 1 || t > 100 || th < 1 || m < 8*th || m > 4<<20 {
		return ErrCorrupt
	}
	return nil
}

// fuzzSpecAKSHeader is fuzzSpecKSHeader for keystore.aks.
func fuzzSpecAKSHeader(b []byte) error {
	if err := fuzzSpecFraming(b, "COFFERAK", 46, 38); err != nil {
		return err
	}
	switch v := binary.BigEndian.Uint16(b[8:]); {
	case v == 0:
		return ErrCorrupt
	case v > 1:
		return ErrUnsupportedVersion
	}
	return nil
}

type fuzzGen struct {
	number uint32
	key    []byte
}

// fuzzSpecMEKs decodes an MEK list as FORMAT.md describes it; ok is false if
// it is malformed.
func fuzzSpecMEKs(b []byte) (gens []fuzzGen, current uint32, ok bool) {
	if len(b) < 8 {
		return nil, 0, false
	}
	current = binary.BigEndian.Uint32(b)
	n := binary.BigEndian.Uint32(b[4:])
	rest := b[8:]
	if n == 0 || uint64(n)*44 != uint64(len(rest)) {
		return nil, 0, false
	}
	found := false
	for i := 0; i < int(n); i++ {
		r := rest[i*44:]
		g := fuzzGen{number: binary.BigEndian.Uint32(r), key: r[12:44]}
		if g.number == 0 || (i > 0 && g.number <= gens[i-1].number) {
			return nil, 0, false
		}
		found = found || g.number == current
		gens = append(gens, g)
	}
	return gens, current, found
}

// fuzzCheckKeyring checks that a keyring returned by a successful open holds
// exactly the generations of an MEK list.
func fuzzCheckKeyring(t *testing.T, k *Keyring, gens []fuzzGen, current uint32) {
	t.Helper()
	if k.Current() != current {
		t.Fatalf("keyring current %d, payload says %d", k.Current(), current)
	}
	got := k.Generations()
	if len(got) != len(gens) {
		t.Fatalf("keyring has %d generations, payload %d", len(got), len(gens))
	}
	k.r.mu.RLock()
	defer k.r.mu.RUnlock()
	for i, g := range gens {
		if got[i].Number != g.number || !bytes.Equal(k.r.gens[i].key, g.key) {
			t.Fatalf("generation %d: keyring %d differs from payload %d", i, got[i].Number, g.number)
		}
	}
}

// fuzzCheckErr fails unless err wraps want (or, for want == nil, is nil).
func fuzzCheckErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if want == nil {
		if err != nil {
			t.Fatalf("%s: unexpected error %v", what, err)
		}
		return
	}
	if !errors.Is(err, want) {
		t.Fatalf("%s: got error %v, FORMAT.md says %v", what, err, want)
	}
}

// fuzzMEKList encodes generations 1..n (current n) with deterministic keys.
func fuzzMEKList(n int) []byte {
	var gens []mek
	for i := 1; i <= n; i++ {
		gens = append(gens, mek{number: uint32(i), key: bytes.Repeat([]byte{byte(i)}, keySize)})
	}
	return encodeMEKs(gens, uint32(n))
}

func FuzzOpenKeystore(f *testing.F) {
	// Seeds written by the package itself.
	s := New(filepath.Join(f.TempDir(), "ks"), Options{KDF: tinyKDF, MachineIdentity: fuzzIdentityFn})
	k, err := s.Init(fuzzPass)
	if err != nil {
		f.Fatal(err)
	}
	one, err := os.ReadFile(filepath.Join(s.Dir(), FileName))
	if err != nil {
		f.Fatal(err)
	}
	if _, err := s.Rotate(k); err != nil {
		f.Fatal(err)
	}
	two, err := os.ReadFile(filepath.Join(s.Dir(), FileName))
	if err != nil {
		f.Fatal(err)
	}
	other := New(filepath.Join(f.TempDir(), "ks"), Options{KDF: tinyKDF})
	if _, err := other.Init(passB); err != nil {
		f.Fatal(err)
	}
	wrongPass, err := os.ReadFile(filepath.Join(other.Dir(), FileName))
	if err != nil {
		f.Fatal(err)
	}
	v2 := bytes.Clone(one)
	binary.BigEndian.PutUint16(v2[ksOffVersion:], 2)
	for _, seed := range [][]byte{
		one, two, wrongPass,
		fuzzReframe(v2, ksHeaderSize, ksOffLength), // unsupported version
		one[:ksHeaderSize], one[:len(one)-1], append(bytes.Clone(one), 0),
		{},
		fuzzMEKList(1), fuzzMEKList(3), // valid payloads for the sealed variant
	} {
		f.Add(seed)
	}

	kek := deriveKEK(fuzzPass, fuzzSalt[:], tinyKDF)
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := filepath.Join(t.TempDir(), "keystore")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, FileName)
		st := New(dir, Options{KDF: tinyKDF, MachineIdentity: fuzzIdentityFn,
			Warn: func(err error) { t.Errorf("unexpected warning: %v", err) }})
		open := func(what string, file []byte) (*Keyring, error) {
			if err := os.WriteFile(path, file, 0o600); err != nil {
				t.Fatal(err)
			}
			k, err := st.Open(fuzzPass)
			if err == nil {
				return k, nil
			}
			for _, e := range []error{ErrTruncated, ErrCorrupt, ErrUnsupportedVersion, ErrWrongPassphrase} {
				if errors.Is(err, e) {
					return nil, err
				}
			}
			t.Fatalf("%s: Open returned an error that is none of the sentinels: %v", what, err)
			return nil, err
		}

		// 1. The input as keystore.ks.
		if !fuzzKDFTooSlow(data) {
			want := fuzzSpecKSHeader(data)
			k, err := open("as file", data)
			if want != nil {
				fuzzCheckErr(t, "as file", err, want)
			} else if err == nil {
				// Only a file sealed under fuzzPass can get here.
				if k.Current() == 0 || len(k.Generations()) == 0 {
					t.Fatalf("as file: opened an empty keyring %v", k)
				}
			} else if !errors.Is(err, ErrWrongPassphrase) && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("as file: intact header, got %v (want success, ErrWrongPassphrase or ErrCorrupt)", err)
			}
		}

		// 2. The input with its framing repaired: exercises version, KDF id
		// and KDF bounds.
		if len(data) >= ksHeaderSize+32 {
			rf := fuzzReframe(data, ksHeaderSize, ksOffLength)
			if !fuzzKDFTooSlow(rf) {
				want := fuzzSpecKSHeader(rf)
				_, err := open("reframed", rf)
				if want != nil {
					fuzzCheckErr(t, "reframed", err, want)
				} else if err != nil && !errors.Is(err, ErrWrongPassphrase) && !errors.Is(err, ErrCorrupt) {
					t.Fatalf("reframed: intact header, got %v", err)
				}
			}
		}

		// 3. The input as the decrypted payload of a keystore.ks sealed under
		// fuzzPass: exercises the MEK list decoder.
		file, err := sealKS(sealing{kdf: tinyKDF, salt: fuzzSalt, kek: kek}, data)
		if err != nil {
			return // larger than the file size limit
		}
		gens, current, ok := fuzzSpecMEKs(data)
		k, err := open("as payload", file)
		if !ok {
			fuzzCheckErr(t, "as payload (malformed MEK list)", err, ErrCorrupt)
			return
		}
		fuzzCheckErr(t, "as payload (valid MEK list)", err, nil)
		fuzzCheckKeyring(t, k, gens, current)
		// The writer must produce what the reader accepts: rotate and reopen.
		if gens[len(gens)-1].number == ^uint32(0) {
			return
		}
		nk, err := st.Rotate(k)
		if err != nil {
			t.Fatalf("Rotate after opening a valid payload: %v", err)
		}
		rk, err := st.Open(fuzzPass)
		if err != nil {
			t.Fatalf("Open after Rotate: %v", err)
		}
		if rk.Current() != nk.Current() || len(rk.Generations()) != len(gens)+1 {
			t.Fatalf("reopened %v after Rotate to %v", rk, nk)
		}
	})
}

func FuzzOpenAutoOpen(f *testing.F) {
	// One keystore directory per process, holding the checked-in fixture as
	// keystore.ks (deterministic, so seeds carry its hash), opened with its
	// passphrase to write a real keystore.aks.
	var fx fixture
	raw, err := os.ReadFile(fixtureVectors)
	if err != nil {
		f.Fatal(err)
	}
	if err := json.Unmarshal(raw, &fx); err != nil {
		f.Fatal(err)
	}
	ks, err := os.ReadFile(fixtureKS)
	if err != nil {
		f.Fatal(err)
	}
	dir := filepath.Join(f.TempDir(), "keystore")
	if err := os.Mkdir(dir, 0o700); err != nil {
		f.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, FileName), ks, 0o600); err != nil {
		f.Fatal(err)
	}
	s := New(dir, Options{KDF: tinyKDF, MachineIdentity: fuzzIdentityFn})
	k, err := s.Open([]byte(fx.Passphrase))
	if err != nil {
		f.Fatal(err)
	}
	if err := s.EnableAutoOpen(k); err != nil {
		f.Fatal(err)
	}
	aks, err := os.ReadFile(filepath.Join(dir, AutoOpenFileName))
	if err != nil {
		f.Fatal(err)
	}
	k.r.mu.RLock()
	payload := encodeAKSPayload(k.r)
	k.r.mu.RUnlock()
	ksHash := sha256.Sum256(ks)
	stale := bytes.Clone(payload)
	stale[0] ^= 1
	badKDF := bytes.Clone(payload)
	badKDF[sha256.Size] = 2
	v2 := bytes.Clone(aks)
	binary.BigEndian.PutUint16(v2[aksOffVersion:], 2)
	for _, seed := range [][]byte{
		aks, // opens only in this process (the key binds the directory path)
		fuzzReframe(v2, aksHeaderSize, aksOffLength),
		aks[:aksHeaderSize], aks[:len(aks)-1], append(bytes.Clone(aks), 0),
		{},
		payload, stale, badKDF, payload[:aksPayloadFixed], // payloads for the sealed variant
	} {
		f.Add(seed)
	}

	aksPath := filepath.Join(dir, AutoOpenFileName)
	f.Fuzz(func(t *testing.T, data []byte) {
		openAuto := func(what string, file []byte) (*Keyring, error) {
			if err := os.WriteFile(aksPath, file, 0o600); err != nil {
				t.Fatal(err)
			}
			k, err := s.OpenAuto()
			if err == nil {
				return k, nil
			}
			for _, e := range []error{ErrTruncated, ErrCorrupt, ErrUnsupportedVersion, ErrMachineMismatch, ErrAutoOpenStale} {
				if errors.Is(err, e) {
					return nil, err
				}
			}
			t.Fatalf("%s: OpenAuto returned an error that is none of the sentinels: %v", what, err)
			return nil, err
		}

		// 1. The input as keystore.aks next to an intact keystore.ks.
		want := fuzzSpecAKSHeader(data)
		_, err := openAuto("as file", data)
		if want != nil {
			fuzzCheckErr(t, "as file", err, want)
		} else if err != nil && !errors.Is(err, ErrMachineMismatch) && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrAutoOpenStale) {
			t.Fatalf("as file: intact header, got %v", err)
		}

		// 2. Framing repaired: exercises the version check.
		if len(data) >= aksHeaderSize+32 {
			rf := fuzzReframe(data, aksHeaderSize, aksOffLength)
			want := fuzzSpecAKSHeader(rf)
			_, err := openAuto("reframed", rf)
			if want != nil {
				fuzzCheckErr(t, "reframed", err, want)
			} else if !errors.Is(err, ErrMachineMismatch) && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrAutoOpenStale) && err != nil {
				t.Fatalf("reframed: intact header, got %v", err)
			}
		}

		// 3. The input as the decrypted payload of a keystore.aks sealed for
		// this machine and directory: exercises the payload decoder.
		key, err := s.aksKey(fuzzSalt[:])
		if err != nil {
			t.Fatal(err)
		}
		file, err := sealAKS(fuzzSalt, key, data)
		if err != nil {
			return // larger than the file size limit
		}
		if len(data) >= 42 && data[32] == 1 && (binary.BigEndian.Uint32(data[33:]) > 4 || binary.BigEndian.Uint32(data[37:]) > 64*1024) {
			// Legal but expensive KDF parameters (up to 100 passes over 4 GiB):
			// one such input would take minutes. The bounds themselves are
			// checked by the cases above and by TestKDFBounds-style tests.
			return
		}
		k, err := openAuto("as payload", file)
		if len(data) < 90 || data[32] != 1 {
			fuzzCheckErr(t, "as payload (short or unknown KDF id)", err, ErrCorrupt)
			return
		}
		gens, current, ok := fuzzSpecMEKs(data[90:])
		kdf := KDFParams{Time: binary.BigEndian.Uint32(data[33:]), MemoryKiB: binary.BigEndian.Uint32(data[37:]), Threads: data[41]}
		kdfOK := kdf.Time >= 1 && kdf.Time <= MaxKDFTime && kdf.Threads >= 1 &&
			kdf.MemoryKiB >= 8*uint32(kdf.Threads) && kdf.MemoryKiB <= MaxKDFMemoryKiB
		switch {
		case !kdfOK:
			fuzzCheckErr(t, "as payload (KDF parameters out of range)", err, ErrCorrupt)
		case !ok:
			fuzzCheckErr(t, "as payload (malformed MEK list)", err, ErrCorrupt)
		case !bytes.Equal(data[:32], ksHash[:]):
			fuzzCheckErr(t, "as payload (other keystore.ks)", err, ErrAutoOpenStale)
		default:
			fuzzCheckErr(t, "as payload (valid)", err, nil)
			fuzzCheckKeyring(t, k, gens, current)
		}
	})
}
