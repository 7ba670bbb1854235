package state

import (
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// A timeline record that does not decode must stop the open: read as the
// zero value it would pass for timeline 1 and let the node write into a
// history it does not belong to.
func TestOpenRefusesDamagedTimeline(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Rebase(3, Timeline{ID: 2}, 7, []byte("conf")); err != nil {
		t.Fatal(err)
	}
	if got := s.Timeline().ID; got != 2 {
		t.Fatalf("timeline %d, want 2", got)
	}
	if ci, cd, ok := s.RaftConfiguration(); !ok || ci != 7 || string(cd) != "conf" {
		t.Fatalf("raft configuration after Rebase: %d %q %v, want 7 \"conf\"", ci, cd, ok)
	}
	if err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keyTimeline, []byte(`{"id":2,`))
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(path, Options{})
	if err == nil {
		s.Close()
		t.Fatalf("open with a damaged timeline record succeeded (timeline reads as %d)", s.Timeline().ID)
	}
	if !strings.Contains(err.Error(), "timeline") || !strings.Contains(err.Error(), path) {
		t.Fatalf("error %q does not name the timeline record and the file", err)
	}
}
