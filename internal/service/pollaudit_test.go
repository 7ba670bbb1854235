package service

import (
	"context"
	"testing"
	"time"
)

// TestBackupPollsAuditedOnce: polling the running backup writes one audit
// record per caller, not one per poll; another caller, a refused poll and
// other operations are still recorded.
func TestBackupPollsAuditedOnce(t *testing.T) {
	s := initSvc(t, t.TempDir())
	defer s.Close()
	poll := func(source string) {
		t.Helper()
		c := &Call{Identity: LocalRoot(), Transport: "rest", Source: source, Start: time.Now()}
		if _, err := s.Backups.CurrentBackup(WithCall(context.Background(), c)); err != nil {
			t.Fatal(err)
		}
		s.Audit(c, "currentBackup", 200, "ok", "")
	}
	count := func() int {
		t.Helper()
		recs, err := s.AuditRecords(rootCtx(), 1, 1000)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, r := range recs {
			if r.Operation == "currentBackup" {
				n++
			}
		}
		return n
	}
	for range 20 {
		poll("127.0.0.1:4000") // one client, one keep-alive connection
	}
	poll("127.0.0.1:4001") // the same client on a new connection
	if n := count(); n != 1 {
		t.Fatalf("20 polls of the same answer wrote %d audit records, want 1", n)
	}
	poll("10.0.0.2:4000")
	if n := count(); n != 2 {
		t.Fatalf("a poll from another host: %d records, want 2", n)
	}
	refused := &Call{Identity: LocalRoot(), Transport: "rest", Source: "127.0.0.1:4000", Start: time.Now()}
	s.Backups.CurrentBackup(WithCall(context.Background(), refused))
	s.Audit(refused, "currentBackup", 403, "forbidden", "refused")
	if n := count(); n != 3 {
		t.Fatalf("a refused poll: %d records, want 3", n)
	}
}

// TestPollAuditChanges: a poll is quiet only when its caller saw the same
// backup (or none) at its previous poll.
func TestPollAuditChanges(t *testing.T) {
	var p pollAudit
	quiet := func(source, id string) bool {
		c := &Call{Identity: LocalRoot(), Transport: "rest", Source: source}
		p.observe(c, id)
		return c.isQuiet()
	}
	steps := []struct {
		source, id string
		quiet      bool
	}{
		{"10.0.0.1:1", "", false},   // first poll: nothing runs
		{"10.0.0.1:1", "", true},    // the same again
		{"10.0.0.1:1", "b1", false}, // a backup started
		{"10.0.0.1:2", "b1", true},  // same host, new connection
		{"10.0.0.9:1", "b1", false}, // another host
		{"10.0.0.1:1", "b2", false}, // the next backup
		{"10.0.0.1:1", "", false},   // it ended
		{"10.0.0.1:1", "", true},
	}
	for i, st := range steps {
		if got := quiet(st.source, st.id); got != st.quiet {
			t.Fatalf("step %d (%s saw %q): quiet %v, want %v", i, st.source, st.id, got, st.quiet)
		}
	}
	p.observe(nil, "b3") // a call without a caller is ignored
}
