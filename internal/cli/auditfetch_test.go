package cli

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coffer-kms/coffer/internal/audit"
	"github.com/coffer-kms/coffer/internal/backup"
	"github.com/coffer-kms/coffer/internal/backup/bundle"
	"github.com/coffer-kms/coffer/internal/backup/dest"
	"github.com/coffer-kms/coffer/internal/state"
)

// shipSource is the node ShipAudit needs: only its names.
type shipSource struct{}

func (shipSource) ClusterID() string        { return "cl-test" }
func (shipSource) NodeID() string           { return "n-test" }
func (shipSource) Software() string         { return "test" }
func (shipSource) Timeline() state.Timeline { return state.Timeline{ID: 1} }
func (shipSource) WriteState(func(state.BackupPoint, int64) (io.Writer, error)) (state.BackupPoint, error) {
	return state.BackupPoint{}, nil
}
func (shipSource) ExportKeys() ([]byte, error)    { return nil, nil }
func (shipSource) CAFiles() (string, string)      { return "", "" }
func (shipSource) RotateJournal() (uint64, error) { return 0, nil }
func (shipSource) JournalDir() string             { return "" }

// TestAuditFetch: closed audit files shipped to a destination come back as
// the original files, with their chain checked; a missing one is named.
func TestAuditFetch(t *testing.T) {
	logDir := filepath.Join(t.TempDir(), "audit")
	l, err := audit.Open(logDir, audit.Options{MaxFileBytes: 1, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	for range 4 {
		if _, err := l.Append(audit.Record{Actor: "user:alice", Operation: "key.get", Result: "ok"}); err != nil {
			t.Fatal(err)
		}
	}
	closed, err := l.ClosedFiles()
	l.Close()
	if err != nil || len(closed) != 3 {
		t.Fatalf("closed files %v %v", closed, err)
	}
	root := t.TempDir()
	d, err := dest.NewDir(root)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	enc := bundle.Encryption{Passphrase: []byte("recovery words"), ScryptWorkFactor: 10}
	for _, f := range closed {
		if _, err := backup.ShipAudit(ctx, shipSource{}, &backup.Target{Dest: d, Encryption: enc}, t.TempDir(), backup.AuditFile{Name: f.Name, Path: f.Path, FirstSeq: f.FirstSeq, LastSeq: f.LastSeq, LastTime: f.LastTime}); err != nil {
			t.Fatal(err)
		}
	}
	pf := filepath.Join(t.TempDir(), "rp")
	os.WriteFile(pf, []byte("recovery words\n"), 0o600)

	out := filepath.Join(t.TempDir(), "copy")
	code, stdout, stderr := run("audit", "fetch", "--from", root, "--to", out, "--recovery-passphrase-file", pf)
	if code != 0 || !strings.Contains(stdout, "fetched 3 audit files of node n-test") || !strings.Contains(stdout, "seq 1-3, chain intact") {
		t.Fatalf("fetch: %d %s %s", code, stdout, stderr)
	}
	for _, f := range closed {
		want, _ := os.ReadFile(f.Path)
		got, err := os.ReadFile(filepath.Join(out, f.Name))
		if err != nil || string(got) != string(want) {
			t.Fatalf("%s: %v", f.Name, err)
		}
	}

	// A file missing on the destination breaks the chain of the copy.
	os.Remove(filepath.Join(root, filepath.FromSlash(backup.AuditFileName("n-test", 1, closed[1].Name))))
	code, _, stderr = run("audit", "fetch", "--from", root, "--to", filepath.Join(t.TempDir(), "copy2"), "--recovery-passphrase-file", pf)
	if code == 0 || !strings.Contains(stderr, "removed") || !strings.Contains(stderr, closed[1].Name+" is missing") {
		t.Fatalf("fetch with a gap: %d %s", code, stderr)
	}
	code, _, stderr = run("audit", "fetch", "--from", root, "--to", out, "--node", "other", "--recovery-passphrase-file", pf)
	if code == 0 || !strings.Contains(stderr, `no audit files of node "other"`) {
		t.Fatalf("unknown node: %d %s", code, stderr)
	}
}
