package keystore

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

// go test ./internal/keystore/ -run TestFixture -update regenerates the
// checked-in fixture. Only do that for a deliberate format change: the point
// of the fixture is that files written by earlier builds keep opening.
var update = flag.Bool("update", false, "rewrite testdata/keystore.ks and testdata/vectors.json")

const (
	fixtureKS      = "testdata/keystore.ks"
	fixtureVectors = "testdata/vectors.json"
)

// fixture describes testdata/keystore.ks. The passphrase is a test value.
type fixture struct {
	Passphrase  string      `json:"passphrase"`
	KDF         KDFParams   `json:"kdf"`
	Current     uint32      `json:"current"`
	Generations []uint32    `json:"generations"`
	Vectors     []fixtureVW `json:"vectors"`
}

type fixtureVW struct {
	Generation uint32 `json:"generation"`
	AAD        string `json:"aad"`
	Plaintext  string `json:"plaintext"`
	Wrapped    string `json:"wrapped_hex"`
}

func writeFixture(t *testing.T) {
	pass := "fixture passphrase v1"
	s := New(filepath.Join(t.TempDir(), "ks"), Options{KDF: tinyKDF, MachineIdentity: testIdentity})
	k, err := s.Init([]byte(pass))
	if err != nil {
		t.Fatal(err)
	}
	fx := fixture{Passphrase: pass, KDF: tinyKDF}
	wrap := func(k *Keyring, aad, pt string) {
		gen, w, err := k.Wrap([]byte(pt), []byte(aad))
		if err != nil {
			t.Fatal(err)
		}
		fx.Vectors = append(fx.Vectors, fixtureVW{gen, aad, pt, hex.EncodeToString(w)})
	}
	wrap(k, "coffer fixture aad 1", "wrapped under generation 1")
	if k, err = s.Rotate(k); err != nil {
		t.Fatal(err)
	}
	wrap(k, "coffer fixture aad 2", "wrapped under generation 2")
	fx.Current, fx.Generations = k.Current(), gensOf(k)
	if err := os.MkdirAll("testdata", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(fixtureKS, readFile(t, filepath.Join(s.Dir(), FileName)), 0o644); err != nil {
		t.Fatal(err)
	}
	j, err := json.MarshalIndent(fx, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(fixtureVectors, append(j, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("rewrote %s and %s", fixtureKS, fixtureVectors)
}

// loadFixture copies the fixture into a fresh keystore directory (so nothing
// ever writes to testdata) and returns a store on it.
func loadFixture(t *testing.T) (*Store, fixture, []byte) {
	t.Helper()
	var fx fixture
	if err := json.Unmarshal(readFile(t, fixtureVectors), &fx); err != nil {
		t.Fatal(err)
	}
	data := readFile(t, fixtureKS)
	dir := filepath.Join(t.TempDir(), "keystore")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, FileName), data)
	return newStore(t, dir), fx, data
}

func TestFixture(t *testing.T) {
	if *update {
		writeFixture(t)
	}
	s, fx, data := loadFixture(t)
	k, err := s.Open([]byte(fx.Passphrase))
	if err != nil {
		t.Fatalf("fixture no longer opens: %v", err)
	}
	if k.Current() != fx.Current || !equalU32(gensOf(k), fx.Generations) {
		t.Fatalf("fixture keyring %v, generations %v; want current %d, %v", k, gensOf(k), fx.Current, fx.Generations)
	}
	if len(fx.Vectors) == 0 {
		t.Fatal("no vectors")
	}
	for _, v := range fx.Vectors {
		w, err := hex.DecodeString(v.Wrapped)
		if err != nil {
			t.Fatal(err)
		}
		p, err := k.Unwrap(v.Generation, w, []byte(v.AAD))
		if err != nil || string(p) != v.Plaintext {
			t.Fatalf("vector for generation %d: %q, %v", v.Generation, p, err)
		}
	}
	info, err := s.Info()
	if err != nil || info.FormatVersion != 1 || info.KDF != fx.KDF || info.Size != int64(len(data)) {
		t.Fatalf("Info = %+v, %v", info, err)
	}
	if string(data[:8]) != ksMagic || binary.BigEndian.Uint16(data[8:]) != 1 {
		t.Fatal("fixture header")
	}

	_, err = s.Open([]byte("not the fixture passphrase"))
	wantErr(t, err, ErrWrongPassphrase, "fixture with wrong passphrase")

	// Corrupted variants of the fixture, produced here.
	path := filepath.Join(s.Dir(), FileName)
	flipAndTruncate(t, path, func() error { _, err := s.Open([]byte(fx.Passphrase)); return err })
	v := bytes.Clone(data)
	binary.BigEndian.PutUint16(v[ksOffVersion:], 2)
	writeFile(t, path, reframe(v))
	if _, err := s.Open([]byte(fx.Passphrase)); !errors.Is(err, ErrUnsupportedVersion) {
		t.Fatalf("fixture as version 2: %v", err)
	}
}

func equalU32(a, b []uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
