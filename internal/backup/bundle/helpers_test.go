package bundle

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
	"time"
)

// Fixed age X25519 test keys (never used outside tests).
const (
	testIdentity1  = "AGE-SECRET-KEY-1LXV27NXDJ66FUYWQVX3FXHJXMP3G6W84AK60AK2UMSD73CWHHUNSSKA7Z6"
	testRecipient1 = "age1nr0ge0a9dgytr9qjps3wu954m57tgw2aqg2ynt0w9qy3ef6xfp4qe844r2"
	testIdentity2  = "AGE-SECRET-KEY-1XQ8ZT5H8C5JJ5J5TZ8RH4P0UVT4CTJWRMS0JPATSPL970DQVYD3SFVKY89"
	testRecipient2 = "age1twerlnz96yftccl6c83e0dve84n4svq2alc3yp4cgcwl7crwrpjq0jy7sk"
	testIdentity3  = "AGE-SECRET-KEY-1ZZDPYT7NX3YH2NKSTLX25LLTG07G2X2XXK457K45UXZ3JUYSHLMSM6TJXR"
	testRecipient3 = "age10f0u5cdwxdsgjpwjts2r959jm0eduhqru800q0nlfzg4r3qqcsuqdq2nyd"

	testPassphrase = "correct horse battery staple"
	testWorkFactor = 10
)

var t0 = time.Date(2026, 11, 21, 4, 45, 0, 0, time.UTC)

func testManifest() Manifest {
	return Manifest{
		ID:         "full-20261121T044500Z-n1",
		Kind:       KindFull,
		ClusterID:  "c-0123456789",
		Node:       "n1",
		FirstIndex: 1,
		LastIndex:  42,
		FirstTime:  t0.Add(-time.Hour),
		LastTime:   t0,
		Created:    t0,
		Software:   "coffer test",
		Extra:      map[string]string{"note": "test"},
	}
}

func passEnc() Encryption {
	return Encryption{Passphrase: []byte(testPassphrase), Label: "offsite", ScryptWorkFactor: testWorkFactor}
}

func passDec() Decryption { return Decryption{Passphrase: []byte(testPassphrase)} }

func idDec(ids ...string) Decryption { return Decryption{Identities: ids} }

// writeBundle writes plain as a bundle and returns the file.
func writeBundle(t testing.TB, m Manifest, enc Encryption, plain []byte) ([]byte, Manifest) {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewWriter(&buf, m, enc)
	if err != nil {
		t.Fatal(err)
	}
	// Several writes, of uneven sizes.
	for p := plain; len(p) > 0; {
		n := min(len(p), 1+len(p)/3)
		if _, err := w.Write(p[:n]); err != nil {
			t.Fatal(err)
		}
		p = p[n:]
	}
	got, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), got
}

// openAll opens a bundle and reads all of it.
func openAll(file []byte, dec Decryption) ([]byte, Manifest, error) {
	rc, m, err := Open(bytes.NewReader(file), int64(len(file)), dec)
	if err != nil {
		return nil, m, err
	}
	defer rc.Close()
	plain, err := io.ReadAll(rc)
	return plain, m, err
}

var sentinels = []error{ErrNotBundle, ErrTruncated, ErrCorrupt, ErrWrongKey, ErrUnsupported}

// kindOf returns the one sentinel err wraps, failing the test on anything
// else (also on an *Error without its sentinel).
func kindOf(t testing.TB, err error) error {
	t.Helper()
	var found []error
	for _, s := range sentinels {
		if errors.Is(err, s) {
			found = append(found, s)
		}
	}
	var e *Error
	if len(found) != 1 || !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not exactly one documented kind: %v", err, err, found)
	}
	return found[0]
}

// wantKind fails unless err wraps want.
func wantKind(t testing.TB, err error, want error, what string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error, want %v", what, want)
	}
	if got := kindOf(t, err); got != want {
		t.Fatalf("%s: got %v, want %v", what, err, want)
	}
}

// genReader produces size bytes of deterministic data that compresses to
// about half: per 4 KiB, 2 KiB random and 2 KiB log-like text.
type genReader struct {
	rng  *rand.ChaCha8
	left int64
	line int
	buf  []byte
}

func newGen(size int64, seed byte) *genReader {
	return &genReader{rng: rand.NewChaCha8([32]byte{seed}), left: size}
}

func (g *genReader) Read(p []byte) (int, error) {
	if g.left == 0 {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && g.left > 0 {
		if len(g.buf) == 0 {
			g.fill()
		}
		k := copy(p[n:], g.buf[:min(int64(len(g.buf)), g.left)])
		g.buf = g.buf[k:]
		n += k
		g.left -= int64(k)
	}
	return n, nil
}

func (g *genReader) fill() {
	b := make([]byte, 4096)
	g.rng.Read(b[:2048])
	t := b[2048:2048]
	for len(t) < 2048 {
		g.line++
		t = fmt.Appendf(t, "%08d key=k%d op=wrap gen=%d ok\n", g.line, g.line%97, g.line%5)
	}
	copy(b[2048:], t)
	g.buf = b
}
