package cluster

import (
	"context"
	"errors"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// gatedFSM records the batches it applies; while gate is set, each
// ApplyBatch announces itself on entered and waits for gate.
type gatedFSM struct {
	mu      sync.Mutex
	batches [][]uint64
	entered chan struct{}
	gate    chan struct{}
	snaps   int
}

func (f *gatedFSM) ApplyBatch(logs []*raft.Log) []any {
	if f.gate != nil {
		f.entered <- struct{}{}
		<-f.gate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var idx []uint64
	out := make([]any, len(logs))
	for i, l := range logs {
		idx = append(idx, l.Index)
		out[i] = l.Index * 10
	}
	f.batches = append(f.batches, idx)
	return out
}

func (f *gatedFSM) Apply(l *raft.Log) any { return f.ApplyBatch([]*raft.Log{l})[0] }
func (f *gatedFSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.snaps++
	return nil, errors.New("no snapshots here")
}
func (f *gatedFSM) Restore(io.ReadCloser) error { return nil }

func (f *gatedFSM) seen() [][]uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.batches)
}

func logsAt(idx ...uint64) []*raft.Log {
	var out []*raft.Log
	for _, i := range idx {
		out = append(out, &raft.Log{Index: i, Type: raft.LogCommand})
	}
	return out
}

// TestCoalescerMergesWaitingBatches: batches handed over while the FSM
// applies one are applied together as the next FSM batch, in order, and
// every entry gets its own result.
func TestCoalescerMergesWaitingBatches(t *testing.T) {
	f := &gatedFSM{entered: make(chan struct{}), gate: make(chan struct{})}
	c := newCoalescer(f)
	ctx := context.Background()
	first := c.ApplyBatch(logsAt(1))
	<-f.entered // the FSM is busy with entry 1
	second := c.ApplyBatch(logsAt(2, 3))
	third := c.ApplyBatch(logsAt(4))
	f.gate <- struct{}{}
	<-f.entered
	f.gate <- struct{}{}
	for _, r := range [][]any{first, second, third} {
		for _, p := range r {
			res, err := result(ctx, p)
			if err != nil {
				t.Fatal(err)
			}
			if res == nil {
				t.Fatal("no result")
			}
		}
	}
	if res, _ := result(ctx, second[1]); res != uint64(30) {
		t.Fatalf("result of entry 3: %v, want 30", res)
	}
	if got, want := f.seen(), [][]uint64{{1}, {2, 3, 4}}; !slices.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("FSM batches %v, want %v", got, want)
	}
	c.close()
}

// TestCoalescerSnapshotWaitsForQueued: a snapshot is taken only once every
// entry handed over before it is applied (raft labels it with the last
// one), and a drain with a deadline gives up with ErrTimeout.
func TestCoalescerSnapshotWaitsForQueued(t *testing.T) {
	f := &gatedFSM{entered: make(chan struct{}), gate: make(chan struct{})}
	c := newCoalescer(f)
	c.ApplyBatch(logsAt(1))
	<-f.entered
	c.ApplyBatch(logsAt(2))
	short, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := c.drain(short); !errors.Is(err, ErrTimeout) {
		t.Fatalf("drain while the FSM is held: %v, want ErrTimeout", err)
	}
	snapped := make(chan struct{})
	go func() {
		_, _ = c.Snapshot() // the fake FSM refuses snapshots; only the order is checked
		close(snapped)
	}()
	f.gate <- struct{}{}
	<-f.entered
	f.gate <- struct{}{}
	<-snapped
	if got := f.seen(); len(got) != 2 || got[1][0] != 2 {
		t.Fatalf("FSM batches when the snapshot was taken: %v, want [1] then [2]", got)
	}
	f.mu.Lock()
	snaps := f.snaps
	f.mu.Unlock()
	if snaps != 1 {
		t.Fatalf("snapshots: %d", snaps)
	}
	c.close()
}

// TestCoalescerCloseAppliesQueued: entries handed over before close are
// applied before close returns.
func TestCoalescerCloseAppliesQueued(t *testing.T) {
	f := &gatedFSM{}
	c := newCoalescer(f)
	r := c.ApplyBatch(logsAt(1, 2))
	c.close()
	for _, p := range r {
		select {
		case <-p.(*pending).done:
		default:
			t.Fatal("an entry handed over before close was not applied")
		}
	}
}
