package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// CLIDocsDir is where the generated command reference lives, relative to
// the repository root.
const CLIDocsDir = "docs/reference/cli"

// newGenDocsCmd is the hidden command that writes the command reference:
// one markdown file per command (scripts/gendocs.sh runs it).
func newGenDocsCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "gen-docs DIR",
		Short:  "Write the markdown command reference into DIR (one file per command)",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return GenMarkdownDocs(args[0])
		},
	}
}

// GenMarkdownDocs writes one markdown file per command of the coffer tree
// into dir (created 0755 if missing), without cobra's date lines so that
// the output depends only on the commands. Stale files of commands that no
// longer exist are removed; README.md in dir is left alone.
func GenMarkdownDocs(dir string) error {
	root := NewRootCommand()
	var noDate func(c *cobra.Command)
	noDate = func(c *cobra.Command) {
		c.DisableAutoGenTag = true
		for _, sub := range c.Commands() {
			noDate(sub)
		}
	}
	noDate(root)
	if err := os.MkdirAll(dir, 0o755); err != nil { // #nosec G301 -- documentation, no secret
		return fmt.Errorf("create %s: %w", dir, err)
	}
	old, err := filepath.Glob(filepath.Join(dir, "coffer*.md"))
	if err != nil {
		return err
	}
	for _, f := range old {
		if err := os.Remove(f); err != nil {
			return fmt.Errorf("remove stale %s: %w", f, err)
		}
	}
	if err := doc.GenMarkdownTree(root, dir); err != nil {
		return fmt.Errorf("generate the command reference in %s: %w", dir, err)
	}
	return nil
}

// newGenManCmd is the hidden command that writes one man page per command
// (section 1) into DIR; scripts/deb.sh packages them.
func newGenManCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "gen-man DIR",
		Short:  "Write the man pages into DIR (one page per command, section 1)",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return GenManPages(args[0])
		},
	}
}

// GenManPages writes one man page per command of the coffer tree into dir
// (created 0755 if missing). The date in the pages is the Unix epoch unless
// $SOURCE_DATE_EPOCH is set, so the output depends only on the commands.
func GenManPages(dir string) error {
	root := NewRootCommand()
	var noTag func(c *cobra.Command)
	noTag = func(c *cobra.Command) {
		c.DisableAutoGenTag = true
		for _, sub := range c.Commands() {
			noTag(sub)
		}
	}
	noTag(root)
	if err := os.MkdirAll(dir, 0o755); err != nil { // #nosec G301 -- documentation, no secret
		return fmt.Errorf("create %s: %w", dir, err)
	}
	date := time.Unix(0, 0).UTC()
	if s, err := strconv.ParseInt(os.Getenv("SOURCE_DATE_EPOCH"), 10, 64); err == nil {
		date = time.Unix(s, 0).UTC()
	}
	header := &doc.GenManHeader{Title: "COFFER", Section: "1", Source: "Coffer " + Build().Version, Manual: "Coffer Manual", Date: &date}
	if err := doc.GenManTree(root, header, dir); err != nil {
		return fmt.Errorf("generate the man pages in %s: %w", dir, err)
	}
	return nil
}
