package service

import (
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/journal"
	"github.com/coffer-kms/coffer/internal/state"
	"github.com/coffer-kms/coffer/internal/testutil"
)

// heldJournal is a mirror journal whose writes can be held (a hung mount).
type heldJournal struct {
	*journal.Journal
	mu   sync.Mutex
	gate chan struct{}
}

func (h *heldJournal) wait() {
	h.mu.Lock()
	g := h.gate
	h.mu.Unlock()
	if g != nil {
		<-g
	}
}
func (h *heldJournal) Append(recs []journal.Record, c journal.Cipher) error {
	h.wait()
	return h.Journal.Append(recs, c)
}
func (h *heldJournal) Sync() error { h.wait(); return h.Journal.Sync() }

// TestMirrorBehindInStatus: with the mirror's writes held, writes go on,
// coffer status shows the mirror behind (a warning, not an alert: the node
// stays writable), and after the release it catches up and is in sync again.
func TestMirrorBehindInStatus(t *testing.T) {
	s, err := New(testConfig(Config{DataDir: t.TempDir(), BackupTick: time.Hour,
		WriteRetryDelay: 100 * time.Millisecond, MirrorTimeout: 500 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx := rootCtx()
	if _, err := s.Init(ctx, local, []byte(pass)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetRecoveryPassphrase(ctx, nil, []byte("recovery-passphrase")); err != nil {
		t.Fatal(err)
	}
	held := &heldJournal{}
	s.Backups.openMirror = func(o journal.Options) (state.MirrorJournal, error) {
		j, err := journal.Open(o)
		if err != nil {
			return nil, err
		}
		held.Journal = j
		return held, nil
	}
	if _, err := s.Backups.AddDestination(ctx, DestinationConfig{Name: "disk2", Kind: "dir", Path: filepath.Join(t.TempDir(), "d2"), Mirror: true}); err != nil {
		t.Fatal(err)
	}
	mirrorWarning := func(st Status) string {
		for _, w := range st.Warnings {
			if w.Component == "mirror" {
				return w.Message
			}
		}
		return ""
	}
	for i := 0; i < 3; i++ {
		if _, err := s.Objects.PutSecret(ctx, DefaultWallet, fmt.Sprintf("a%d", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	st := s.Status()
	if m := st.Journal.Mirror; m == nil || !m.InSync || m.LastIndex != st.Journal.LastIndex || mirrorWarning(st) != "" {
		t.Fatalf("mirror in sync: %+v, warning %q", m, mirrorWarning(st))
	}

	held.mu.Lock()
	held.gate = make(chan struct{})
	held.mu.Unlock()
	const n = 50
	done := make(chan error, 1)
	go func() {
		for i := 0; i < n; i++ {
			if _, err := s.Objects.PutSecret(ctx, DefaultWallet, fmt.Sprintf("b%d", i), []byte("v")); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("a write with the mirror held: %v", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("writes stalled behind the held mirror")
	}
	st = s.Status()
	m := st.Journal.Mirror
	if m == nil || m.InSync || m.Behind < n || !strings.Contains(mirrorWarning(st), fmt.Sprintf("behind by %d records", m.Behind)) || !st.Writable {
		t.Fatalf("mirror held: %+v, warning %q, writable %v", m, mirrorWarning(st), st.Writable)
	}

	held.mu.Lock()
	close(held.gate)
	held.gate = nil
	held.mu.Unlock()
	testutil.WaitFor(t, 60*time.Second, "the mirror to catch up", func() error {
		st = s.Status()
		if m := st.Journal.Mirror; m != nil && m.InSync && m.LastIndex == st.Journal.LastIndex && mirrorWarning(st) == "" {
			return nil
		}
		return fmt.Errorf("mirror %+v, warning %q", st.Journal.Mirror, mirrorWarning(st))
	})
}
