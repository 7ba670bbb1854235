package bundle

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestRoundTrip(t *testing.T) {
	plain, err := io.ReadAll(newGen(300<<10+123, 1)) // several age chunks, a short last one
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name       string
		enc        Encryption
		recipients []string
		decs       []Decryption
	}{
		{"passphrase", passEnc(), []string{"passphrase:offsite"}, []Decryption{passDec()}},
		{"x25519", Encryption{Recipients: []string{testRecipient1}}, []string{testRecipient1},
			[]Decryption{idDec(testIdentity1), idDec(testIdentity2, testIdentity1)}},
		{"x25519x2", Encryption{Recipients: []string{testRecipient1, " " + testRecipient2 + "\n"}}, []string{testRecipient1, testRecipient2},
			[]Decryption{idDec(testIdentity1), idDec(testIdentity2), {Passphrase: []byte("x"), Identities: []string{testIdentity2}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, p := range [][]byte{plain, nil} {
				file, m := writeBundle(t, testManifest(), tc.enc, p)
				want := testManifest()
				want.Format = 1
				want.Recipients = tc.recipients
				want.PlainSize = int64(len(p))
				want.PayloadSize = m.PayloadSize
				want.PayloadSHA256 = m.PayloadSHA256
				if !reflect.DeepEqual(m, want) {
					t.Fatalf("Close manifest\n got %+v\nwant %+v", m, want)
				}
				if got := int64(len(file)) - m.PayloadSize; got < int64(headLen+bodyFixed+tailLen) || got > 2000 {
					t.Fatalf("framing takes %d bytes", got)
				}
				rm, err := ReadManifest(bytes.NewReader(file), int64(len(file)))
				if err != nil {
					t.Fatal(err)
				}
				assertSameManifest(t, rm, m)
				vm, err := Verify(bytes.NewReader(file), int64(len(file)), nil)
				if err != nil {
					t.Fatal(err)
				}
				assertSameManifest(t, vm, m)
				for _, dec := range tc.decs {
					got, om, err := openAll(file, dec)
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(got, p) {
						t.Fatalf("plaintext differs: %d bytes, want %d", len(got), len(p))
					}
					assertSameManifest(t, om, m)
					if _, err := Verify(bytes.NewReader(file), int64(len(file)), &dec); err != nil {
						t.Fatal(err)
					}
				}
			}
		})
	}
}

// assertSameManifest compares manifests as they are stored (JSON).
func assertSameManifest(t *testing.T, got, want Manifest) {
	t.Helper()
	a, _ := json.Marshal(got)
	b, _ := json.Marshal(want)
	if !bytes.Equal(a, b) {
		t.Fatalf("manifest\n got %s\nwant %s", a, b)
	}
}

func TestWrongKey(t *testing.T) {
	passFile, _ := writeBundle(t, testManifest(), passEnc(), []byte("secret state"))
	idFile, _ := writeBundle(t, testManifest(), Encryption{Recipients: []string{testRecipient1, testRecipient2}}, []byte("secret state"))
	for _, tc := range []struct {
		name string
		file []byte
		dec  Decryption
	}{
		{"wrong passphrase", passFile, Decryption{Passphrase: []byte("correct horse battery stapler")}},
		{"wrong identity", idFile, idDec(testIdentity3)},
		{"identity for passphrase file", passFile, idDec(testIdentity1)},
		{"passphrase for identity file", idFile, passDec()},
		{"both wrong", idFile, Decryption{Passphrase: []byte(testPassphrase), Identities: []string{testIdentity3}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, m, err := openAll(tc.file, tc.dec)
			wantKind(t, err, ErrWrongKey, "Open")
			if m.ID == "" {
				t.Error("Open returned no manifest with ErrWrongKey")
			}
			_, err = Verify(bytes.NewReader(tc.file), int64(len(tc.file)), &tc.dec)
			wantKind(t, err, ErrWrongKey, "Verify")
			if s := err.Error(); strings.Contains(s, testPassphrase) || strings.Contains(s, "AGE-SECRET-KEY") {
				t.Fatalf("error shows a secret: %s", s)
			}
			t.Log(err)
		})
	}
}

func TestNoSecretsInFile(t *testing.T) {
	enc := passEnc()
	plain, _ := io.ReadAll(newGen(400<<10, 2))
	file, m := writeBundle(t, testManifest(), enc, plain)
	if bytes.Contains(file, enc.Passphrase) {
		t.Fatal("file contains the passphrase")
	}
	// ReadManifest needs nothing but the last 64 KiB: serve only those.
	tail := file[len(file)-64<<10:]
	r := &onlyTail{b: tail, off: int64(len(file) - len(tail))}
	rm, err := ReadManifest(r, int64(len(file)))
	if err != nil {
		t.Fatal(err)
	}
	assertSameManifest(t, rm, m)
	if r.reads != 1 {
		t.Errorf("ReadManifest made %d reads, want 1", r.reads)
	}
	js, _ := json.Marshal(rm)
	if bytes.Contains(js, enc.Passphrase) || bytes.Contains(bytes.ToLower(js), []byte("horse")) {
		t.Fatalf("manifest contains the passphrase: %s", js)
	}
	if !reflect.DeepEqual(rm.Recipients, []string{"passphrase:offsite"}) {
		t.Fatalf("recipients %q", rm.Recipients)
	}

	idFile, _ := writeBundle(t, testManifest(), Encryption{Recipients: []string{testRecipient1}}, []byte("payload"))
	for _, secret := range []string{testIdentity1, strings.ToLower(testIdentity1), testIdentity1[len("AGE-SECRET-KEY-1"):]} {
		if bytes.Contains(idFile, []byte(secret)) {
			t.Fatal("file contains the identity")
		}
	}
}

// onlyTail is a ReaderAt that has only the bytes from off on.
type onlyTail struct {
	b     []byte
	off   int64
	reads int
}

func (r *onlyTail) ReadAt(p []byte, off int64) (int, error) {
	r.reads++
	if off < r.off {
		return 0, errors.New("read before the tail")
	}
	n := copy(p, r.b[off-r.off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func TestLargeManifest(t *testing.T) {
	m := testManifest()
	m.Extra = map[string]string{"big": strings.Repeat("x", 100<<10)}
	file, wm := writeBundle(t, m, passEnc(), []byte("p"))
	rm, err := ReadManifest(bytes.NewReader(file), int64(len(file)))
	if err != nil {
		t.Fatal(err)
	}
	assertSameManifest(t, rm, wm)
	if _, _, err := openAll(file, passDec()); err != nil {
		t.Fatal(err)
	}
	m.Extra = map[string]string{"big": strings.Repeat("x", 2<<20)}
	if _, err := NewWriter(io.Discard, m, passEnc()); err == nil {
		t.Fatal("NewWriter accepted a 2 MiB manifest")
	}
}

func TestNewWriterArguments(t *testing.T) {
	good := testManifest()
	for _, tc := range []struct {
		name string
		m    func(*Manifest)
		enc  Encryption
	}{
		{"no id", func(m *Manifest) { m.ID = "" }, passEnc()},
		{"bad kind", func(m *Manifest) { m.Kind = "partial" }, passEnc()},
		{"future format", func(m *Manifest) { m.Format = 2 }, passEnc()},
		{"index range", func(m *Manifest) { m.FirstIndex = 50 }, passEnc()},
		{"no key", nil, Encryption{}},
		{"both", nil, Encryption{Passphrase: []byte("p"), Recipients: []string{testRecipient1}}},
		{"work factor low", nil, Encryption{Passphrase: []byte("p"), ScryptWorkFactor: 5}},
		{"work factor high", nil, Encryption{Passphrase: []byte("p"), ScryptWorkFactor: 21}},
		{"label is passphrase", nil, Encryption{Passphrase: []byte(testPassphrase), Label: testPassphrase, ScryptWorkFactor: 10}},
		{"label control", nil, Encryption{Passphrase: []byte("p"), Label: "a\nb", ScryptWorkFactor: 10}},
		{"secret key as recipient", nil, Encryption{Recipients: []string{testIdentity1}}},
		{"duplicate recipient", nil, Encryption{Recipients: []string{testRecipient1, testRecipient1}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := good
			if tc.m != nil {
				tc.m(&m)
			}
			var buf bytes.Buffer
			_, err := NewWriter(&buf, m, tc.enc)
			if err == nil {
				t.Fatal("accepted")
			}
			if buf.Len() != 0 {
				t.Fatal("wrote before failing")
			}
			if s := err.Error(); strings.Contains(s, testPassphrase) || strings.Contains(s, "AGE-SECRET") || strings.Contains(s, testIdentity1[16:]) {
				t.Fatalf("error shows a secret: %s", s)
			}
			t.Log(err)
		})
	}
	// Defaults: label, created (now, UTC), format.
	m := good
	m.Created = time.Time{}
	before := time.Now()
	_, got := writeBundle(t, m, Encryption{Passphrase: []byte("p"), ScryptWorkFactor: 10}, nil)
	if got.Recipients[0] != "passphrase:default" || got.Format != 1 {
		t.Fatalf("defaults: %+v", got)
	}
	if got.Created.Location() != time.UTC || got.Created.Before(before) || time.Since(got.Created) > time.Minute {
		t.Fatalf("created %v", got.Created)
	}
}

// failWriter fails once more than limit bytes were written.
type failWriter struct {
	n, limit int
}

var errDisk = errors.New("disk full")

func (w *failWriter) Write(p []byte) (int, error) {
	if w.n+len(p) > w.limit {
		k := w.limit - w.n
		w.n = w.limit
		return k, errDisk
	}
	w.n += len(p)
	return len(p), nil
}

func TestWriteErrors(t *testing.T) {
	plain, _ := io.ReadAll(newGen(300<<10, 5))
	file, _ := writeBundle(t, testManifest(), passEnc(), plain)
	for _, limit := range []int{0, 10, 19, 100, 1000, 70000, len(file) - 100, len(file) - 1} {
		fw := &failWriter{limit: limit}
		var err error
		w, err := NewWriter(fw, testManifest(), passEnc())
		if err == nil {
			_, err = w.Write(plain)
			_, cerr := w.Close()
			if err == nil {
				err = cerr
			} else if cerr == nil {
				t.Fatalf("limit %d: Close succeeded after a Write error", limit)
			}
		}
		if !errors.Is(err, errDisk) {
			t.Fatalf("limit %d: %v, want the writer's error", limit, err)
		}
		var e *Error
		if errors.As(err, &e) {
			t.Fatalf("limit %d: a write error is reported as a format error: %v", limit, err)
		}
		t.Logf("limit %d: %v", limit, err)
	}
}

// failReaderAt fails reads that reach past limit.
type failReaderAt struct {
	b     []byte
	limit int64
}

var errIO = errors.New("connection reset")

func (r *failReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > r.limit {
		return 0, errIO
	}
	return copy(p, r.b[off:]), nil
}

func TestReaderIOErrors(t *testing.T) {
	plain, _ := io.ReadAll(newGen(300<<10, 6))
	file, _ := writeBundle(t, testManifest(), passEnc(), plain)
	l := layoutOf(t, file)
	dec := passDec()
	for _, limit := range []int{0, 10, 100, l.trailer / 2, l.trailer, l.size - 1} {
		r := &failReaderAt{b: file, limit: int64(limit)}
		size := int64(len(file))
		for name, fn := range map[string]func() error{
			"ReadManifest": func() error { _, err := ReadManifest(r, size); return err },
			"Verify(nil)":  func() error { _, err := Verify(r, size, nil); return err },
			"Verify(dec)":  func() error { _, err := Verify(r, size, &dec); return err },
		} {
			err := fn()
			if name == "ReadManifest" && limit <= l.size-tailRead {
				// Reads only the end.
				continue
			}
			if !errors.Is(err, errIO) {
				t.Fatalf("limit %d: %s: %v, want the reader's error", limit, name, err)
			}
			for _, s := range sentinels {
				if errors.Is(err, s) {
					t.Fatalf("limit %d: %s: an I/O error is reported as %v", limit, name, s)
				}
			}
		}
	}
}

func TestReadAfterClose(t *testing.T) {
	file, _ := writeBundle(t, testManifest(), passEnc(), []byte("data"))
	rc, _, err := Open(bytes.NewReader(file), int64(len(file)), passDec())
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := rc.Read(make([]byte, 10)); err == nil {
		t.Fatal("read after Close")
	}
	if err := rc.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestDecryptionArguments(t *testing.T) {
	file, _ := writeBundle(t, testManifest(), passEnc(), []byte("data"))
	for _, dec := range []Decryption{{}, {Identities: []string{"AGE-SECRET-KEY-1QQQ"}}, {Identities: []string{testRecipient1}}} {
		_, _, err := Open(bytes.NewReader(file), int64(len(file)), dec)
		if err == nil {
			t.Fatal("accepted")
		}
		var e *Error
		if errors.As(err, &e) || strings.Contains(err.Error(), "QQQ") {
			t.Fatalf("%v", err)
		}
	}
}

func TestGenerateIdentity(t *testing.T) {
	id, rcp, err := GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(id, "AGE-SECRET-KEY-1") || !strings.HasPrefix(rcp, "age1") {
		t.Fatalf("%s %s", id, rcp)
	}
	file, m := writeBundle(t, testManifest(), Encryption{Recipients: []string{rcp}}, []byte("data"))
	if m.Recipients[0] != rcp {
		t.Fatal(m.Recipients)
	}
	if plain, _, err := openAll(file, idDec(id)); err != nil || string(plain) != "data" {
		t.Fatal(err)
	}
}
