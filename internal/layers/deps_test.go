package layers

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// directRequires returns the modules go.mod requires directly (the lines
// of its require directives without "// indirect").
func directRequires(gomod string) []string {
	var out []string
	inBlock := false
	for _, ln := range strings.Split(gomod, "\n") {
		ln = strings.TrimSpace(ln)
		switch {
		case strings.HasPrefix(ln, "require ("):
			inBlock = true
			continue
		case inBlock && ln == ")":
			inBlock = false
			continue
		case strings.HasPrefix(ln, "require "):
			ln = strings.TrimPrefix(ln, "require ")
		case !inBlock:
			continue
		}
		if ln == "" || strings.HasPrefix(ln, "//") || strings.Contains(ln, "// indirect") {
			continue
		}
		out = append(out, strings.Fields(ln)[0])
	}
	return out
}

// documented returns the modules of docs/dependencies.md's table with their
// purpose column.
func documented(doc string) map[string]string {
	row := regexp.MustCompile("^\\| `([^`]+)` \\|([^|]*)\\|([^|]*)\\|\\s*$")
	out := map[string]string{}
	for _, ln := range strings.Split(doc, "\n") {
		if m := row.FindStringSubmatch(ln); m != nil {
			out[m[1]] = strings.TrimSpace(m[3])
		}
	}
	return out
}

// TestDependenciesDocumented: every direct dependency in go.mod is listed in
// docs/dependencies.md with its purpose, and the list names nothing else.
func TestDependenciesDocumented(t *testing.T) {
	gomod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("../../docs/dependencies.md")
	if err != nil {
		t.Fatal(err)
	}
	req := directRequires(string(gomod))
	if len(req) == 0 {
		t.Fatal("no direct requirement found in go.mod: the parser no longer matches its format")
	}
	listed := documented(string(doc))
	for _, m := range req {
		purpose, ok := listed[m]
		switch {
		case !ok:
			t.Errorf("go.mod requires %s directly, but docs/dependencies.md does not list it: add a row with its purpose", m)
		case len(purpose) < 10:
			t.Errorf("docs/dependencies.md lists %s without a purpose", m)
		}
	}
	for m := range listed {
		if !slices.Contains(req, m) {
			t.Errorf("docs/dependencies.md lists %s, which go.mod does not require directly: remove the row", m)
		}
	}
}

// TestDirectRequiresParser: the parser sees single-line and block
// requirements and skips indirect ones (so the test above can fail).
func TestDirectRequiresParser(t *testing.T) {
	got := directRequires("module m\n\ngo 1.26\n\nrequire example.com/one v1.0.0\n\nrequire (\n\texample.com/two v1.2.0\n\texample.com/three v0.1.0 // indirect\n)\n")
	if !slices.Equal(got, []string{"example.com/one", "example.com/two"}) {
		t.Fatalf("direct requires %v", got)
	}
	doc := documented("| module | used by | purpose |\n|---|---|---|\n| `example.com/one` | cli | does one thing |\n")
	if doc["example.com/one"] != "does one thing" || len(doc) != 1 {
		t.Fatalf("documented %v", doc)
	}
}
