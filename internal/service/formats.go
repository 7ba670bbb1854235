package service

import (
	"github.com/coffer-kms/coffer/internal/backup/bundle"
	"github.com/coffer-kms/coffer/internal/journal"
	"github.com/coffer-kms/coffer/internal/keystore"
	"github.com/coffer-kms/coffer/internal/state"
)

// FormatVersion is one on-disk format and the versions of it this build
// reads (oldest to newest) and writes.
type FormatVersion struct {
	Name     string `json:"name"`
	ReadsMin int    `json:"reads_min"`
	ReadsMax int    `json:"reads_max"`
	Writes   int    `json:"writes"`
}

// FormatVersions lists the on-disk formats this build reads and writes,
// for "coffer version" and support bundles.
func FormatVersions() []FormatVersion {
	one := func(name string, v int) FormatVersion {
		return FormatVersion{Name: name, ReadsMin: v, ReadsMax: v, Writes: v}
	}
	bundleReads := one("backup bundle", bundle.FormatVersion)
	bundleReads.ReadsMin = 1 // older bundle versions are read (bundle.FormatVersion is the newest)
	return []FormatVersion{
		one("keystore", keystore.FormatVersion),
		one("state schema", state.SchemaVersion),
		one("journal segment", int(journal.FormatVersion)),
		bundleReads,
	}
}
