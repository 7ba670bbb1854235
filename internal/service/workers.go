package service

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
)

// SealWait bounds how long a seal (and Close) waits for the goroutines the
// open started to end, once they have been told to stop. An open that
// follows waits for them as long again before it starts new ones.
var SealWait = 30 * time.Second

// workers are the goroutines one open of the keystore starts (maintenance,
// the key sync loop, the backup loop, automatic and requested backups, the
// promotion of a node that joined). Their context ends when the keystore is
// sealed; seal then waits for them, without the lifecycle lock (they take
// its read side).
type workers struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	done   chan struct{} // closed once stopped and every goroutine has ended

	mu      sync.Mutex // guards stopped and running
	stopped bool
	running map[string]int // goroutine name -> how many run
}

func newWorkers() *workers {
	ctx, cancel := context.WithCancel(context.Background())
	return &workers{ctx: ctx, cancel: cancel, done: make(chan struct{}), running: map[string]int{}}
}

// Go runs fn(ctx) in a goroutine that seal waits for. After stop it starts
// nothing and returns false.
func (w *workers) Go(name string, fn func(ctx context.Context)) bool {
	if w == nil {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return false
	}
	w.running[name]++
	w.wg.Add(1)
	go func() {
		defer func() {
			w.mu.Lock()
			if w.running[name]--; w.running[name] == 0 {
				delete(w.running, name)
			}
			w.mu.Unlock()
			w.wg.Done()
		}()
		fn(w.ctx)
	}()
	return true
}

// stop ends their context; no new goroutine starts.
func (w *workers) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	w.stopped = true
	w.cancel()
	go func() { w.wg.Wait(); close(w.done) }()
}

// still names the goroutines that are still running.
func (w *workers) still() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for n, c := range w.running {
		if c > 1 {
			n = fmt.Sprintf("%s (%d)", n, c)
		}
		out = append(out, n)
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

// retireWorkersLocked stops the current open's goroutines and leaves them
// for awaitWorkers (lifecycle write-locked).
func (s *core) retireWorkersLocked() {
	w := s.workers
	if w == nil {
		return
	}
	s.workers = nil
	w.stop()
	s.workersMu.Lock()
	s.retired = append(s.retired, w)
	s.workersMu.Unlock()
}

// awaitWorkers waits, at most SealWait, for the goroutines of earlier opens
// to end. Called without the lifecycle lock. It logs and returns an error
// naming those still running (they have been told to stop; the next call
// waits for them again).
func (s *core) awaitWorkers() error {
	s.workersMu.Lock()
	ws := append([]*workers(nil), s.retired...)
	s.workersMu.Unlock()
	if len(ws) == 0 {
		return nil
	}
	t := time.NewTimer(SealWait)
	defer t.Stop()
	var late []string
	expired := false
	for _, w := range ws {
		if !expired {
			select {
			case <-w.done:
				continue
			case <-t.C:
				expired = true
			}
		}
		select {
		case <-w.done:
			continue
		default:
		}
		if n := w.still(); n != "" {
			late = append(late, n)
		}
	}
	s.workersMu.Lock()
	kept := s.retired[:0]
	for _, w := range s.retired {
		select {
		case <-w.done:
		default:
			kept = append(kept, w)
		}
	}
	s.retired = kept
	s.workersMu.Unlock()
	if len(late) > 0 {
		err := fmt.Errorf("background tasks of the last open did not end within %s after the seal: %s", SealWait, strings.Join(late, "; "))
		s.log.Error("sealed, but background tasks are still running", "error", err)
		return err
	}
	return nil
}
