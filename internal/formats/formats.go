// Package formats lists the on-disk formats of a data dir and of a backup
// destination, with the version this build writes and the oldest it reads,
// so that `coffer version` and the upgrade documentation can print them. A
// leaf: it imports only the standard library. Each owning package keeps its
// own constant; formats_test.go checks that the two agree.
package formats

// Versions this build writes (the newest it reads). A build opens every
// version from the format's Oldest up to these (migrating where needed) and
// refuses a newer one with an error naming both versions.
const (
	Keystore    = 1 // keystore/keystore.ks (internal/keystore/FORMAT.md)
	AutoOpen    = 1 // keystore/keystore.aks
	Barrier     = 1 // sealed values in state.db (internal/barrier/FORMAT.md)
	StateSchema = 2 // state.db buckets and records (internal/state/schema.go)
	Journal     = 1 // journal segments (internal/journal/FORMAT.md)
	Audit       = 1 // audit log lines and audit.anchor (internal/audit/FORMAT.md)
	Bundle      = 1 // backup files (internal/backup/bundle/FORMAT.md)
	Catalog     = 2 // a destination's catalog.json (internal/backup/catalog.go)
)

// Format is one on-disk format: its name, the version this build writes,
// and the oldest version it still reads.
type Format struct {
	Name   string `json:"name"`
	Writes int    `json:"writes"`
	Oldest int    `json:"oldest_read"`
	Where  string `json:"where"`
}

// Formats lists every on-disk format, in a fixed order.
func Formats() []Format {
	return []Format{
		{"keystore", Keystore, 1, "keystore/keystore.ks"},
		{"auto-open", AutoOpen, 1, "keystore/keystore.aks"},
		{"barrier", Barrier, 1, "sealed values in state.db"},
		{"state-schema", StateSchema, 2, "state.db"},
		{"journal", Journal, 1, "journal/*.seg and archived segments"},
		{"audit", Audit, 1, "audit/"},
		{"backup-bundle", Bundle, 1, "backup files on a destination"},
		{"catalog", Catalog, 1, "catalog.json on a destination"},
	}
}
