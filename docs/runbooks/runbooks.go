// Package runbooks embeds the runbooks (one markdown page per incident or
// procedure) so that the web console can show an alert's cause and steps
// from the page its Runbook field names.
package runbooks

import "embed"

// FS holds every runbook page, by file name (disk-full.md, ...).
//
//go:embed *.md
var FS embed.FS
