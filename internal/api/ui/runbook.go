package ui

import (
	"path"
	"strings"

	"github.com/coffer-kms/coffer/docs/runbooks"
)

// Runbook is what the monitor shows of an alert's runbook: its title, the
// cause and the steps (markdown as written).
type Runbook struct {
	Title string
	Cause string
	Steps string
}

// runbook reads the sections of the runbook at p (docs/runbooks/NAME.md);
// ok is false for an unknown page.
func runbook(p string) (Runbook, bool) {
	if !strings.HasPrefix(p, "docs/runbooks/") {
		return Runbook{}, false
	}
	b, err := runbooks.FS.ReadFile(path.Base(p))
	if err != nil {
		return Runbook{}, false
	}
	var rb Runbook
	var cur *string
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case strings.HasPrefix(line, "# "):
			rb.Title, cur = strings.TrimPrefix(line, "# "), nil
		case strings.HasPrefix(line, "## "):
			switch strings.TrimSpace(strings.TrimPrefix(line, "## ")) {
			case "Cause":
				cur = &rb.Cause
			case "Steps":
				cur = &rb.Steps
			default:
				cur = nil
			}
		case cur != nil:
			*cur += line + "\n"
		}
	}
	rb.Cause, rb.Steps = strings.TrimSpace(rb.Cause), strings.TrimSpace(rb.Steps)
	return rb, true
}
