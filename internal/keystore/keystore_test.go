package keystore

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var (
	tinyKDF = KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}
	passA   = []byte("correct horse battery")
	passB   = []byte("another passphrase B")
)

func testIdentity() ([]byte, error) { return []byte("test-machine-1"), nil }

// newStore returns a store with tiny KDF parameters whose Warn fails the test.
func newStore(t testing.TB, dir string) *Store {
	return New(dir, Options{KDF: tinyKDF, MachineIdentity: testIdentity,
		Warn: func(err error) { t.Errorf("unexpected warning: %v", err) }})
}

func initStore(t testing.TB) (*Store, *Keyring) {
	t.Helper()
	s := newStore(t, filepath.Join(t.TempDir(), "keystore"))
	k, err := s.Init(passA)
	if err != nil {
		t.Fatalf("Init: %v", err)
	}
	return s, k
}

func mustOpen(t testing.TB, s *Store, p []byte) *Keyring {
	t.Helper()
	k, err := s.Open(p)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return k
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func wantErr(t testing.TB, err, target error, what string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: got error %v, want %v", what, err, target)
	}
}

func gensOf(k *Keyring) []uint32 {
	var out []uint32
	for _, g := range k.Generations() {
		out = append(out, g.Number)
	}
	return out
}

func sameKeys(t *testing.T, a, b *Keyring) {
	t.Helper()
	if len(a.r.gens) != len(b.r.gens) || a.r.current != b.r.current {
		t.Fatalf("keyrings differ: %v vs %v", a, b)
	}
	for i := range a.r.gens {
		ga, gb := a.r.gens[i], b.r.gens[i]
		if ga.number != gb.number || !ga.created.Equal(gb.created) || !bytes.Equal(ga.key, gb.key) {
			t.Fatalf("generation %d differs", ga.number)
		}
	}
}

func TestInitOpen(t *testing.T) {
	s, k := initStore(t)
	if ok, err := s.Exists(); err != nil || !ok {
		t.Fatalf("Exists = %v, %v", ok, err)
	}
	if k.Current() != 1 || fmt.Sprint(gensOf(k)) != "[1]" {
		t.Fatalf("new keyring: %v %v", k, gensOf(k))
	}
	gen, w, err := k.Wrap([]byte("data key"), []byte("aad"))
	if err != nil || gen != 1 {
		t.Fatalf("Wrap = %d, %v", gen, err)
	}
	k2 := mustOpen(t, s, passA)
	sameKeys(t, k, k2)
	p, err := k2.Unwrap(gen, w, []byte("aad"))
	if err != nil || string(p) != "data key" {
		t.Fatalf("Unwrap = %q, %v", p, err)
	}
	if _, err := k2.Unwrap(gen, w, []byte("other aad")); !errors.Is(err, ErrUnwrap) {
		t.Fatalf("Unwrap with other aad: %v", err)
	}
	if _, err := k2.Unwrap(7, w, []byte("aad")); !errors.Is(err, ErrUnknownGeneration) {
		t.Fatalf("Unwrap unknown gen: %v", err)
	}
	if _, err := k2.Unwrap(1, w[:20], []byte("aad")); !errors.Is(err, ErrUnwrap) {
		t.Fatalf("Unwrap short: %v", err)
	}
	if g := k.Generations()[0]; g.Created.IsZero() || g.Created.Location().String() != "UTC" {
		t.Fatalf("created = %v", g.Created)
	}
}

func TestFileModes(t *testing.T) {
	s, k := initStore(t)
	if err := s.EnableAutoOpen(k); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{
		s.Dir():                                  0o700 | os.ModeDir,
		filepath.Join(s.Dir(), FileName):         0o600,
		filepath.Join(s.Dir(), AutoOpenFileName): 0o600,
	} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s: mode %v, want %v", path, fi.Mode(), want)
		}
	}
}

func TestWrongPassphrase(t *testing.T) {
	s, _ := initStore(t)
	before := readFile(t, filepath.Join(s.Dir(), FileName))
	_, err := s.Open(passB)
	wantErr(t, err, ErrWrongPassphrase, "Open with wrong passphrase")
	if strings.Contains(err.Error(), string(passB)) || strings.Contains(err.Error(), string(passA)) {
		t.Fatalf("error contains a passphrase")
	}
	if !bytes.Equal(before, readFile(t, filepath.Join(s.Dir(), FileName))) {
		t.Fatal("failed open changed the file")
	}
}

func TestInitTwiceAndMissing(t *testing.T) {
	s, _ := initStore(t)
	_, err := s.Init(passA)
	wantErr(t, err, ErrAlreadyInitialized, "second Init")

	m := newStore(t, filepath.Join(t.TempDir(), "none"))
	if ok, err := m.Exists(); err != nil || ok {
		t.Fatalf("Exists on missing = %v, %v", ok, err)
	}
	_, err = m.Open(passA)
	wantErr(t, err, ErrNotInitialized, "Open missing")
	_, err = m.OpenAuto()
	wantErr(t, err, ErrNotInitialized, "OpenAuto missing")
	_, err = m.ChangePassphrase(passA, passB)
	wantErr(t, err, ErrNotInitialized, "ChangePassphrase missing")
	_, err = m.Info()
	wantErr(t, err, ErrNotInitialized, "Info missing")
	if ok, err := m.AutoOpenEnabled(); err != nil || ok {
		t.Fatalf("AutoOpenEnabled on missing = %v, %v", ok, err)
	}
}

func TestInitRemovesLeftoverAKS(t *testing.T) {
	s, k := initStore(t)
	if err := s.EnableAutoOpen(k); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(s.Dir(), FileName)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Init(passB); err != nil {
		t.Fatal(err)
	}
	if ok, _ := s.AutoOpenEnabled(); ok {
		t.Fatal("leftover keystore.aks survived Init")
	}
}

func TestRotate(t *testing.T) {
	s, k := initStore(t)
	_, w1, err := k.Wrap([]byte("before rotate"), nil)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := s.Rotate(k)
	if err != nil {
		t.Fatal(err)
	}
	if k2.Current() != 2 || fmt.Sprint(gensOf(k2)) != "[1 2]" {
		t.Fatalf("after rotate: %v %v", k2, gensOf(k2))
	}
	if k.Current() != 1 || len(k.Generations()) != 1 {
		t.Fatalf("old keyring changed: %v", k)
	}
	if p, err := k2.Unwrap(1, w1, nil); err != nil || string(p) != "before rotate" {
		t.Fatalf("unwrap gen 1 after rotate: %q %v", p, err)
	}
	if p, err := k.Unwrap(1, w1, nil); err != nil || string(p) != "before rotate" {
		t.Fatalf("old keyring unwrap: %q %v", p, err)
	}
	gen, w2, err := k2.Wrap([]byte("after rotate"), nil)
	if err != nil || gen != 2 {
		t.Fatalf("Wrap after rotate: %d %v", gen, err)
	}
	k3 := mustOpen(t, s, passA)
	sameKeys(t, k2, k3)
	if p, err := k3.Unwrap(2, w2, nil); err != nil || string(p) != "after rotate" {
		t.Fatalf("unwrap gen 2 after reopen: %q %v", p, err)
	}
	// The superseded keyring must not be able to write.
	_, err = s.Rotate(k)
	wantErr(t, err, ErrStaleKeyring, "Rotate with superseded keyring")
	wantErr(t, s.EnableAutoOpen(k), ErrStaleKeyring, "EnableAutoOpen with superseded keyring")
	k4, err := s.Rotate(k3)
	if err != nil || k4.Current() != 3 {
		t.Fatalf("Rotate reopened keyring: %v %v", k4, err)
	}
}

func TestChangePassphrase(t *testing.T) {
	s, k := initStore(t)
	k, err := s.Rotate(k)
	if err != nil {
		t.Fatal(err)
	}
	ksPath := filepath.Join(s.Dir(), FileName)
	before := readFile(t, ksPath)
	_, err = s.ChangePassphrase(passB, passA)
	wantErr(t, err, ErrWrongPassphrase, "ChangePassphrase with wrong old")
	if !bytes.Equal(before, readFile(t, ksPath)) {
		t.Fatal("failed ChangePassphrase changed the file")
	}
	k2, err := s.ChangePassphrase(passA, passB)
	if err != nil {
		t.Fatal(err)
	}
	sameKeys(t, k, k2)
	_, err = s.Open(passA)
	wantErr(t, err, ErrWrongPassphrase, "Open with old passphrase")
	sameKeys(t, k, mustOpen(t, s, passB))
	h1, _ := parseKS("a", before)
	h2, _ := parseKS("b", readFile(t, ksPath))
	if h1.salt == h2.salt {
		t.Fatal("salt not renewed")
	}
	// The returned keyring can rotate (it holds the new KEK).
	k3, err := s.Rotate(k2)
	if err != nil {
		t.Fatal(err)
	}
	sameKeys(t, k3, mustOpen(t, s, passB))
}

func TestChangePassphraseUpgradesKDF(t *testing.T) {
	s, _ := initStore(t)
	s2 := New(s.Dir(), Options{KDF: KDFParams{Time: 2, MemoryKiB: 128, Threads: 2}, MachineIdentity: testIdentity})
	if _, err := s2.ChangePassphrase(passA, passB); err != nil {
		t.Fatal(err)
	}
	info, err := s.Info()
	if err != nil {
		t.Fatal(err)
	}
	if info.KDF != (KDFParams{Time: 2, MemoryKiB: 128, Threads: 2}) {
		t.Fatalf("KDF after change = %+v", info.KDF)
	}
	mustOpen(t, s, passB)
}

func TestPassphraseLength(t *testing.T) {
	short, long := bytes.Repeat([]byte("x"), 7), bytes.Repeat([]byte("y"), 201)
	min, max := bytes.Repeat([]byte("m"), 8), bytes.Repeat([]byte("M"), 200)
	for _, bad := range [][]byte{short, long, nil} {
		s := newStore(t, filepath.Join(t.TempDir(), "ks"))
		_, err := s.Init(bad)
		wantErr(t, err, ErrPassphraseLength, "Init")
		if want := fmt.Sprintf("must be 8 to 200 bytes, got %d", len(bad)); !strings.Contains(err.Error(), want) {
			t.Fatalf("message %q lacks %q", err, want)
		}
		if ok, _ := s.Exists(); ok {
			t.Fatal("refused Init created the keystore")
		}
	}
	s := newStore(t, filepath.Join(t.TempDir(), "ks"))
	if _, err := s.Init(min); err != nil {
		t.Fatalf("Init with 8 bytes: %v", err)
	}
	for _, bad := range [][]byte{short, long} {
		_, err := s.Open(bad)
		wantErr(t, err, ErrPassphraseLength, "Open")
		_, err = s.ChangePassphrase(bad, max)
		wantErr(t, err, ErrPassphraseLength, "ChangePassphrase old")
		_, err = s.ChangePassphrase(min, bad)
		wantErr(t, err, ErrPassphraseLength, "ChangePassphrase new")
	}
	if _, err := s.ChangePassphrase(min, max); err != nil {
		t.Fatalf("ChangePassphrase to 200 bytes: %v", err)
	}
	mustOpen(t, s, max)
	s200 := newStore(t, filepath.Join(t.TempDir(), "ks"))
	if _, err := s200.Init(max); err != nil {
		t.Fatalf("Init with 200 bytes: %v", err)
	}
	mustOpen(t, s200, max)
}

func TestAutoOpen(t *testing.T) {
	s, k := initStore(t)
	_, err := s.OpenAuto()
	wantErr(t, err, ErrAutoOpenDisabled, "OpenAuto before enable")
	if ok, err := s.AutoOpenEnabled(); err != nil || ok {
		t.Fatalf("AutoOpenEnabled = %v %v", ok, err)
	}
	if err := s.EnableAutoOpen(k); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.AutoOpenEnabled(); err != nil || !ok {
		t.Fatalf("AutoOpenEnabled = %v %v", ok, err)
	}
	ka, err := s.OpenAuto()
	if err != nil {
		t.Fatal(err)
	}
	sameKeys(t, k, ka)

	// Rotate from an auto-opened keyring (no passphrase) rebuilds the aks.
	k2, err := s.Rotate(ka)
	if err != nil {
		t.Fatal(err)
	}
	ka2, err := s.OpenAuto()
	if err != nil || ka2.Current() != 2 {
		t.Fatalf("OpenAuto after Rotate: %v %v", ka2, err)
	}
	sameKeys(t, k2, ka2)
	sameKeys(t, k2, mustOpen(t, s, passA))

	// ChangePassphrase rebuilds the aks; it still rotates to the new passphrase.
	if _, err := s.ChangePassphrase(passA, passB); err != nil {
		t.Fatal(err)
	}
	ka3, err := s.OpenAuto()
	if err != nil {
		t.Fatalf("OpenAuto after ChangePassphrase: %v", err)
	}
	sameKeys(t, k2, ka3)
	k4, err := s.Rotate(ka3)
	if err != nil {
		t.Fatal(err)
	}
	sameKeys(t, k4, mustOpen(t, s, passB))

	if err := s.DisableAutoOpen(); err != nil {
		t.Fatal(err)
	}
	_, err = s.OpenAuto()
	wantErr(t, err, ErrAutoOpenDisabled, "OpenAuto after disable")
	if err := s.DisableAutoOpen(); err != nil {
		t.Fatalf("second DisableAutoOpen: %v", err)
	}
	// Deleting the file by hand is the same as disabling.
	if err := s.EnableAutoOpen(k4); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(s.Dir(), AutoOpenFileName))
	_, err = s.OpenAuto()
	wantErr(t, err, ErrAutoOpenDisabled, "OpenAuto after deleting aks")
}

func TestAutoOpenMachineMismatch(t *testing.T) {
	s, k := initStore(t)
	if err := s.EnableAutoOpen(k); err != nil {
		t.Fatal(err)
	}
	other := New(s.Dir(), Options{KDF: tinyKDF, MachineIdentity: func() ([]byte, error) { return []byte("test-machine-2"), nil }})
	_, err := other.OpenAuto()
	wantErr(t, err, ErrMachineMismatch, "OpenAuto on another machine")

	failing := New(s.Dir(), Options{MachineIdentity: func() ([]byte, error) { return nil, errors.New("no id") }})
	if _, err := failing.OpenAuto(); err == nil || errors.Is(err, ErrMachineMismatch) {
		t.Fatalf("OpenAuto with failing identity: %v", err)
	}

	// Copy the keystore directory to another path on the same machine.
	copyDir := filepath.Join(t.TempDir(), "copy", "keystore")
	if err := os.MkdirAll(copyDir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{FileName, AutoOpenFileName} {
		writeFile(t, filepath.Join(copyDir, n), readFile(t, filepath.Join(s.Dir(), n)))
	}
	var warned []error
	c := New(copyDir, Options{KDF: tinyKDF, MachineIdentity: testIdentity, Warn: func(err error) { warned = append(warned, err) }})
	_, err = c.OpenAuto()
	wantErr(t, err, ErrMachineMismatch, "OpenAuto at another path")
	aksBefore := readFile(t, filepath.Join(copyDir, AutoOpenFileName))
	sameKeys(t, k, mustOpen(t, c, passA))
	if len(warned) != 1 || !errors.Is(warned[0], ErrMachineMismatch) {
		t.Fatalf("warnings = %v", warned)
	}
	if !bytes.Equal(aksBefore, readFile(t, filepath.Join(copyDir, AutoOpenFileName))) {
		t.Fatal("Open rewrote an aks that belongs to another path")
	}
	// Re-enabling at the new path works.
	if err := c.EnableAutoOpen(mustOpen(t, c, passA)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.OpenAuto(); err != nil {
		t.Fatal(err)
	}
}

func TestAutoOpenStale(t *testing.T) {
	s, k := initStore(t)
	if err := s.EnableAutoOpen(k); err != nil {
		t.Fatal(err)
	}
	aksPath := filepath.Join(s.Dir(), AutoOpenFileName)
	old := readFile(t, aksPath)
	k2, err := s.Rotate(k)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, aksPath, old) // as if the crash hit between the two writes
	_, err = s.OpenAuto()
	wantErr(t, err, ErrAutoOpenStale, "OpenAuto with stale aks")
	if !strings.Contains(err.Error(), "keystore.aks is older than keystore.ks, probably an interrupted rotation or passphrase change: open with the passphrase; auto-open is rebuilt then") {
		t.Fatalf("message: %v", err)
	}
	mustOpen(t, s, passA)
	ka, err := s.OpenAuto()
	if err != nil {
		t.Fatalf("OpenAuto after passphrase open: %v", err)
	}
	if ka.Current() != 2 {
		t.Fatalf("rebuilt aks current = %d", ka.Current())
	}
	sameKeys(t, k2, ka)
}

func TestInfo(t *testing.T) {
	s, k := initStore(t)
	info, err := s.Info()
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(filepath.Join(s.Dir(), FileName))
	if info.FormatVersion != 1 || info.KDF != tinyKDF || info.Size != fi.Size() || !info.Modified.Equal(fi.ModTime()) || info.AutoOpen {
		t.Fatalf("Info = %+v", info)
	}
	if err := s.EnableAutoOpen(k); err != nil {
		t.Fatal(err)
	}
	if info, _ := s.Info(); !info.AutoOpen {
		t.Fatal("Info.AutoOpen false after enable")
	}
}

// flipAndTruncate checks that every single-byte flip of the file at path makes
// open fail with ErrCorrupt, every truncation with ErrTruncated, and that the
// file on disk is left as it was by each failed open.
func flipAndTruncate(t *testing.T, path string, open func() error) {
	t.Helper()
	orig := readFile(t, path)
	check := func(variant []byte, want error, what string) {
		t.Helper()
		writeFile(t, path, variant)
		err := open()
		if !errors.Is(err, want) {
			t.Fatalf("%s: got %v, want %v", what, err, want)
		}
		if !bytes.Equal(variant, readFile(t, path)) {
			t.Fatalf("%s: failed open changed the file", what)
		}
	}
	for off := range orig {
		for _, x := range []byte{0x01, 0x80} {
			v := bytes.Clone(orig)
			v[off] ^= x
			check(v, ErrCorrupt, fmt.Sprintf("byte %d xor %#x", off, x))
		}
	}
	for n := 0; n < len(orig); n++ {
		check(orig[:n], ErrTruncated, fmt.Sprintf("truncated to %d of %d bytes", n, len(orig)))
	}
	check(append(bytes.Clone(orig), 0), ErrCorrupt, "one trailing byte")
	check(append(bytes.Clone(orig), orig...), ErrCorrupt, "doubled file")
	writeFile(t, path, orig)
	if err := open(); err != nil {
		t.Fatalf("restored file: %v", err)
	}
}

func TestCorruptKeystore(t *testing.T) {
	s, _ := initStore(t)
	path := filepath.Join(s.Dir(), FileName)
	flipAndTruncate(t, path, func() error { _, err := s.Open(passA); return err })
	flipAndTruncate(t, path, func() error { _, err := s.Info(); return err })
	// Wrong passphrase on the intact file is the only way to get ErrWrongPassphrase.
	_, err := s.Open(passB)
	wantErr(t, err, ErrWrongPassphrase, "wrong passphrase on intact file")
}

func TestCorruptAutoOpen(t *testing.T) {
	s, k := initStore(t)
	if err := s.EnableAutoOpen(k); err != nil {
		t.Fatal(err)
	}
	// A damaged keystore.aks is also ErrAutoOpenDamaged: the passphrase
	// still opens the keystore.
	flipAndTruncate(t, filepath.Join(s.Dir(), AutoOpenFileName), func() error {
		_, err := s.OpenAuto()
		if err != nil && !errors.Is(err, ErrAutoOpenDamaged) {
			return fmt.Errorf("not ErrAutoOpenDamaged: %v", err) // unwrapped: fails flipAndTruncate's check
		}
		return err
	})
	// A damaged keystore.ks is reported as such by OpenAuto, not as stale
	// nor as a damaged keystore.aks.
	ksPath := filepath.Join(s.Dir(), FileName)
	orig := readFile(t, ksPath)
	v := bytes.Clone(orig)
	v[len(v)/2] ^= 1
	writeFile(t, ksPath, v)
	_, err := s.OpenAuto()
	wantErr(t, err, ErrCorrupt, "OpenAuto with corrupt keystore.ks")
	if errors.Is(err, ErrAutoOpenDamaged) {
		t.Fatalf("a damaged keystore.ks reported as a damaged keystore.aks: %v", err)
	}
	writeFile(t, ksPath, orig[:40])
	_, err = s.OpenAuto()
	wantErr(t, err, ErrTruncated, "OpenAuto with truncated keystore.ks")
}

// reframe recomputes the CRC and SHA-256 trailer of a keystore.ks so that a
// deliberately edited header passes the integrity checks.
func reframe(b []byte) []byte {
	b = bytes.Clone(b)
	binary.BigEndian.PutUint32(b[ksOffCRC:], crc32.Checksum(b[:ksOffCRC], crc32.MakeTable(crc32.Castagnoli)))
	sum := sha256.Sum256(b[:len(b)-32])
	copy(b[len(b)-32:], sum[:])
	return b
}

func TestCraftedHeaders(t *testing.T) {
	s, _ := initStore(t)
	path := filepath.Join(s.Dir(), FileName)
	orig := readFile(t, path)
	if !bytes.Equal(reframe(orig), orig) {
		t.Fatal("reframe is not the identity on an intact file")
	}
	cases := []struct {
		name string
		edit func(b []byte)
		want error
	}{
		{"version 2", func(b []byte) { binary.BigEndian.PutUint16(b[ksOffVersion:], 2) }, ErrUnsupportedVersion},
		{"version 0", func(b []byte) { binary.BigEndian.PutUint16(b[ksOffVersion:], 0) }, ErrCorrupt},
		{"KDF id 2", func(b []byte) { b[ksOffKDFID] = 2 }, ErrUnsupportedVersion},
		{"memory 64 GiB", func(b []byte) { binary.BigEndian.PutUint32(b[ksOffMemory:], 64<<20) }, ErrCorrupt},
		{"time 0", func(b []byte) { binary.BigEndian.PutUint32(b[ksOffTime:], 0) }, ErrCorrupt},
		{"time 1e6", func(b []byte) { binary.BigEndian.PutUint32(b[ksOffTime:], 1e6) }, ErrCorrupt},
		{"threads 0", func(b []byte) { b[ksOffThreads] = 0 }, ErrCorrupt},
		{"length too small", func(b []byte) { binary.BigEndian.PutUint32(b[ksOffLength:], 60) }, ErrCorrupt},
		{"length 4 GiB", func(b []byte) { binary.BigEndian.PutUint32(b[ksOffLength:], 1<<32-1) }, ErrCorrupt},
		{"salt changed", func(b []byte) { b[ksOffSalt] ^= 1 }, ErrWrongPassphrase},
		{"nonce changed", func(b []byte) { b[ksOffNonce] ^= 1 }, ErrWrongPassphrase},
	}
	for _, c := range cases {
		v := bytes.Clone(orig)
		c.edit(v)
		writeFile(t, path, reframe(v))
		_, err := s.Open(passA)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
	writeFile(t, path, orig)

	// An authenticated but malformed payload is corrupt, not a wrong passphrase.
	h, _ := parseKS(path, orig)
	kek := deriveKEK(passA, h.salt[:], h.kdf)
	sl := sealing{kdf: h.kdf, salt: h.salt, kek: kek}
	key := bytes.Repeat([]byte{7}, keySize)
	for name, payload := range map[string][]byte{
		"empty":           {},
		"no generations":  encodeMEKs(nil, 1),
		"current missing": encodeMEKs([]mek{{number: 1, key: key}}, 2),
		"descending":      encodeMEKs([]mek{{number: 2, key: key}, {number: 1, key: key}}, 2),
		"generation 0":    encodeMEKs([]mek{{number: 0, key: key}}, 0),
		"trailing bytes":  append(encodeMEKs([]mek{{number: 1, key: key}}, 1), 0),
	} {
		f, err := sealKS(sl, payload)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, path, f)
		_, err = s.Open(passA)
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("payload %s: got %v, want ErrCorrupt", name, err)
		}
	}
	// Files larger than the limit are refused without reading them.
	big := make([]byte, maxFileSize+1)
	copy(big, orig)
	writeFile(t, path, big)
	_, err := s.Open(passA)
	wantErr(t, err, ErrCorrupt, "oversized file")
}

func TestKeyringFormatting(t *testing.T) {
	s, k := initStore(t)
	k, err := s.Rotate(k)
	if err != nil {
		t.Fatal(err)
	}
	const want = "keystore.Keyring{current: 2, generations: 2}"
	if k.String() != want {
		t.Fatalf("String() = %q", k.String())
	}
	secrets := [][]byte{k.r.seal.kek}
	for _, g := range k.r.gens {
		secrets = append(secrets, g.key)
	}
	var forms []string
	for _, sec := range secrets {
		forms = append(forms, string(sec), hex.EncodeToString(sec), strings.ToUpper(hex.EncodeToString(sec)),
			base64.StdEncoding.EncodeToString(sec), base64.RawURLEncoding.EncodeToString(sec),
			strings.Trim(fmt.Sprint(sec), "[]"), fmt.Sprintf("%#v", sec))
	}
	type holder struct {
		K *Keyring
		V Keyring
	}
	type hidden struct {
		k *Keyring
		v Keyring
	}
	var outs []string
	for _, v := range []any{k, *k, holder{k, *k}, &holder{k, *k}, hidden{k, *k}, []*Keyring{k}, map[string]Keyring{"a": *k}} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%X", "%q", "%d"} {
			outs = append(outs, fmt.Sprintf(verb, v))
		}
	}
	if got := fmt.Sprintf("%v|%+v|%#v|%s", k, k, *k, k); got != strings.Repeat(want+"|", 3)+want {
		t.Fatalf("formatting = %q", got)
	}
	for _, v := range []any{k, *k, holder{k, *k}} {
		j, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		outs = append(outs, string(j))
	}
	var logBuf bytes.Buffer
	slog.New(slog.NewTextHandler(&logBuf, nil)).Info("x", "ring", k, "value", *k)
	slog.New(slog.NewJSONHandler(&logBuf, nil)).Info("x", "ring", k, "value", *k)
	outs = append(outs, logBuf.String())
	for _, o := range outs {
		for _, f := range forms {
			if strings.Contains(o, f) {
				t.Fatalf("formatted keyring contains key material: %q", o)
			}
		}
	}
	if j, _ := json.Marshal(k); string(j) != `{"current":2,"generations":2,"redacted":true}` {
		t.Fatalf("json = %s", j)
	}
}

func TestWipe(t *testing.T) {
	s, k := initStore(t)
	k2 := mustOpen(t, s, passA)
	key := k.r.gens[0].key
	k.Wipe()
	if !bytes.Equal(key, make([]byte, keySize)) {
		t.Fatal("key not zeroed")
	}
	if _, _, err := k.Wrap([]byte("x"), nil); !errors.Is(err, ErrKeyringWiped) {
		t.Fatalf("Wrap after Wipe: %v", err)
	}
	if _, err := s.Rotate(k); !errors.Is(err, ErrKeyringWiped) {
		t.Fatalf("Rotate after Wipe: %v", err)
	}
	if _, _, err := k2.Wrap([]byte("x"), nil); err != nil {
		t.Fatalf("other keyring affected by Wipe: %v", err)
	}
	var zero Keyring
	if _, _, err := zero.Wrap(nil, nil); err == nil || zero.String() != "keystore.Keyring{current: 0, generations: 0}" {
		t.Fatal("zero keyring")
	}
}

func TestConcurrentUse(t *testing.T) {
	s, k := initStore(t)
	if err := s.EnableAutoOpen(k); err != nil {
		t.Fatal(err)
	}
	k0 := k
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(k *Keyring) {
			defer wg.Done()
			for j := 0; j < 20; j++ {
				g, w, err := k.Wrap([]byte("p"), nil)
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := k.Unwrap(g, w, nil); err != nil {
					t.Error(err)
					return
				}
				if _, err := s.OpenAuto(); err != nil {
					t.Error(err)
					return
				}
			}
		}(k0)
	}
	for i := 0; i < 5; i++ {
		if _, err := s.Rotate(mustOpen(t, s, passA)); err != nil {
			t.Error(err)
		}
	}
	wg.Wait()
	if k := mustOpen(t, s, passA); k.Current() != 6 {
		t.Fatalf("current after 5 rotations = %d", k.Current())
	}
}

func TestDefaultKDFRoundTrip(t *testing.T) {
	s := New(filepath.Join(t.TempDir(), "ks"), Options{MachineIdentity: testIdentity})
	k, err := s.Init(passA)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info()
	if err != nil || info.KDF != DefaultKDF {
		t.Fatalf("Info = %+v, %v", info, err)
	}
	sameKeys(t, k, mustOpen(t, s, passA))
	_, err = s.Open(passB)
	wantErr(t, err, ErrWrongPassphrase, "wrong passphrase with DefaultKDF")
}

func TestInvalidKDFOptions(t *testing.T) {
	s := New(filepath.Join(t.TempDir(), "ks"), Options{KDF: KDFParams{Time: 1, MemoryKiB: 64}})
	if _, err := s.Init(passA); err == nil {
		t.Fatal("Init with 0 threads succeeded")
	}
}

func TestDefaultMachineIdentity(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "machine-id")
	writeFile(t, p, []byte("  0123456789abcdef0123456789abcdef\n"))
	t.Setenv(MachineIDFileEnv, p)
	id, err := DefaultMachineIdentity()
	if err != nil || string(id) != "0123456789abcdef0123456789abcdef" {
		t.Fatalf("identity = %q, %v", id, err)
	}
	writeFile(t, p, []byte("secret-id-content \n\n"))
	id2, _ := DefaultMachineIdentity()
	if string(id2) != "secret-id-content" {
		t.Fatalf("identity = %q", id2)
	}
	writeFile(t, p, []byte(" \n"))
	if _, err := DefaultMachineIdentity(); err == nil {
		t.Fatal("empty identity file accepted")
	}
	t.Setenv(MachineIDFileEnv, filepath.Join(dir, "missing"))
	if _, err := DefaultMachineIdentity(); err == nil {
		t.Fatal("missing identity file accepted")
	}
	// Through a Store with MachineIdentity nil.
	t.Setenv(MachineIDFileEnv, p)
	writeFile(t, p, []byte("machine-one\n"))
	s := New(filepath.Join(dir, "ks"), Options{KDF: tinyKDF})
	k, err := s.Init(passA)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.EnableAutoOpen(k); err != nil {
		t.Fatal(err)
	}
	if _, err := s.OpenAuto(); err != nil {
		t.Fatal(err)
	}
	writeFile(t, p, []byte("machine-two\n"))
	_, err = s.OpenAuto()
	wantErr(t, err, ErrMachineMismatch, "OpenAuto after machine id change")
	if strings.Contains(err.Error(), "machine-two") {
		t.Fatal("error shows the machine identity")
	}
}

func BenchmarkOpenDefaultKDF(b *testing.B) {
	s := New(filepath.Join(b.TempDir(), "ks"), Options{MachineIdentity: testIdentity})
	if _, err := s.Init(passA); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := s.Open(passA); err != nil {
			b.Fatal(err)
		}
	}
}

func TestResetPassphraseWithOpenKeyring(t *testing.T) {
	s := newStore(t, t.TempDir())
	k, err := s.Init([]byte("forgotten-passphrase"))
	if err != nil {
		t.Fatal(err)
	}
	gen, wrapped, err := k.Wrap([]byte("dek"), []byte("aad"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ResetPassphrase(k, []byte("short")); !errors.Is(err, ErrPassphraseLength) {
		t.Fatalf("short new passphrase: %v", err)
	}
	nk, err := s.ResetPassphrase(k, []byte("brand-new-passphrase"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Open([]byte("forgotten-passphrase")); !errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("old passphrase after reset: %v", err)
	}
	ok, err := s.Open([]byte("brand-new-passphrase"))
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := ok.Unwrap(gen, wrapped, []byte("aad")); err != nil || string(pt) != "dek" {
		t.Fatalf("MEKs changed by reset: %v", err)
	}
	// The keyring from before the reset is stale now.
	if _, err := s.ResetPassphrase(k, []byte("another-passphrase")); !errors.Is(err, ErrStaleKeyring) {
		t.Fatalf("stale keyring: %v", err)
	}
	_ = nk
}

func TestExportImportMEKs(t *testing.T) {
	s := newStore(t, t.TempDir())
	ring, err := s.Init([]byte("export-test-passphrase"))
	if err != nil {
		t.Fatal(err)
	}
	ring2, err := s.Rotate(ring)
	if err != nil {
		t.Fatal(err)
	}
	gen, wrapped, err := ring2.Wrap([]byte("data key"), []byte("aad"))
	if err != nil {
		t.Fatal(err)
	}
	oldGen, oldWrapped, _ := ring.Wrap([]byte("old data key"), []byte("aad"))
	b, err := ring2.ExportMEKs()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ImportMEKs(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Current() != ring2.Current() || len(got.Generations()) != 2 {
		t.Fatalf("imported current %d gens %v", got.Current(), got.Generations())
	}
	for _, c := range []struct {
		gen  uint32
		w    []byte
		want string
	}{{gen, wrapped, "data key"}, {oldGen, oldWrapped, "old data key"}} {
		pt, err := got.Unwrap(c.gen, c.w, []byte("aad"))
		if err != nil || string(pt) != c.want {
			t.Fatalf("unwrap gen %d: %q %v", c.gen, pt, err)
		}
	}
	if _, err := ImportMEKs(b[:len(b)-1]); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("truncated export: %v", err)
	}
}

// TestAddGenerations: a generation wrapped on one keystore is added to
// another holding the earlier generation, which then opens with its own
// passphrase and unwraps what the new generation wrapped.
func TestAddGenerations(t *testing.T) {
	a := New(t.TempDir(), Options{KDF: tinyKDF})
	ka, err := a.Init([]byte("passphrase-a"))
	if err != nil {
		t.Fatal(err)
	}
	b := New(t.TempDir(), Options{KDF: tinyKDF})
	kb, err := b.InitFrom([]byte("passphrase-b"), ka)
	if err != nil {
		t.Fatal(err)
	}
	ka2, err := a.Rotate(ka)
	if err != nil {
		t.Fatal(err)
	}
	w, err := ka2.WrapGeneration(2, 1)
	if err != nil {
		t.Fatal(err)
	}
	gen, wrapped, err := ka2.Wrap([]byte("data key"), []byte("aad"))
	if err != nil || gen != 2 {
		t.Fatal(gen, err)
	}
	kb2, err := b.AddGenerations(kb, []WrappedGen{w})
	if err != nil {
		t.Fatal(err)
	}
	if kb2.Current() != 2 {
		t.Fatalf("current %d", kb2.Current())
	}
	reopened, err := b.Open([]byte("passphrase-b"))
	if err != nil {
		t.Fatal(err)
	}
	if p, err := reopened.Unwrap(2, wrapped, []byte("aad")); err != nil || string(p) != "data key" {
		t.Fatalf("unwrap with the added generation: %q %v", p, err)
	}
	// Adding again changes nothing; a damaged wrap is refused.
	if same, err := b.AddGenerations(reopened, []WrappedGen{w}); err != nil || same != reopened {
		t.Fatalf("second add: %v", err)
	}
	bad := w
	bad.Gen, bad.Wrapped = 3, append([]byte(nil), w.Wrapped...)
	bad.Wrapped[len(bad.Wrapped)-1] ^= 1
	if _, err := b.AddGenerations(reopened, []WrappedGen{bad}); !errors.Is(err, ErrUnwrap) {
		t.Fatalf("damaged wrap: %v", err)
	}
}

// TestRotateLeavesAnAKSOfAnotherMachine: a keystore.aks that does not open
// here (made on another machine, or for the directory at another path) is
// left alone by Rotate, ChangePassphrase and ResetPassphrase as by Open: a
// rotation must not switch auto-open on where nobody enabled it (a data dir
// restored onto new hardware, a copy made for a drill). Each says so to
// Options.Warn; EnableAutoOpen is how it is switched on here.
func TestRotateLeavesAnAKSOfAnotherMachine(t *testing.T) {
	s, k := initStore(t)
	if err := s.EnableAutoOpen(k); err != nil {
		t.Fatal(err)
	}
	aksPath := filepath.Join(s.Dir(), AutoOpenFileName)
	aks := readFile(t, aksPath)
	var warned []error
	other := New(s.Dir(), Options{KDF: tinyKDF, Warn: func(err error) { warned = append(warned, err) },
		MachineIdentity: func() ([]byte, error) { return []byte("test-machine-2"), nil }})
	k2 := mustOpen(t, other, passA)
	k3, err := other.Rotate(k2)
	if err != nil {
		t.Fatal(err)
	}
	k4, err := other.ChangePassphrase(passA, passB)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.ResetPassphrase(k4, passA); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(aks, readFile(t, aksPath)) {
		t.Fatal("the keystore.aks of another machine was rewritten for this one")
	}
	_, err = other.OpenAuto()
	wantErr(t, err, ErrMachineMismatch, "OpenAuto on the machine that never enabled auto-open")
	// Open, Rotate, ChangePassphrase, ResetPassphrase.
	if len(warned) != 4 {
		t.Fatalf("warnings = %v, want 4", warned)
	}
	for _, w := range warned {
		if !errors.Is(w, ErrMachineMismatch) {
			t.Fatalf("warning %v, want one naming the machine mismatch", w)
		}
	}
	if k3.Current() != 2 {
		t.Fatalf("rotated keyring current = %d", k3.Current())
	}
}

// TestAutoOpenFromANewerVersion: a keystore.aks written by a newer version
// of Coffer (found after a downgrade) is said to be that, not "damaged",
// and, where its header is not in this version's layout (which damage to
// the version bytes also gives), as newer or damaged.
func TestAutoOpenFromANewerVersion(t *testing.T) {
	s, k := initStore(t)
	if err := s.EnableAutoOpen(k); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(s.Dir(), AutoOpenFileName)
	orig := readFile(t, path)
	same := bytes.Clone(orig)
	binary.BigEndian.PutUint16(same[aksOffVersion:], aksVersion+1)
	binary.BigEndian.PutUint32(same[aksOffCRC:], crc32.Checksum(same[:aksOffCRC], crc32.MakeTable(crc32.Castagnoli)))
	sum := sha256.Sum256(same[:len(same)-32])
	copy(same[len(same)-32:], sum[:])
	other := bytes.Clone(same)
	other = append(other[:aksHeaderSize:aksHeaderSize], append([]byte{0, 0, 0, 0}, other[aksHeaderSize:]...)...) // a longer header
	for name, b := range map[string][]byte{"same layout": same, "another layout": other} {
		writeFile(t, path, b)
		_, err := s.OpenAuto()
		if !errors.Is(err, ErrAutoOpenNewer) || !errors.Is(err, ErrUnsupportedVersion) {
			t.Fatalf("%s: OpenAuto: %v, want ErrAutoOpenNewer", name, err)
		}
		if !strings.Contains(err.Error(), "newer version") {
			t.Fatalf("%s: the error does not say keystore.aks is from a newer version: %v", name, err)
		}
		if name == "same layout" && (errors.Is(err, ErrAutoOpenDamaged) || strings.Contains(err.Error(), "damaged")) {
			t.Fatalf("%s: a keystore.aks of a newer version reported as damaged: %v", name, err)
		}
	}
	// Enabling auto-open again rewrites it for this version.
	if err := s.EnableAutoOpen(k); err != nil {
		t.Fatal(err)
	}
	if k2, err := s.OpenAuto(); err != nil {
		t.Fatalf("OpenAuto after enabling auto-open again: %v", err)
	} else {
		k2.Wipe()
	}
}
