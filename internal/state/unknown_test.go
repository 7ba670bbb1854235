package state

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/coffer-kms/coffer/internal/journal"
)

// A command type a newer build wrote is not applied as a failure (which
// would leave this node's state without it while the others have it): a
// running store applies nothing from that entry on and reports it until it
// is closed; an offline replay stops with ErrUnknownCommand.
func TestUnknownCommandTypeStopsApplying(t *testing.T) {
	recs := mixedHistory(t, 2, 40)
	newer := func(idx uint64) journal.Record {
		c := Command{Type: 250, Time: time.Unix(1700000000, 0), Body: []byte(`{"from":"a newer build"}`)}
		return journal.Record{Index: idx, Time: c.Time, Type: 250, Payload: c.Marshal()}
	}
	recs = append(recs, newer(uint64(len(recs)+1)))
	dir := t.TempDir()

	t.Run("replay", func(t *testing.T) {
		s, err := Open(filepath.Join(dir, "replay.db"), Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if err := s.Replay(recs[:30], 1); err != nil {
			t.Fatal(err)
		}
		err = s.Replay(recs[30:], 1)
		if !errors.Is(err, ErrUnknownCommand) || !strings.Contains(err.Error(), "entry 41 holds command type 250") {
			t.Fatalf("replay of a newer build's command: %v", err)
		}
		if got := s.AppliedIndex(); got != 30 {
			t.Fatalf("applied index %d after the refused batch, want 30 (nothing of it applied)", got)
		}
	})

	t.Run("running", func(t *testing.T) {
		s, err := Open(filepath.Join(dir, "running.db"), Options{NoSync: true, RetryDelay: 5 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		b, err := PrepareReplay(recs, 1)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan []any, 1)
		go func() { done <- s.ApplyBatch(b.logs) }()
		deadline := time.Now().Add(10 * time.Second)
		for {
			h := s.Health()
			if len(h) == 1 && h[0].Component == "upgrade" && h[0].Attempts >= 2 {
				if !strings.Contains(h[0].Error, "command type 250") {
					t.Fatalf("health: %+v", h[0])
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no upgrade alert while the store waits: %+v", h)
			}
			time.Sleep(5 * time.Millisecond) // polling the store's own retry loop
		}
		select {
		case res := <-done:
			t.Fatalf("ApplyBatch returned while the command is unknown: %v", res[len(res)-1])
		default:
		}
		if got := s.AppliedIndex(); got != 0 {
			t.Fatalf("applied index %d while waiting, want 0", got)
		}
		s.Close()
		res := <-done
		if !errors.Is(asErr(res[len(res)-1]), ErrAbandoned) {
			t.Fatalf("after close: %v", res[len(res)-1])
		}
	})

	t.Run("retired type is a failed command", func(t *testing.T) {
		s, err := Open(filepath.Join(dir, "retired.db"), Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		c := Command{Type: typeRetired, Time: time.Unix(1700000000, 0), Body: []byte(`{}`)}
		res := s.ApplyBatch([]*raft.Log{{Index: 1, Term: 1, Type: raft.LogCommand, Data: c.Marshal()}})
		if !errors.Is(asErr(res[0]), ErrBadCommand) || s.AppliedIndex() != 1 {
			t.Fatalf("retired type 100: %v, applied %d", res[0], s.AppliedIndex())
		}
	})
}
