package service

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coffer-kms/coffer/internal/cluster"
	"github.com/coffer-kms/coffer/internal/datadir"
	"github.com/coffer-kms/coffer/internal/journal"
)

// journalWithMiddleSegment writes three journal segments (a data key
// rotation in the second) and returns the segments and every record as
// written, by index.
func journalWithMiddleSegment(t *testing.T, s *Service) ([]journal.SegmentInfo, map[uint64]journal.Record) {
	t.Helper()
	ctx := rootCtx()
	put := func(from, to int) {
		for i := from; i < to; i++ {
			if _, err := s.Objects.PutSecret(ctx, "default", fmt.Sprintf("s%d", i), []byte("v")); err != nil {
				t.Fatal(err)
			}
		}
	}
	put(0, 5)
	if _, err := s.RotateJournal(ctx); err != nil {
		t.Fatal(err)
	}
	put(5, 8)
	if _, err := s.RotateDataKey(ctx); err != nil {
		t.Fatal(err)
	}
	put(8, 10)
	if _, err := s.RotateJournal(ctx); err != nil {
		t.Fatal(err)
	}
	put(10, 15)
	recs := map[uint64]journal.Record{}
	if err := journal.Read(datadir.JournalDir(s.cfg.DataDir), s.bar, func(_ journal.SegmentInfo, r journal.Record) error {
		recs[r.Index] = r
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	segs, err := journal.ListSegments(datadir.JournalDir(s.cfg.DataDir))
	if err != nil || len(segs) != 3 {
		t.Fatalf("segments %v: %v", segs, err)
	}
	return segs, recs
}

// TestJournalMiddleSegmentRebuilt: a damaged segment moved aside out of the
// middle of the journal is rebuilt from the raft log at open, record for
// record (index, data key, payload), and the journal verifies.
func TestJournalMiddleSegmentRebuilt(t *testing.T) {
	dir := t.TempDir()
	ctx := rootCtx()
	s := initSvc(t, dir)
	segs, recs := journalWithMiddleSegment(t, s)
	s.Close()
	mid := segs[1]
	if err := os.Rename(mid.Path, filepath.Join(t.TempDir(), mid.Name)); err != nil {
		t.Fatal(err)
	}

	s = newSvc(t, dir)
	defer s.Close()
	if err := s.Open(ctx, []byte(pass)); err != nil {
		t.Fatalf("open with the middle segment moved aside: %v", err)
	}
	if _, err := journal.Verify(datadir.JournalDir(dir), s.bar); err != nil {
		t.Fatalf("journal after the rebuild: %v", err)
	}
	got := map[uint64]journal.Record{}
	journal.Read(datadir.JournalDir(dir), s.bar, func(_ journal.SegmentInfo, r journal.Record) error {
		got[r.Index] = r
		return nil
	})
	for i := mid.FirstIndex; i <= mid.LastIndex; i++ {
		w, g := recs[i], got[i]
		if g.Index != i || g.KeyID != w.KeyID || g.Type != w.Type || !bytes.Equal(g.Payload, w.Payload) {
			t.Fatalf("record %d rebuilt as %+v, was %+v", i, g, w)
		}
	}
	if _, err := s.Objects.PutSecret(ctx, "default", "after", []byte("v")); err != nil {
		t.Fatal(err)
	}
}

// TestJournalMiddleSegmentGone: when the raft log no longer holds the moved
// segment's records, open refuses with an error that names the segments to
// move aside and why: unavailable, not an internal error, and not about the
// passphrase. Following it opens the node.
func TestJournalMiddleSegmentGone(t *testing.T) {
	dir := t.TempDir()
	ctx := rootCtx()
	s := initSvc(t, dir)
	segs, _ := journalWithMiddleSegment(t, s)
	if err := s.node.Snapshot(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	mid := segs[1]
	dropRaftLogThrough(t, dir, mid.LastIndex)
	if err := os.Rename(mid.Path, filepath.Join(t.TempDir(), mid.Name)); err != nil {
		t.Fatal(err)
	}

	s = newSvc(t, dir)
	defer s.Close()
	err := s.Open(ctx, []byte(pass))
	if err == nil {
		t.Fatal("opened with records missing from the journal and the raft log")
	}
	msg := err.Error()
	if !errors.Is(err, ErrUnavailable) || strings.Contains(msg, "passphrase") ||
		!strings.Contains(msg, fmt.Sprintf("records %d-%d are missing", mid.FirstIndex, mid.LastIndex)) ||
		!strings.Contains(msg, "move aside the 1 segment(s) before the gap ("+segs[0].Name+")") {
		t.Fatalf("open: %v", err)
	}
	if s.State() != StateSealed {
		t.Fatalf("state %s", s.State())
	}
	// As the error says: the older segment moved aside, the node opens.
	if err := os.Rename(segs[0].Path, filepath.Join(t.TempDir(), segs[0].Name)); err != nil {
		t.Fatal(err)
	}
	if err := s.Open(ctx, []byte(pass)); err != nil {
		t.Fatalf("open after moving the older segment: %v", err)
	}
	if _, err := journal.Verify(datadir.JournalDir(dir), s.bar); err != nil {
		t.Fatal(err)
	}
}

// dropRaftLogThrough deletes raft log entries up to index through (the
// snapshot covers them), as raft's compaction does.
func dropRaftLogThrough(t *testing.T, dir string, through uint64) {
	t.Helper()
	n, err := cluster.Open(cluster.Config{Dir: datadir.RaftDir(dir), NodeID: "x"})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	snap, _ := n.SnapshotIndex()
	if snap < through {
		t.Fatalf("snapshot at %d does not cover %d", snap, through)
	}
	first, _ := n.FirstIndex()
	if err := n.LogStore().DeleteRange(first, through); err != nil {
		t.Fatal(err)
	}
}
