package layers

import (
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// markdownLink is an inline link or image: [text](target) with no space in
// the target (titles are not used in this repository's docs).
var markdownLink = regexp.MustCompile(`\]\(([^)\s]+)\)`)

// TestDocLinks: every relative link in README.md and docs/ names a file that
// exists, and an anchor names a heading (or an <a id>) of that file.
func TestDocLinks(t *testing.T) {
	root := filepath.Join("..", "..")
	files := []string{"README.md"}
	err := filepath.WalkDir(filepath.Join(root, "docs"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(p, ".md") {
			rel, err := filepath.Rel(root, p)
			if err != nil {
				return err
			}
			files = append(files, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 20 {
		t.Fatalf("only %d markdown files found", len(files))
	}
	anchorCache := map[string]map[string]bool{}
	anchorsOf := func(file string) map[string]bool {
		if a, ok := anchorCache[file]; ok {
			return a
		}
		b, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(file)))
		if err != nil {
			t.Fatal(err)
		}
		a := markdownAnchors(string(b))
		anchorCache[file] = a
		return a
	}
	links := 0
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(f)))
		if err != nil {
			t.Fatal(err)
		}
		for n, ln := range proseLines(string(b)) {
			for _, m := range markdownLink.FindAllStringSubmatch(ln, -1) {
				target := m[1]
				if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
					continue
				}
				links++
				p, anchor, _ := strings.Cut(target, "#")
				dest := f
				if p != "" {
					dest = path.Clean(path.Join(path.Dir(f), p))
				}
				if strings.HasPrefix(dest, "../") {
					t.Errorf("%s:%d: link %s leaves the repository", f, n+1, target)
					continue
				}
				st, err := os.Stat(filepath.Join(root, filepath.FromSlash(dest)))
				if err != nil {
					t.Errorf("%s:%d: link %s: %s does not exist", f, n+1, target, dest)
					continue
				}
				if anchor == "" || st.IsDir() || !strings.HasSuffix(dest, ".md") {
					continue
				}
				if !anchorsOf(dest)[anchor] {
					t.Errorf("%s:%d: link %s: %s has no heading or anchor %q", f, n+1, target, dest, anchor)
				}
			}
		}
	}
	if links < 100 {
		t.Fatalf("only %d relative links found: the link pattern no longer matches", links)
	}
}

// proseLines are the lines of a markdown file with fenced code blocks
// blanked (links there are code, not links); line numbers are kept.
func proseLines(doc string) []string {
	lines := strings.Split(doc, "\n")
	fenced := false
	for i, ln := range lines {
		if strings.HasPrefix(strings.TrimSpace(ln), "```") {
			fenced = !fenced
			lines[i] = ""
			continue
		}
		if fenced {
			lines[i] = ""
		}
	}
	return lines
}

var explicitAnchor = regexp.MustCompile(`<a (?:id|name)="([^"]+)"`)

// markdownAnchors are the anchors GitHub gives a file's headings (lower
// case, punctuation dropped, spaces as hyphens, -1, -2 for repeats) and its
// explicit <a id="..."> anchors.
func markdownAnchors(doc string) map[string]bool {
	out := map[string]bool{}
	seen := map[string]int{}
	for _, ln := range proseLines(doc) {
		for _, m := range explicitAnchor.FindAllStringSubmatch(ln, -1) {
			out[m[1]] = true
		}
		if !strings.HasPrefix(ln, "#") {
			continue
		}
		title := strings.TrimSpace(strings.TrimLeft(ln, "#"))
		slug := headingSlug(title)
		if k := seen[slug]; k > 0 {
			out[slug+"-"+itoa(k)] = true
		} else {
			out[slug] = true
		}
		seen[slug]++
	}
	return out
}

func headingSlug(title string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(title) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r > 127 && isLetter(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

func isLetter(r rune) bool { return strings.ToLower(string(r)) != strings.ToUpper(string(r)) }

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var d []byte
	for ; n > 0; n /= 10 {
		d = append([]byte{byte('0' + n%10)}, d...)
	}
	return string(d)
}

// TestHeadingSlug: the anchors match GitHub's for the headings the docs use
// (so that the test above can fail).
func TestHeadingSlug(t *testing.T) {
	for in, want := range map[string]string{
		"Journal segments piling up":                   "journal-segments-piling-up",
		"HA: a two-node pair lost one node":            "ha-a-two-node-pair-lost-one-node",
		"state.db or the raft directory was lost":      "statedb-or-the-raft-directory-was-lost",
		"After a restore: held, resumed or taken over": "after-a-restore-held-resumed-or-taken-over",
		"`coffer status`":                              "coffer-status",
	} {
		if got := headingSlug(in); got != want {
			t.Errorf("slug of %q: %q, want %q", in, got, want)
		}
	}
	a := markdownAnchors("# A\n\n## A\n\n```\n# not a heading\n```\n<a id=\"x\"></a>\n")
	if !a["a"] || !a["a-1"] || a["not-a-heading"] || !a["x"] {
		t.Errorf("anchors %v", a)
	}
}
