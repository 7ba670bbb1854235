package bundle

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"testing/cryptotest"
)

var update = flag.Bool("update", false, "rewrite testdata/vector.bundle, testdata/vector.json and the dump in FORMAT.md")

const (
	vectorPassphrase = "coffer test vector"
	vectorPlain      = "hello from coffer\nhello from coffer\nhello from coffer\n"
	vectorFile       = "testdata/vector.bundle"
	vectorJSON       = "testdata/vector.json"
)

func vectorManifest() Manifest {
	return Manifest{
		ID:         "full-20261121T044500Z",
		Kind:       KindFull,
		ClusterID:  "c-0123456789",
		Node:       "n1",
		FirstIndex: 1,
		LastIndex:  2,
		Created:    t0,
		Software:   "coffer test",
	}
}

func vectorEnc() Encryption {
	return Encryption{Passphrase: []byte(vectorPassphrase), Label: "vector", ScryptWorkFactor: 10}
}

// makeVector writes the vector with a deterministic random source.
func makeVector(t *testing.T) ([]byte, Manifest) {
	cryptotest.SetGlobalRandom(t, 1)
	return writeBundle(t, vectorManifest(), vectorEnc(), []byte(vectorPlain))
}

// TestVector opens the checked-in vector: it guards the reader against
// format changes. TestVectorReproducible guards the writer.
func TestVector(t *testing.T) {
	if *update {
		file, m := makeVector(t)
		js, _ := json.MarshalIndent(m, "", "  ")
		writeFile(t, vectorFile, file)
		writeFile(t, vectorJSON, append(js, '\n'))
		doc, err := os.ReadFile("FORMAT.md")
		if err != nil {
			t.Fatal(err)
		}
		doc = vectorBlock.ReplaceAllLiteral(doc, []byte("<!-- vector -->\n```\n"+dumpVector(t, file)+"```"))
		writeFile(t, "FORMAT.md", doc)
	}
	file, err := os.ReadFile(vectorFile)
	if err != nil {
		t.Fatalf("%v (run go test -run TestVector -update)", err)
	}
	js, err := os.ReadFile(vectorJSON)
	if err != nil {
		t.Fatal(err)
	}
	var want Manifest
	if err := json.Unmarshal(js, &want); err != nil {
		t.Fatal(err)
	}
	size := int64(len(file))
	rm, err := ReadManifest(bytes.NewReader(file), size)
	if err != nil {
		t.Fatal(err)
	}
	assertSameManifest(t, rm, want)
	dec := Decryption{Passphrase: []byte(vectorPassphrase)}
	plain, om, err := openAll(file, dec)
	if err != nil {
		t.Fatal(err)
	}
	if string(plain) != vectorPlain {
		t.Fatalf("plaintext %q", plain)
	}
	assertSameManifest(t, om, want)
	if _, err := Verify(bytes.NewReader(file), size, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(bytes.NewReader(file), size, &dec); err != nil {
		t.Fatal(err)
	}
	_, _, err = openAll(file, Decryption{Passphrase: []byte("coffer test vectors")})
	wantKind(t, err, ErrWrongKey, "wrong passphrase")
	_, _, err = openAll(file, idDec(testIdentity1))
	wantKind(t, err, ErrWrongKey, "identity")

	// The broken files of FORMAT.md, derived from the vector.
	other, _ := writeBundle(t, func() Manifest { m := vectorManifest(); m.ID = "other"; return m }(), vectorEnc(), []byte("other"))
	for _, tc := range brokenCases(t, file, other) {
		checkAll(t, tc.name, tc.b, dec, tc.want)
	}

	// FORMAT.md shows the same bytes.
	doc, err := os.ReadFile("FORMAT.md")
	if err != nil {
		t.Fatal(err)
	}
	m := vectorBlock.FindSubmatch(doc)
	if m == nil {
		t.Fatal("FORMAT.md: no vector block")
	}
	if string(m[1]) != dumpVector(t, file) {
		t.Fatalf("FORMAT.md vector differs from %s (run go test -run TestVector -update):\n%s", vectorFile, dumpVector(t, file))
	}
	var hexs strings.Builder
	for _, line := range strings.Split(string(m[1]), "\n") {
		if i := strings.Index(line, "#"); i >= 0 {
			line = line[:i]
		}
		hexs.WriteString(strings.Join(strings.Fields(line), ""))
	}
	if hexs.String() != hex.EncodeToString(file) {
		t.Fatal("FORMAT.md vector hex differs from the file")
	}
}

// TestVectorReproducible writes the vector again with the same inputs and
// random source: the bytes must not change. A failure means the writer's
// output changed. If that is intended (or comes from a new age or zstd
// version), check that TestVector still opens the old file, then run
// go test -run TestVector -update.
func TestVectorReproducible(t *testing.T) {
	got, _ := makeVector(t)
	want, err := os.ReadFile(vectorFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("writer output differs from %s:\n%s", vectorFile, dumpVector(t, got))
	}
}

var vectorBlock = regexp.MustCompile("(?s)<!-- vector -->\n```\n(.*?)```")

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// dumpVector annotates a bundle as FORMAT.md shows it.
func dumpVector(t *testing.T, b []byte) string {
	l := layoutOf(t, b)
	var s strings.Builder
	line := func(p []byte, comment string) {
		var h strings.Builder
		for i := 0; i < len(p); i += 4 {
			if i > 0 {
				h.WriteByte(' ')
			}
			h.WriteString(hex.EncodeToString(p[i:min(i+4, len(p))]))
		}
		if comment == "" {
			fmt.Fprintf(&s, "%s\n", h.String())
			return
		}
		fmt.Fprintf(&s, "%-36s # %s\n", h.String(), comment)
	}
	// lines writes p 16 bytes a line, commenting the first line with
	// first and the others with what text(p) returns.
	lines := func(p []byte, first string, text func([]byte) string) {
		for i := 0; i < len(p); i += 16 {
			c := text(p[i:min(i+16, len(p))])
			if i == 0 && first != "" {
				c = first
				if t := text(p[:min(16, len(p))]); t != "" {
					c += " " + t
				}
			}
			line(p[i:min(i+16, len(p))], c)
		}
	}
	quote := func(p []byte) string {
		var q strings.Builder
		for _, c := range p {
			switch {
			case c == '\n':
				q.WriteString(`\n`)
			case c < 0x20 || c >= 0x7f:
				fmt.Fprintf(&q, `\x%02x`, c)
			default:
				q.WriteByte(c)
			}
		}
		return q.String()
	}
	none := func([]byte) string { return "" }

	line(b[:14], `magic "COFFER-BACKUP\n"`)
	line(b[14:15], "format version 1")
	line(b[15:19], "CRC-32C of bytes 0..14")
	// The age header is text, one line per stanza line.
	hdr := b[headLen : headLen+l.hdrLen-16]
	off := headLen
	for len(hdr) > 0 {
		i := bytes.IndexByte(hdr, '\n') + 1
		if i == 0 {
			i = len(hdr)
		}
		lines(hdr[:i], fmt.Sprintf("@%d age header:", off), func(p []byte) string { return quote(p) })
		off += i
		hdr = hdr[i:]
	}
	line(b[off:off+16], fmt.Sprintf("@%d age payload nonce", off))
	off += 16
	lines(b[off:l.trailer], fmt.Sprintf("@%d age STREAM chunk 0 (last): sealed manifest + zstd, %d bytes incl. 16-byte tag", off, l.trailer-off), none)
	line(b[l.trailer:l.trailer+4], fmt.Sprintf("@%d trailer: age header length h = %d", l.trailer, binary.BigEndian.Uint32(b[l.trailer:])))
	lines(b[l.trailer+4:l.json], "SHA-256 of the age header", none)
	lines(b[l.json:l.tail], fmt.Sprintf("@%d manifest JSON", l.json), func(p []byte) string { return quote(p) })
	line(b[l.tail:l.tail+4], fmt.Sprintf("@%d trailer body length L = %d", l.tail, binary.BigEndian.Uint32(b[l.tail:])))
	line(b[l.tail+4:l.tail+5], "format version 1")
	line(b[l.tail+5:l.tail+9], fmt.Sprintf("CRC-32C of bytes %d..%d", l.trailer, l.tail+4))
	lines(b[l.tail+9:], `end magic "COFFER-BACKUP-END\n"`, none)
	return s.String()
}
