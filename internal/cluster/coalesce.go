package cluster

import (
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/hashicorp/raft"
)

// maxQueued bounds the committed entries waiting for the FSM: past it, raft's
// hand-over blocks (as it would on a slow FSM), so a stuck state write
// pushes back on proposers instead of growing the queue.
const maxQueued = 4096

// coalescer sits between raft and the FSM. Raft hands it each committed
// batch and goes on; one goroutine applies everything handed over since its
// last batch as one FSM batch (for the state: one transaction, one fsync).
// Raft hands over one batch per log write, and while the FSM commits one,
// the next log writes complete: without it each waited for its own commit.
//
// A proposer's response is a *pending that Node.Apply waits for, so a write
// is still acknowledged only once the FSM has applied it. Snapshot and
// Restore first wait until everything handed over is applied (raft labels a
// snapshot with the last index it handed over), and so do the barriers a
// leader uses to know that every committed entry is in the state (drain).
type coalescer struct {
	fsm raft.BatchingFSM

	mu    sync.Mutex
	cond  *sync.Cond // signalled when the queue is taken or stop is set
	queue []*raft.Log
	pend  []*pending
	last  *pending // the last entry handed over (nil: none since start)
	stop  bool
	wake  chan struct{} // capacity 1: work is queued or stop is set
	done  chan struct{} // closed when the goroutine has ended
}

// pending is the FSM's result for one entry, once done is closed.
type pending struct {
	done chan struct{}
	res  any
}

func newCoalescer(fsm raft.BatchingFSM) *coalescer {
	c := &coalescer{fsm: fsm, wake: make(chan struct{}, 1), done: make(chan struct{})}
	c.cond = sync.NewCond(&c.mu)
	go c.run()
	return c
}

// ApplyBatch queues logs and returns a *pending for each.
func (c *coalescer) ApplyBatch(logs []*raft.Log) []any {
	out := make([]any, len(logs))
	c.mu.Lock()
	for len(c.queue) >= maxQueued && !c.stop {
		c.cond.Wait()
	}
	for i, l := range logs {
		p := &pending{done: make(chan struct{})}
		out[i] = p
		c.queue = append(c.queue, l)
		c.pend = append(c.pend, p)
		c.last = p
	}
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return out
}

// Apply is ApplyBatch for one entry (raft uses ApplyBatch).
func (c *coalescer) Apply(l *raft.Log) any { return c.ApplyBatch([]*raft.Log{l})[0] }

// Snapshot snapshots the FSM once everything handed over is applied.
func (c *coalescer) Snapshot() (raft.FSMSnapshot, error) {
	c.drain(context.Background()) // #nosec G104 -- without a deadline drain only returns once drained
	return c.fsm.Snapshot()
}

// Restore restores the FSM once everything handed over is applied.
func (c *coalescer) Restore(rc io.ReadCloser) error {
	c.drain(context.Background()) // #nosec G104 -- without a deadline drain only returns once drained
	return c.fsm.Restore(rc)
}

func (c *coalescer) run() {
	defer close(c.done)
	for {
		<-c.wake
		for {
			c.mu.Lock()
			logs, pend, stop := c.queue, c.pend, c.stop
			c.queue, c.pend = nil, nil
			c.cond.Broadcast()
			c.mu.Unlock()
			if len(logs) == 0 {
				if stop {
					return
				}
				break
			}
			res := c.fsm.ApplyBatch(logs)
			for i, p := range pend {
				if i < len(res) {
					p.res = res[i]
				}
				close(p.done)
			}
		}
	}
}

// drain waits until every entry handed over so far is applied.
func (c *coalescer) drain(ctx context.Context) error {
	c.mu.Lock()
	p := c.last
	c.mu.Unlock()
	if p == nil {
		return nil
	}
	return p.wait(ctx)
}

// close applies what is queued and ends the goroutine (after raft stopped
// handing over entries).
func (c *coalescer) close() {
	c.mu.Lock()
	c.stop = true
	c.cond.Broadcast()
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	<-c.done
}

func (p *pending) wait(ctx context.Context) error {
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: %v", ErrTimeout, ctx.Err())
	}
}

// result resolves a raft response: a *pending is waited for.
func result(ctx context.Context, res any) (any, error) {
	p, ok := res.(*pending)
	if !ok {
		return res, nil
	}
	if err := p.wait(ctx); err != nil {
		return nil, err
	}
	return p.res, nil
}
