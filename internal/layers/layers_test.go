// Package layers holds the import rules of the house (docs/architecture.md):
// data flows down, transports → service → cluster → state/journal →
// keystore, with backup beside them; nothing imports upward, and the
// public client links no server code. The test fails on any import between
// the module's packages that the table below does not allow, so a new
// dependency is a decision written down here (and in docs/architecture.md),
// never an accident.
package layers

import (
	"encoding/json"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"testing"
)

const module = "github.com/coffer-kms/coffer/"

// allowed lists, for every package of the module, the module packages it
// may import. Leaves (fsutil, datadir, formats, jsonwire, config, lifecycle, bundle, openapi, procsec)
// import none.
var allowed = map[string][]string{
	"cmd/coffer": {"internal/cli"},
	"client":     {},

	// The CLI and the server wiring sit on top.
	"internal/cli": {"client", "internal/audit", "internal/backup", "internal/backup/bundle", "internal/backup/dest",
		"internal/check", "internal/config", "internal/datadir", "internal/formats", "internal/fsutil", "internal/journal", "internal/keystore",
		"internal/restore", "internal/server", "internal/service", "internal/tlsutil"},
	"internal/server": {"internal/api/forward", "internal/api/kmip", "internal/api/peer", "internal/api/rest", "internal/api/ui", "internal/api/vault",
		"internal/audit", "internal/config", "internal/connlimit", "internal/datadir", "internal/fsutil", "internal/keystore", "internal/metrics",
		"internal/procsec", "internal/service", "internal/tlsutil"},

	// Transports: decode, authorise through the service, encode.
	"internal/api/rest":    {"internal/api/forward", "internal/api/openapi", "internal/jsonwire", "internal/service"},
	"internal/api/vault":   {"internal/api/forward", "internal/jsonwire", "internal/service"},
	"internal/api/ui":      {"docs/runbooks", "internal/service"},
	"internal/api/kmip":    {"internal/api/forward", "internal/service", "internal/tlsutil"},
	"internal/api/forward": {"internal/tlsutil"},
	"internal/api/peer":    {"internal/api/forward", "internal/service"},
	"internal/api/openapi": {},
	"internal/metrics":     {"internal/connlimit", "internal/service"},

	// The domain.
	"internal/service": {"internal/audit", "internal/backup", "internal/backup/bundle", "internal/backup/dest",
		"internal/barrier", "internal/cluster", "internal/datadir", "internal/fsutil", "internal/journal", "internal/keystore",
		"internal/lifecycle", "internal/restore", "internal/state", "internal/tlsutil"},

	// Offline tools on a data dir, beside the service.
	"internal/restore": {"internal/backup", "internal/backup/bundle", "internal/backup/dest", "internal/barrier",
		"internal/cluster", "internal/datadir", "internal/fsutil", "internal/journal", "internal/keystore", "internal/state", "internal/tlsutil"},
	"internal/check": {"internal/barrier", "internal/cluster", "internal/journal", "internal/keystore", "internal/state"},

	// Backups beside the command path.
	"internal/backup":        {"internal/backup/bundle", "internal/backup/dest", "internal/fsutil", "internal/journal", "internal/state"},
	"internal/backup/dest":   {"internal/fsutil"},
	"internal/backup/bundle": {},

	// Raft, the state machine, the journal, the keystore.
	"internal/cluster":  {"internal/fsutil", "internal/tlsutil"},
	"internal/state":    {"internal/barrier", "internal/fsutil", "internal/journal", "internal/jsonwire", "internal/keystore", "internal/lifecycle"},
	"internal/journal":  {"internal/fsutil"},
	"internal/barrier":  {"internal/keystore"},
	"internal/keystore": {"internal/fsutil"},
	"internal/audit":    {"internal/fsutil"},
	"internal/tlsutil":  {"internal/fsutil"},

	// Test helpers, imported by _test.go files only: no package above
	// lists them, so a non-test import of one fails here.
	"internal/testutil":            {},
	"internal/service/servicetest": {"internal/keystore", "internal/service", "internal/tlsutil"},

	// Leaves.
	"docs/runbooks":      {}, // the runbook pages, embedded for the console
	"internal/fsutil":    {},
	"internal/datadir":   {},
	"internal/formats":   {},
	"internal/jsonwire":  {},
	"internal/config":    {},
	"internal/lifecycle": {},
	"internal/procsec":   {},
	"internal/connlimit": {},
}

// knownViolations are edges the table allows today that the layering does
// not want; each says what removes it. The test also fails when one of them
// is gone, so the list only shrinks.
var knownViolations = map[string]string{}

type pkg struct {
	ImportPath string
	Imports    []string
}

func TestImportRules(t *testing.T) {
	out, err := exec.Command("go", "list", "-json", "github.com/coffer-kms/coffer/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	seen := map[string]bool{}
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		name := strings.TrimPrefix(p.ImportPath, module)
		if strings.HasPrefix(name, "internal/testserver") || strings.HasPrefix(name, "test/") ||
			name == "internal/layers" || strings.Contains(name, "/internal/") {
			continue // test helpers, test suites and this test
		}
		allow, ok := allowed[name]
		if !ok {
			t.Errorf("package %s is not in the import table: add it to internal/layers (and docs/architecture.md) with the packages it may import", name)
			continue
		}
		for _, imp := range p.Imports {
			if !strings.HasPrefix(imp, module) {
				continue
			}
			dep := strings.TrimPrefix(imp, module)
			edge := name + " -> " + dep
			seen[edge] = true
			if !slices.Contains(allow, dep) {
				t.Errorf("%s imports %s, which the layering does not allow (internal/layers/layers_test.go)", name, dep)
			}
		}
	}
	var gone []string
	for edge := range knownViolations {
		if !seen[edge] {
			gone = append(gone, edge)
		}
	}
	sort.Strings(gone)
	for _, edge := range gone {
		t.Errorf("%s is gone: remove it from knownViolations and from the allowed table", edge)
	}
}
