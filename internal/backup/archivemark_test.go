package backup

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coffer-kms/coffer/internal/backup/bundle"
	"github.com/coffer-kms/coffer/internal/backup/dest"
	"github.com/coffer-kms/coffer/internal/state"
)

// markHost ships to a real dir destination "nas" but cannot record the
// archive mark (no quorum, a full disk).
type markHost struct {
	loopHost
	dest string
	rcpt string
}

func (h *markHost) ClusterID() string        { return "cl-test" }
func (h *markHost) Software() string         { return "test" }
func (h *markHost) Timeline() state.Timeline { return state.Timeline{ID: 1} }
func (h *markHost) NewID() string            { return "00000001" }
func (h *markHost) OpenTarget(_ context.Context, name string) (*Target, error) {
	d, err := dest.NewDir(h.dest)
	if err != nil {
		return nil, err
	}
	return &Target{Dest: d, Config: state.Destination{Name: name, Kind: "dir", Archiving: true}, Encryption: bundle.Encryption{Recipients: []string{h.rcpt}}}, nil
}
func (h *markHost) Archived(context.Context, string, uint64) error {
	return errors.New("no quorum")
}

// A segment shipped whose archive mark cannot be recorded is an archiving
// error of its destination: "journal archive status" shows it (with the
// destination named in what the loop logs), not a clean last pass.
func TestArchiveMarkNotRecordedIsAnArchiveError(t *testing.T) {
	_, rcpt, err := bundle.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	h := &markHost{loopHost: loopHost{journal: t.TempDir(), records: map[string]state.BackupRecord{}}, dest: filepath.Join(t.TempDir(), "nas"), rcpt: rcpt}
	h.leader.Store(true)
	closedSegments(t, h.journal, 2)
	m := NewManager(h, t.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	err = m.ArchiveOnce(context.Background())
	if err == nil || !strings.Contains(err.Error(), "nas") || !strings.Contains(err.Error(), "no quorum") {
		t.Fatalf("archive pass: %v", err)
	}
	if got := m.ArchiveErrors()["nas"]; !strings.Contains(got, "no quorum") {
		t.Fatalf("archive errors %v", m.ArchiveErrors())
	}
	if got := m.Pending()["nas"]; got != 2 {
		t.Fatalf("pending %d, want 2 (no mark moved)", got)
	}
}
