package journal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// testCipher is AES-256-GCM with a fixed key per id (ids 1-9 exist).
type testCipher struct{}

func (testCipher) aead(id uint32) (cipher.AEAD, error) {
	if id == 0 || id > 9 {
		return nil, fmt.Errorf("unknown key %d", id)
	}
	k := sha256.Sum256([]byte(fmt.Sprintf("journal test key %d", id)))
	b, err := aes.NewCipher(k[:])
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

func (c testCipher) Seal(id uint32, pt, aad []byte) ([]byte, error) {
	a, err := c.aead(id)
	if err != nil {
		return nil, err
	}
	out := make([]byte, a.NonceSize(), a.NonceSize()+len(pt)+a.Overhead())
	if _, err := rand.Read(out); err != nil {
		return nil, err
	}
	return a.Seal(out, out, pt, aad), nil
}

func (c testCipher) Open(id uint32, ct, aad []byte) ([]byte, error) {
	a, err := c.aead(id)
	if err != nil {
		return nil, err
	}
	if len(ct) < a.NonceSize()+a.Overhead() {
		return nil, errors.New("ciphertext too short")
	}
	return a.Open(nil, ct[:a.NonceSize()], ct[a.NonceSize():], aad)
}

// clock is an injectable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

var t0 = time.Date(2026, 11, 21, 4, 45, 0, 0, time.UTC)

func newClock() *clock { return &clock{t: t0} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func openT(t testing.TB, dir string, clk *clock, mod func(*Options)) *Journal {
	t.Helper()
	o := Options{Dir: dir, Name: "coffer", Now: clk.Now}
	if mod != nil {
		mod(&o)
	}
	j, err := Open(o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return j
}

// mkRecs makes records from..to; every third one is encrypted with key 1 + i%2.
func mkRecs(from, to uint64) []Record {
	var rs []Record
	for i := from; i <= to; i++ {
		r := Record{Index: i, Time: t0.Add(time.Duration(i) * time.Millisecond), Type: uint16(i % 7),
			Payload: []byte(fmt.Sprintf("payload of record %d", i))}
		if i%3 != 0 {
			r.KeyID = uint32(1 + i%2)
			r.Payload = []byte(fmt.Sprintf("SECRET plaintext %d", i))
		}
		rs = append(rs, r)
	}
	return rs
}

func appendT(t testing.TB, j *Journal, rs []Record) {
	t.Helper()
	if err := j.Append(rs, testCipher{}); err != nil {
		t.Fatalf("Append: %v", err)
	}
}

func verifyOK(t testing.TB, dir string) Report {
	t.Helper()
	rep, err := Verify(dir, testCipher{})
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	return rep
}

func corrupt(t testing.TB, err error) *CorruptError {
	t.Helper()
	var ce *CorruptError
	if !errors.As(err, &ce) {
		t.Fatalf("want *CorruptError, got %v", err)
	}
	return ce
}

// frameOffsets returns the offset of every frame of a segment file and its size.
func frameOffsets(t testing.TB, path string) ([]int64, int64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	off := int64(headerFixedLen + int(binary.BigEndian.Uint16(b[26:])) + headerCRCLen)
	var offs []int64
	for off < int64(len(b)) {
		offs = append(offs, off)
		off += frameHeaderLen + int64(binary.BigEndian.Uint32(b[off:]))
	}
	return offs, int64(len(b))
}

// copyDir copies the regular files of src into a new temp dir.
func copyDir(t testing.TB, src string) string {
	t.Helper()
	dst := t.TempDir()
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

func fileSize(t testing.TB, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// faults makes segment writes fail past a file size, and truncates fail.
type faults struct {
	mu           sync.Mutex
	limit        int64 // -1 = no limit
	failTruncate int
	failSync     int
}

type faultyFile struct {
	segFile
	fl *faults
}

func (f *faultyFile) WriteAt(p []byte, off int64) (int, error) {
	f.fl.mu.Lock()
	limit := f.fl.limit
	f.fl.mu.Unlock()
	if limit >= 0 && off+int64(len(p)) > limit {
		n := limit - off
		if n < 0 {
			n = 0
		}
		if n > 0 {
			if _, err := f.segFile.WriteAt(p[:n], off); err != nil {
				return 0, err
			}
		}
		return int(n), syscall.ENOSPC
	}
	return f.segFile.WriteAt(p, off)
}

func (f *faultyFile) Truncate(n int64) error {
	f.fl.mu.Lock()
	defer f.fl.mu.Unlock()
	if f.fl.failTruncate > 0 {
		f.fl.failTruncate--
		return syscall.EIO
	}
	return f.segFile.Truncate(n)
}

func (f *faultyFile) Sync() error {
	f.fl.mu.Lock()
	defer f.fl.mu.Unlock()
	if f.fl.failSync > 0 {
		f.fl.failSync--
		return syscall.EIO
	}
	return f.segFile.Sync()
}
