package state

import (
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/coffer-kms/coffer/internal/journal"
	"github.com/coffer-kms/coffer/internal/testutil"
)

// heldMirror is a mirror journal whose writes can be held, as on a hung NFS
// mount: while held, Append and Sync block until released.
type heldMirror struct {
	*journal.Journal
	mu      sync.Mutex
	gate    chan struct{} // non-nil while held
	blocked atomic.Int32  // calls waiting at the gate
}

func (h *heldMirror) wait() {
	h.mu.Lock()
	g := h.gate
	h.mu.Unlock()
	if g != nil {
		h.blocked.Add(1)
		<-g
		h.blocked.Add(-1)
	}
}

func (h *heldMirror) hold() { h.mu.Lock(); h.gate = make(chan struct{}); h.mu.Unlock() }
func (h *heldMirror) release() {
	h.mu.Lock()
	close(h.gate)
	h.gate = nil
	h.mu.Unlock()
}
func (h *heldMirror) Append(recs []journal.Record, c journal.Cipher) error {
	h.wait()
	return h.Journal.Append(recs, c)
}
func (h *heldMirror) Sync() error { h.wait(); return h.Journal.Sync() }

// pollUntil polls cond until it holds or a generous deadline passes.
func pollUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.WaitFor(t, 60*time.Second, what, func() error {
		if !cond() {
			return testutil.ErrNotYet
		}
		return nil
	})
}

// TestMirrorHeldDoesNotStallWrites: a mirror whose writes hang (a hung NFS
// mount) holds up at most the write that first meets it, for at most the
// mirror timeout; the writes after it go on while the mirror is held, the
// mirror shows as behind, and once the writes are released it catches up
// in the background (from memory, or from the journal files when it fell
// too far behind) and writes wait for it again.
func TestMirrorHeldDoesNotStallWrites(t *testing.T) {
	for _, tc := range []struct {
		name  string
		queue int64
	}{{"from memory", 0}, {"from the journal files", 4 << 10}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := Open(filepath.Join(dir, "state.db"), Options{NoSync: true, MirrorTimeout: 3 * time.Second, MirrorQueueBytes: tc.queue})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			pdir, mdir := filepath.Join(dir, "journal"), filepath.Join(dir, "mirror")
			pj, err := journal.Open(journal.Options{Dir: pdir, Name: "t", MaxSegmentBytes: 64 << 10})
			if err != nil {
				t.Fatal(err)
			}
			defer pj.Close()
			s.Attach(pj, nil, nil)
			mj, err := journal.Open(journal.Options{Dir: mdir, Name: "t", MaxSegmentBytes: 64 << 10})
			if err != nil {
				t.Fatal(err)
			}
			m := &heldMirror{Journal: mj}
			if err := s.AttachMirror(m, pdir); err != nil {
				t.Fatal(err)
			}
			idx := uint64(0)
			write := func() {
				idx++
				var r []any
				if idx == 1 {
					r = s.ApplyBatch([]*raft.Log{cmdLog(t, idx, TypeWalletCreate, Wallet{Name: "w"})})
				} else {
					r = s.ApplyBatch([]*raft.Log{put(t, idx, fmt.Sprintf("k%d", idx), 1)})
				}
				if err, ok := r[0].(error); ok {
					t.Errorf("apply %d: %v", idx, err)
				}
			}
			for i := 0; i < 10; i++ {
				write()
				// In sync: the write returns once the mirror has it.
				if got := s.Mirror(); !got.InSync || got.LastIndex != idx {
					t.Fatalf("after write %d with the mirror in sync: %+v", idx, got)
				}
			}

			m.hold()
			const n = 1000
			done := make(chan struct{})
			go func() {
				defer close(done)
				for i := 0; i < n; i++ {
					write()
				}
			}()
			pollUntil(t, "the writes while the mirror is held", func() bool {
				select {
				case <-done:
					return true
				default:
					return false
				}
			})
			h := s.MirrorHealth()
			if h == nil || !strings.Contains(h.Error, "took longer than 3s") {
				t.Fatalf("mirror health while held: %+v", h)
			}
			// Only the first write waited for the held mirror; each wait
			// that timed out would have counted as an attempt.
			if h.Attempts != 1 {
				t.Fatalf("%d writes waited for the held mirror, want 1", h.Attempts)
			}
			if got := s.Mirror(); got.InSync || got.LastIndex != 10 || got.Behind != n {
				t.Fatalf("mirror state while held: %+v, want behind by %d from 10", got, n)
			}
			if m.blocked.Load() != 1 {
				t.Fatalf("%d mirror writes waiting at the gate, want 1", m.blocked.Load())
			}
			// Pruning keeps what the mirror still lacks.
			if _, err := pj.Rotate(); err != nil {
				t.Fatal(err)
			}
			removed, floor, err := s.PruneJournal(idx+1, 0, 0, false)
			if err != nil || floor != 11 {
				t.Fatalf("prune with the mirror behind: floor %d, %v", floor, err)
			}
			for _, sg := range removed {
				if sg.LastIndex > 10 {
					t.Fatalf("pruned %s (to %d) that the mirror lacks", sg.Name, sg.LastIndex)
				}
			}

			m.release()
			pollUntil(t, "the mirror to catch up", func() bool {
				got := s.Mirror()
				return got.InSync && got.LastIndex == idx && s.MirrorHealth() == nil
			})
			for i := 0; i < 5; i++ {
				write()
				if got := s.Mirror(); !got.InSync || got.LastIndex != idx {
					t.Fatalf("after write %d with the mirror in sync again: %+v", idx, got)
				}
			}
			if ok, err := s.DetachMirror(30 * time.Second); !ok || err != nil {
				t.Fatalf("detach: %v %v", ok, err)
			}
			var want, got []uint64
			journal.Read(pdir, nil, func(_ journal.SegmentInfo, r journal.Record) error { want = append(want, r.Index); return nil })
			if err := journal.Read(mdir, nil, func(_ journal.SegmentInfo, r journal.Record) error { got = append(got, r.Index); return nil }); err != nil {
				t.Fatalf("read the mirror: %v", err)
			}
			if len(got) != int(idx) || got[0] != 1 || got[len(got)-1] != idx {
				t.Fatalf("the mirror holds %d records (%v...), want 1-%d", len(got), got[:min(len(got), 3)], idx)
			}
			for i := range got {
				if got[i] != uint64(i+1) {
					t.Fatalf("mirror record %d has index %d", i, got[i])
				}
			}
			if want[len(want)-1] != idx {
				t.Fatalf("primary ends at %d", want[len(want)-1])
			}
		})
	}
}
