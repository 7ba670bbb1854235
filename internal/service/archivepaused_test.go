package service

import (
	"path/filepath"
	"strings"
	"testing"
)

// Archive now says which destinations got nothing because their archiving
// is paused, and still succeeds: the others were shipped to.
func TestArchiveNowNamesPausedDestinations(t *testing.T) {
	s, _ := backupSvc(t)
	ctx := rootCtx()
	for _, name := range []string{"on", "off"} {
		if _, err := s.Backups.AddDestination(ctx, DestinationConfig{Name: name, Kind: "dir", Path: filepath.Join(t.TempDir(), name), Archiving: true}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Backups.SetArchivePaused(ctx, "off", true); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Objects.PutSecret(ctx, DefaultWallet, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	note, err := s.Backups.ArchiveNowNote(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(note, "off") || !strings.Contains(note, "paused") || strings.Contains(note, "to on ") {
		t.Fatalf("note %q", note)
	}
	if mustDest(t, s, "on").ArchivedTo == 0 || mustDest(t, s, "off").ArchivedTo != 0 {
		t.Fatal("not shipped to the active destination only")
	}
	if _, err := s.Backups.SetArchivePaused(ctx, "off", false); err != nil {
		t.Fatal(err)
	}
	if note, err := s.Backups.ArchiveNowNote(ctx, nil); err != nil || note != "" {
		t.Fatalf("after resuming: note %q, %v", note, err)
	}
}
