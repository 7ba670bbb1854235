package compat

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/formats"
	"github.com/coffer-kms/coffer/internal/service"
)

const readme = `# Compat data written by Coffer %s

Written by scripts/gencompat.sh (TestGenerateCompat in test/compat) on %s.
TEST DATA ONLY: every passphrase, key and token in it is public.

- data.tar.gz: a standalone data dir. Keystore passphrase: %q.
- nas.tar.gz: its dir destination "nas" (a full, an incremental on it and
  archived journal segments). Recovery passphrase: %q.
- expected.json: the objects (secret values, key lengths), wallets,
  endpoint, applied index and state digest TestCompat checks, and the
  format versions this release wrote.

Never regenerate a released version's directory: a new release adds its
own (docs/operations/upgrades.md).
`

// TestGenerateCompat writes testdata/compat/<version> (run by
// scripts/gencompat.sh with -compat.write VERSION); skipped otherwise.
func TestGenerateCompat(t *testing.T) {
	if *writeVersion == "" {
		t.Skip("run with -compat.write VERSION (scripts/gencompat.sh)")
	}
	out := filepath.Join("..", "..", "testdata", "compat", *writeVersion)
	if _, err := os.Stat(out); err == nil {
		t.Fatalf("%s exists: a released version's data is never regenerated (remove it by hand for an unreleased one)", out)
	}
	work := t.TempDir()
	data, nas := filepath.Join(work, "data"), filepath.Join(work, "nas")
	s := newService(t, data)
	defer s.Close()
	ctx := ctxRoot()
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Init(ctx, service.Identity{Name: "compat", Local: true}, []byte(keystorePass)); err != nil {
		t.Fatal(err)
	}
	must(s.SetRecoveryPassphrase(ctx, nil, []byte(recoveryPass)))
	must(s.Backups.AddDestination(ctx, service.DestinationConfig{Name: "nas", Kind: "dir", Path: nas, Archiving: true}))
	want := Expected{Version: *writeVersion, Written: time.Now().UTC().Truncate(time.Second), Formats: map[string]int{},
		Secrets: map[string]string{}, Keys: map[string]int{}}
	for _, f := range formats.Formats() {
		want.Formats[f.Name] = f.Writes
	}
	put := func(wallet, name, value string) {
		t.Helper()
		o, err := s.Objects.PutSecret(ctx, wallet, name, []byte(value))
		if err != nil {
			t.Fatal(err)
		}
		want.Secrets[fmt.Sprintf("%s/%s@%d", wallet, name, o.Latest)] = value
	}
	must(s.Access.CreateWallet(ctx, "payments", "compat wallet"))
	want.Wallets = []string{service.DefaultWallet, "payments"}
	put(service.DefaultWallet, "db-password", "compat-value-1")
	must(s.Objects.CreateObject(ctx, service.CreateObject{Wallet: "payments", Name: "tde-key", Type: service.TypeSymmetricKey, Algorithm: "AES", Length: 256}))
	want.Keys["payments/tde-key"] = 256
	must(s.Access.EnrollEndpoint(ctx, "db1", "compat endpoint", nil))
	want.Endpoints = []string{"db1"}
	must(s.Access.SetGrant(ctx, "payments", "db1", service.PermRead))
	must(s.Backups.RunBackup(ctx, service.BackupRequest{Destination: "nas", Mode: "full", Wait: true}))
	put(service.DefaultWallet, "db-password", "compat-value-2") // version 2
	put("payments", "api-token", "compat-value-3")
	must(s.Backups.RunBackup(ctx, service.BackupRequest{Destination: "nas", Mode: "incremental", Wait: true}))
	put(service.DefaultWallet, "archived", "compat-value-4")
	if err := s.Backups.ArchiveNow(ctx); err != nil {
		t.Fatal(err)
	}
	put("payments", "archived-2", "compat-value-5")
	idx, digest, _, err := s.Backups.Digest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want.Index, want.Digest, want.BackupIndex = idx, digest, idx
	if err := s.Backups.ArchiveNow(ctx); err != nil {
		t.Fatal(err)
	}
	// A drill puts a result into the catalog (catalog format 2).
	if res, err := s.Backups.Drill(ctx, "nas"); err != nil || !res.OK() {
		t.Fatalf("drill: %+v %v", res, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(nas, "*", "*"))
	for _, f := range files {
		if !strings.HasSuffix(f, ".json") {
			want.Backups++
		}
	}
	if err := os.MkdirAll(out, 0o755); err != nil { // #nosec G301 -- committed test data
		t.Fatal(err)
	}
	writeTar(t, data, filepath.Join(out, "data.tar.gz"))
	writeTar(t, nas, filepath.Join(out, "nas.tar.gz"))
	b, _ := json.MarshalIndent(want, "", "  ")
	if err := os.WriteFile(filepath.Join(out, "expected.json"), append(b, '\n'), 0o644); err != nil { // #nosec G306 -- committed test data
		t.Fatal(err)
	}
	r := fmt.Sprintf(readme, *writeVersion, want.Written.Format(time.RFC3339), keystorePass, recoveryPass)
	if err := os.WriteFile(filepath.Join(out, "README.md"), []byte(r), 0o644); err != nil { // #nosec G306 -- committed test data
		t.Fatal(err)
	}
}
