package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestREADMEQuickStart runs the README's quick start as written: a dev
// server (the binary `go run ./cmd/coffer dev` builds), then every line of
// the block pasted after its three exports, each of which must succeed, in
// a directory that holds the module's sources as a checkout does (so the
// block's own `go build` runs too, and nothing lands in the source tree).
func TestREADMEQuickStart(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	lines := quickStartLines(t, string(readme))
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	for _, name := range []string{"go.mod", "go.sum", "cmd", "internal", "client"} {
		if err := os.Symlink(filepath.Join(root, name), filepath.Join(work, name)); err != nil {
			t.Fatal(err)
		}
	}
	env, _, logs := startDev(t, filepath.Join(work, "coffer-dev"))
	for _, line := range lines {
		cmd := exec.Command("sh", "-c", line)
		cmd.Dir = work
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("README quick start line %q: %v\n%s\ndev server:\n%s", line, err, out, logs)
		}
		t.Logf("$ %s\n%s", line, out)
	}
}

// quickStartLines are the command lines of the first shell block after the
// quick start says to paste the exports.
func quickStartLines(t *testing.T, readme string) []string {
	t.Helper()
	i := strings.Index(readme, "## Quick start")
	if i < 0 {
		t.Fatal("README has no ## Quick start")
	}
	qs := readme[i:]
	j := strings.Index(qs, "paste the three `export` lines")
	if j < 0 {
		t.Fatal("the quick start no longer says to paste the exports: update this test with it")
	}
	qs = qs[j:]
	start := strings.Index(qs, "```sh\n")
	end := strings.Index(qs[start+6:], "```")
	if start < 0 || end < 0 {
		t.Fatal("no shell block after the exports in the quick start")
	}
	var lines []string
	for _, l := range strings.Split(qs[start+6:start+6+end], "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	if len(lines) < 3 {
		t.Fatalf("quick start block too short: %q", lines)
	}
	return lines
}
