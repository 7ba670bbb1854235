package journal

import (
	"bytes"
	"encoding/hex"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/vector.recovery")

const vectorName = "coffer-20261121044500.recovery"

// vectorSegment builds the test vector: a closed segment with two clear
// records, written at a fixed time.
func vectorSegment(t *testing.T) []byte {
	dir := t.TempDir()
	j := openT(t, dir, newClock(), nil)
	appendT(t, j, []Record{
		{Index: 1, Time: t0.Add(time.Second), Type: 1, Payload: []byte("hello")},
		{Index: 2, Time: t0.Add(2 * time.Second), Type: 2, Payload: []byte("world!")},
	})
	closed, err := j.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	j.Close()
	if closed.Name != vectorName {
		t.Fatalf("name %s", closed.Name)
	}
	return mustRead(t, closed.Path)
}

func TestVector(t *testing.T) {
	got := vectorSegment(t)
	path := filepath.Join("testdata", "vector.recovery")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run TestVector -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("segment bytes differ from %s:\ngot  %x\nwant %x", path, got, want)
	}

	// The vector verifies (under its segment name).
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, vectorName), want, 0o600)
	rep, err := Verify(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep != (Report{Segments: 1, Records: 2, FirstIndex: 1, LastIndex: 2}) {
		t.Fatalf("report %+v", rep)
	}
	var payloads []string
	Read(dir, nil, func(_ SegmentInfo, r Record) error {
		payloads = append(payloads, string(r.Payload))
		return nil
	})
	if strings.Join(payloads, ",") != "hello,world!" {
		t.Fatalf("payloads %q", payloads)
	}

	// FORMAT.md shows the same bytes.
	doc, err := os.ReadFile("FORMAT.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)<!-- vector -->\n```\n(.*?)```").FindSubmatch(doc)
	if m == nil {
		t.Fatal("FORMAT.md: no vector block")
	}
	var hexs strings.Builder
	for _, line := range strings.Split(string(m[1]), "\n") {
		if i := strings.Index(line, "#"); i >= 0 {
			line = line[:i]
		}
		hexs.WriteString(strings.Join(strings.Fields(line), ""))
	}
	if hexs.String() != hex.EncodeToString(want) {
		t.Fatalf("FORMAT.md vector differs:\n%s\n%x", hexs.String(), want)
	}
}
