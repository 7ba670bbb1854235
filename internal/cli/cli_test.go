package cli

import (
	"bytes"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// TestEveryCommandHasHelp walks the tree: every command has a short help,
// its usage shows the full path, and no flag is defined twice on a path.
func TestEveryCommandHasHelp(t *testing.T) {
	root := NewRootCommand()
	var walk func(c *cobra.Command)
	count := 0
	walk = func(c *cobra.Command) {
		count++
		if c.Short == "" {
			t.Errorf("%q has no short help", c.CommandPath())
		}
		var out bytes.Buffer
		c.SetOut(&out)
		if err := c.Help(); err != nil {
			t.Errorf("%s: help: %v", c.CommandPath(), err)
		}
		if c.Runnable() && !strings.Contains(out.String(), c.CommandPath()) {
			t.Errorf("%s: usage does not show the full command path:\n%s", c.CommandPath(), out.String())
		}
		seen := map[string]bool{}
		c.Flags().VisitAll(func(f *pflag.Flag) {
			if seen[f.Name] {
				t.Errorf("%s: flag --%s defined twice", c.CommandPath(), f.Name)
			}
			seen[f.Name] = true
		})
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	if count < 20 {
		t.Fatalf("only %d commands found", count)
	}
}

func TestUnknownStopModeRefused(t *testing.T) {
	var out, errb bytes.Buffer
	code := Main([]string{"stop", "-m", "sideways", "--data-dir", t.TempDir()}, &out, &errb)
	if code == 0 || !strings.Contains(errb.String(), "smart, fast or immediate") {
		t.Fatalf("code %d, stderr %q", code, errb.String())
	}
}

func TestJournalVerifyNeedsDir(t *testing.T) {
	var out, errb bytes.Buffer
	if code := Main([]string{"journal", "verify"}, &out, &errb); code == 0 {
		t.Fatal("verify without a directory succeeded")
	}
}
