package restore_test

import (
	"strings"
	"testing"

	"github.com/coffer-kms/coffer/internal/datadir"
	"github.com/coffer-kms/coffer/internal/journal"
	"github.com/coffer-kms/coffer/internal/service"
)

// TestJournalPruneKeepsWhatBackupsNeed: pruning removes only what every
// destination has: incrementals still find every record after their full,
// a paused archive holds the floor, the pruned journal reopens, and
// restores to the latest point and to a point before the pruned range come
// back exact (from the destination, which kept everything).
func TestJournalPruneKeepsWhatBackupsNeed(t *testing.T) {
	keepOne := func(c *service.Config) { c.JournalKeepSegments = 1; c.JournalNoPrune = true }
	e := newEnv(t, true, keepOne)
	jdir := datadir.JournalDir(e.dir)
	segments := func() []journal.SegmentInfo {
		t.Helper()
		segs, err := journal.ListSegments(jdir)
		if err != nil {
			t.Fatal(err)
		}
		return segs
	}
	prune := func(dry bool) service.JournalPrune {
		t.Helper()
		p, err := e.s.Backups.PruneJournal(e.ctx, dry)
		if err != nil {
			t.Fatalf("prune: %v", err)
		}
		return p
	}
	// Nothing backed up or archived yet: archiving holds everything.
	e.put("a", "a1")
	e.s.RotateJournal(e.ctx)
	e.put("a", "a2")
	e.s.RotateJournal(e.ctx)
	if p := prune(false); len(p.Removed) != 0 || !strings.Contains(p.Holder, "archiving to nas (archived to index 0)") {
		t.Fatalf("prune before anything was archived: %+v", p)
	}
	e.backup("full")
	var fullIdx uint64
	recs, err := e.s.Backups.ListBackups(e.ctx, "nas")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.Kind == "full" && r.Status == "DONE" {
			fullIdx = max(fullIdx, r.LastIndex)
		}
	}
	for i := 0; i < 4; i++ {
		e.put("b", string(rune('0'+i)))
		e.archive()
	}
	midIdx, midDigest := e.digest()
	// The full holds the floor now; a dry run changes nothing.
	before := len(segments())
	p := prune(true)
	if p.Floor != fullIdx+1 || !strings.Contains(p.Holder, "after full") || len(p.Removed) == 0 {
		t.Fatalf("dry run: %+v (full at %d)", p, fullIdx)
	}
	if len(segments()) != before {
		t.Fatal("a dry run removed segments")
	}
	p = prune(false)
	for _, s := range p.Removed {
		if s.LastIndex > fullIdx {
			t.Fatalf("pruned %s (to %d), which holds records after the full at %d", s.Name, s.LastIndex, fullIdx)
		}
	}
	if first := segments()[0]; first.Prev > fullIdx {
		t.Fatalf("the journal now starts after %d, past the full at %d", first.Prev, fullIdx)
	}
	// The incremental still has every record since the full.
	e.backup("incremental")

	// A paused archive holds the floor even after a newer full.
	dv, err := e.s.Backups.SetArchivePaused(e.ctx, "nas", true)
	if err != nil {
		t.Fatal(err)
	}
	e.put("c", "c1")
	e.s.RotateJournal(e.ctx)
	e.put("c", "c2")
	e.s.RotateJournal(e.ctx)
	e.backup("full")
	p = prune(false)
	if !strings.Contains(p.Holder, "paused") {
		t.Fatalf("holder while paused: %+v", p)
	}
	dv, err = e.s.Backups.SetArchivePaused(e.ctx, "nas", true) // still paused; returns the view
	if err != nil {
		t.Fatal(err)
	}
	if first := segments()[0]; first.Prev > dv.ArchivedTo {
		t.Fatalf("pruned unshipped records: journal starts after %d, archived to %d", first.Prev, dv.ArchivedTo)
	}
	if _, err := e.s.Backups.SetArchivePaused(e.ctx, "nas", false); err != nil {
		t.Fatal(err)
	}
	e.archive()
	p = prune(false)
	if len(p.Removed) == 0 {
		t.Fatalf("nothing pruned once shipped and covered by a full: %+v", p)
	}
	if closed := len(segments()) - 1; closed < 1 {
		t.Fatalf("%d closed segments left, keep_segments is 1", closed)
	}
	e.put("d", "d1")
	e.archive()
	idx, want := e.digest()
	e.archive()

	// The pruned journal verifies and reopens.
	if _, err := journal.Verify(jdir, nil); err != nil {
		t.Fatalf("pruned journal: %v", err)
	}
	e.s.Close()
	s := newService(t, e.dir, keepOne)
	t.Cleanup(func() { s.Close() })
	if err := s.Open(e.ctx, []byte(ksPass)); err != nil {
		t.Fatalf("reopen after pruning: %v", err)
	}
	if _, err := s.Objects.PutSecret(e.ctx, service.DefaultWallet, "after", []byte("x")); err != nil {
		t.Fatal(err)
	}
	s.Close()

	// The destination kept everything: exact restores, also into the
	// range this node no longer has.
	sum, _, err := e.restoreTo(Target{})
	if err != nil || sum.Index != idx || sum.Digest != want {
		t.Fatalf("restore latest: %+v %v (want %d %s)", sum, err, idx, want)
	}
	sum, _, err = e.restoreTo(Target{Index: midIdx})
	if err != nil || sum.Index != midIdx || sum.Digest != midDigest {
		t.Fatalf("restore to %d: %+v %v (want %s)", midIdx, sum, err, midDigest)
	}
}
