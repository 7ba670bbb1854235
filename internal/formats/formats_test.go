package formats_test

import (
	"testing"

	"github.com/coffer-kms/coffer/internal/audit"
	"github.com/coffer-kms/coffer/internal/backup"
	"github.com/coffer-kms/coffer/internal/backup/bundle"
	"github.com/coffer-kms/coffer/internal/barrier"
	"github.com/coffer-kms/coffer/internal/formats"
	"github.com/coffer-kms/coffer/internal/journal"
	"github.com/coffer-kms/coffer/internal/keystore"
	"github.com/coffer-kms/coffer/internal/state"
)

// The list agrees with the constants of the packages that own the formats.
func TestFormatsMatchTheirPackages(t *testing.T) {
	owned := map[string]int{
		"keystore":      keystore.FormatVersion,
		"auto-open":     keystore.AutoOpenVersion,
		"barrier":       barrier.ValueVersion,
		"state-schema":  state.SchemaVersion,
		"journal":       int(journal.FormatVersion),
		"audit":         audit.FormatVersion,
		"backup-bundle": bundle.FormatVersion,
		"catalog":       backup.CatalogFormat,
	}
	oldest := map[string]int{"state-schema": state.OldestSchema}
	seen := map[string]bool{}
	for _, f := range formats.Formats() {
		seen[f.Name] = true
		want, ok := owned[f.Name]
		if !ok {
			t.Errorf("format %s has no owning constant in this test", f.Name)
			continue
		}
		if f.Writes != want {
			t.Errorf("format %s: formats says version %d, its package %d", f.Name, f.Writes, want)
		}
		if o, ok := oldest[f.Name]; ok && f.Oldest != o {
			t.Errorf("format %s: oldest read %d, its package %d", f.Name, f.Oldest, o)
		}
		if f.Oldest < 1 || f.Oldest > f.Writes {
			t.Errorf("format %s: oldest read %d, writes %d", f.Name, f.Oldest, f.Writes)
		}
	}
	for name := range owned {
		if !seen[name] {
			t.Errorf("format %s missing from Formats()", name)
		}
	}
}
