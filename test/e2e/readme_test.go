package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestREADMEQuickStart runs the README's quick start as written: a dev
// server (the binary `go run ./cmd/coffer dev` builds, started as the README
// says), then the block pasted after its three exports, verbatim, in one
// shell as a user pasting it line by line would: every command line must
// succeed, and what one line sets (a variable, a directory) holds for the
// next. It runs in a directory that holds the module's sources as a
// checkout does (so the block's own `go build` runs too, and nothing lands
// in the source tree).
func TestREADMEQuickStart(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "```sh\ngo run ./cmd/coffer dev\n```") {
		t.Fatal("the README no longer starts the dev server with `go run ./cmd/coffer dev` in a block of its own: update this test with it")
	}
	block := quickStartBlock(t, string(readme))
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	for _, name := range []string{"go.mod", "go.sum", "cmd", "internal", "client", "docs"} {
		if err := os.Symlink(filepath.Join(root, name), filepath.Join(work, name)); err != nil {
			t.Fatal(err)
		}
	}
	env, _, logs := startDev(t, filepath.Join(work, "coffer-dev"))
	cmd := exec.Command("sh", "-c", pasteScript(block))
	cmd.Dir = work
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("README quick start: %v\n%s\ndev server:\n%s", err, out, logs)
	}
	t.Logf("%s", out)
	for _, f := range []string{"coffer", "key.bin", "key-copy.bin"} {
		if _, err := os.Stat(filepath.Join(work, f)); err != nil {
			t.Errorf("the quick start did not leave %s: %v", f, err)
		}
	}
}

// pasteScript is the block as one shell script that stops at the first
// command line that fails and names it: each line of the block runs
// verbatim, followed by a check of its exit status.
func pasteScript(block []string) string {
	var b strings.Builder
	for i, l := range block {
		b.WriteString(l + "\n")
		if t := strings.TrimSpace(l); t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		fmt.Fprintf(&b, "rc=$?; if [ $rc -ne 0 ]; then echo %s >&2; exit $rc; fi\n",
			shellQuote(fmt.Sprintf("README quick start: line %d failed with status $rc: %s", i+1, l)))
	}
	return b.String()
}

// shellQuote quotes s for sh in double quotes, keeping $rc expandable.
func shellQuote(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "`", "\\`", "$", `\$`)
	return `"` + strings.ReplaceAll(r.Replace(s), `\$rc`, `$rc`) + `"`
}

// quickStartBlock is the first shell block after the quick start says to
// paste the exports, line by line as written.
func quickStartBlock(t *testing.T, readme string) []string {
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
	if start < 0 {
		t.Fatal("no shell block after the exports in the quick start")
	}
	end := strings.Index(qs[start+6:], "```")
	if end < 0 {
		t.Fatal("the quick start's shell block does not end")
	}
	block := strings.Split(strings.TrimRight(qs[start+6:start+6+end], "\n"), "\n")
	commands := 0
	for _, l := range block {
		if strings.HasSuffix(strings.TrimSpace(l), "\\") {
			t.Fatalf("quick start line %q continues on the next: pasted line by line it cannot be checked line by line", l)
		}
		if t := strings.TrimSpace(l); t != "" && !strings.HasPrefix(t, "#") {
			commands++
		}
	}
	if commands < 3 {
		t.Fatalf("quick start block too short: %q", block)
	}
	return block
}

// TestPasteScriptStopsAtFailure: the script names the first failing line
// and stops there (so the quick start test can fail).
func TestPasteScriptStopsAtFailure(t *testing.T) {
	out, err := exec.Command("sh", "-c", pasteScript([]string{"x=1", "# a comment", "test $x = 1", "false   # \"quoted\" $x `tick`", "echo never"})).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "line 4 failed with status 1: false   # \"quoted\" $x `tick`") || strings.Contains(string(out), "never") {
		t.Fatalf("err %v, output %q", err, out)
	}
}
