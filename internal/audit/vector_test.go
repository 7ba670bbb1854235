package audit

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestVector checks the example in FORMAT.md against what Append writes.
func TestVector(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{})
	t0 := time.Date(2026, 11, 21, 4, 45, 0, 0, time.UTC)
	for _, r := range []Record{
		{Time: t0, Node: "n1", Actor: "user:alice", Roles: []string{"admin"}, Source: "192.0.2.10:51234",
			Transport: "rest", Operation: "key.create", Objects: []string{"k-1"}, Result: "ok", Status: 201, LatencyMS: 1.5},
		{Time: t0.Add(time.Second), Actor: "endpoint:db1", Transport: "kmip", Operation: "key.get",
			Objects: []string{"k-1"}, Result: "forbidden", Status: 403, Error: "permission denied", LatencyMS: 0.25},
	} {
		if _, err := l.Append(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	spec := string(mustRead(t, "FORMAT.md"))
	_, vec, ok := strings.Cut(spec, "<!-- vector -->\n```\n")
	if !ok {
		t.Fatal("no vector in FORMAT.md")
	}
	logPart, rest, _ := strings.Cut(vec, "```\n")
	_, headPart, _ := strings.Cut(rest, "```\n")
	headPart, _, _ = strings.Cut(headPart, "```\n")
	if got := string(mustRead(t, filepath.Join(dir, fileName(1)))); got != logPart {
		t.Fatalf("log file\n%s\nFORMAT.md\n%s", got, logPart)
	}
	if got := string(mustRead(t, filepath.Join(dir, HeadFile))); got != headPart || len(got) != headLen {
		t.Fatalf("head\n%q\nFORMAT.md\n%q", got, headPart)
	}
	if _, err := os.Stat(filepath.Join(dir, fileName(2))); err == nil {
		t.Fatal("unexpected second file")
	}
	if _, err := Verify(dir); err != nil {
		t.Fatal(err)
	}
}
