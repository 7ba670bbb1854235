package linearize

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// do records one operation that runs alone: Begin and End back to back.
func do(r *Recorder, client int, op Op, out Output) {
	r.End(r.Begin(client, op), out)
}

func mustPass(t *testing.T, r *Recorder) {
	t.Helper()
	ok, info, err := r.Check(10 * time.Second)
	if err != nil || !ok {
		t.Fatalf("Check() = %v, %v, want linearizable:\n%s", ok, err, info)
	}
	t.Log(info)
}

func mustFail(t *testing.T, r *Recorder) string {
	t.Helper()
	ok, info, err := r.Check(10 * time.Second)
	if err != nil || ok {
		t.Fatalf("Check() = %v, %v, want a violation:\n%s", ok, err, info)
	}
	t.Log(info)
	return info
}

func TestSequential(t *testing.T) {
	r := NewRecorder()
	do(r, 0, Get("x"), NotFound())
	do(r, 0, Put("x", "1"), Ack())
	do(r, 1, Get("x"), Value("1"))
	do(r, 1, Put("x", "2"), Ack())
	do(r, 0, Get("x"), Value("2"))
	do(r, 0, Put("y", "a"), Ack())
	do(r, 2, Delete("x"), Ack())
	do(r, 1, Get("x"), NotFound())
	do(r, 2, Get("y"), Value("a"))
	do(r, 2, Get("z"), NotFound())
	mustPass(t, r)
	if r.Len() != 10 {
		t.Fatalf("Len() = %d", r.Len())
	}
}

func TestEmpty(t *testing.T) {
	mustPass(t, NewRecorder())
}

func TestStaleRead(t *testing.T) {
	r := NewRecorder()
	do(r, 0, Put("x", "1"), Ack())
	do(r, 0, Put("x", "2"), Ack())
	do(r, 1, Get("x"), Value("1")) // acknowledged write 2 is missing
	info := mustFail(t, r)
	if !strings.Contains(info, `key "x"`) {
		t.Fatalf("info does not name the key:\n%s", info)
	}
}

func TestReadAfterDeleteOrBeforeWrite(t *testing.T) {
	r := NewRecorder()
	do(r, 0, Put("x", "1"), Ack())
	do(r, 0, Delete("x"), Ack())
	do(r, 1, Get("x"), Value("1"))
	mustFail(t, r)

	r = NewRecorder()
	do(r, 0, Put("x", "1"), Ack())
	do(r, 1, Get("x"), NotFound()) // a lost write
	mustFail(t, r)
}

func TestValueNeverWritten(t *testing.T) {
	r := NewRecorder()
	do(r, 0, Put("x", "1"), Ack())
	do(r, 1, Get("x"), Value("bogus"))
	mustFail(t, r)

	// Not even a concurrent, unknown or failed write of another key helps.
	r = NewRecorder()
	do(r, 0, Put("y", "bogus"), Unknown())
	do(r, 1, Get("x"), Value("bogus"))
	mustFail(t, r)
}

func TestOnlyTheBadKeyIsReported(t *testing.T) {
	r := NewRecorder()
	for i := range 5 {
		k := fmt.Sprintf("k%d", i)
		do(r, i, Put(k, "v"), Ack())
		do(r, i, Get(k), Value("v"))
	}
	do(r, 0, Get("k3"), NotFound())
	info := mustFail(t, r)
	if !strings.Contains(info, `key "k3"`) || strings.Count(info, "key ") != 1 {
		t.Fatalf("info should name k3 and only k3:\n%s", info)
	}
}

func TestConcurrentOverlapping(t *testing.T) {
	// put(x,1) and put(x,2) overlap; a read inside both sees 2, and a read
	// after both sees 1: put 2, get 2, put 1, get 1 explains it.
	r := NewRecorder()
	p1 := r.Begin(0, Put("x", "1"))
	p2 := r.Begin(1, Put("x", "2"))
	g := r.Begin(2, Get("x"))
	r.End(g, Value("2"))
	g0 := r.Begin(3, Get("x"))
	r.End(g0, Value("2"))
	r.End(p2, Ack())
	r.End(p1, Ack())
	do(r, 2, Get("x"), Value("1"))
	// A read overlapping the first write may still see nothing.
	r2 := NewRecorder()
	p := r2.Begin(0, Put("y", "1"))
	do(r2, 1, Get("y"), NotFound())
	do(r2, 1, Get("y"), Value("1"))
	r2.End(p, Ack())
	mustPass(t, r)
	mustPass(t, r2)

	// The same reads with the writes one after the other are a violation:
	// put 1 finished before put 2 began, so 1 cannot come back.
	r = NewRecorder()
	do(r, 0, Put("x", "1"), Ack())
	p2 = r.Begin(1, Put("x", "2"))
	do(r, 2, Get("x"), Value("2"))
	r.End(p2, Ack())
	do(r, 2, Get("x"), Value("1"))
	mustFail(t, r)

	// Once a read has returned the value of a concurrent write, a read
	// that begins afterwards cannot return the old value.
	r = NewRecorder()
	do(r, 0, Put("x", "1"), Ack())
	p2 = r.Begin(0, Put("x", "2"))
	do(r, 1, Get("x"), Value("2"))
	do(r, 2, Get("x"), Value("1"))
	r.End(p2, Ack())
	mustFail(t, r)
}

func TestUnknownWrite(t *testing.T) {
	t.Run("shows up later", func(t *testing.T) {
		r := NewRecorder()
		do(r, 0, Put("x", "1"), Ack())
		do(r, 0, Put("x", "2"), Unknown())
		do(r, 1, Get("x"), Value("1")) // not applied yet
		do(r, 1, Get("x"), Value("2")) // applied long after its client gave up
		mustPass(t, r)
	})
	t.Run("never shows up", func(t *testing.T) {
		r := NewRecorder()
		do(r, 0, Put("x", "1"), Ack())
		do(r, 0, Put("x", "2"), Unknown())
		do(r, 1, Get("x"), Value("1"))
		do(r, 0, Put("y", "a"), Ack())
		do(r, 1, Get("x"), Value("1"))
		mustPass(t, r)
	})
	t.Run("cannot be undone once seen", func(t *testing.T) {
		r := NewRecorder()
		do(r, 0, Put("x", "1"), Ack())
		do(r, 0, Put("x", "2"), Unknown())
		do(r, 1, Get("x"), Value("2"))
		do(r, 1, Get("x"), Value("1"))
		mustFail(t, r)
	})
	t.Run("cannot take effect before its call", func(t *testing.T) {
		r := NewRecorder()
		do(r, 1, Get("x"), Value("2"))
		do(r, 0, Put("x", "2"), Unknown())
		mustFail(t, r)
	})
	t.Run("open operations count as unknown", func(t *testing.T) {
		r := NewRecorder()
		r.Begin(0, Put("x", "1")) // its client was killed
		r.Begin(2, Get("x"))      // so was this one
		do(r, 1, Get("x"), NotFound())
		do(r, 1, Get("x"), Value("1"))
		mustPass(t, r)
	})
}

func TestFailedAndUnknownReads(t *testing.T) {
	// A write that certainly failed is dropped: its value must not appear.
	r := NewRecorder()
	do(r, 0, Put("x", "1"), Ack())
	do(r, 0, Put("x", "2"), Failed())
	do(r, 1, Get("x"), Value("1"))
	mustPass(t, r)
	do(r, 1, Get("x"), Value("2"))
	mustFail(t, r)

	// A read without an answer says nothing.
	r = NewRecorder()
	do(r, 0, Put("x", "1"), Ack())
	do(r, 1, Get("x"), Unknown())
	do(r, 1, Get("x"), Failed())
	mustPass(t, r)
	if n := len(r.Operations()); n != 1 {
		t.Fatalf("Operations() has %d operations, want the put only", n)
	}
}

func TestMisuse(t *testing.T) {
	r := NewRecorder()
	id := r.Begin(0, Get("x"))
	r.End(id, NotFound())
	r.End(id, NotFound())
	r.End(42, Ack())
	ok, _, err := r.Check(time.Second)
	if ok || err == nil || !strings.Contains(err.Error(), "End(42) without Begin") ||
		!strings.Contains(err.Error(), "called twice") {
		t.Fatalf("Check() = %v, %v", ok, err)
	}
}

// store is an in-memory key/value store for the concurrent tests. With
// stale set, reads come from a copy that is never updated, like a lagging
// follower.
type store struct {
	mu    sync.Mutex
	data  map[string]string
	stale map[string]string
}

func (s *store) put(k, v string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.data[k] = v
}

func (s *store) get(k string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stale != nil {
		v, ok := s.stale[k]
		return v, ok
	}
	v, ok := s.data[k]
	return v, ok
}

// runWorkload has clients run puts and gets on a few keys concurrently.
// With unknown set, some puts are recorded as unknown, as if their
// connection was cut after the request was sent.
func runWorkload(r *Recorder, s *store, clients, opsPerClient int, unknown bool) {
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range opsPerClient {
				k := fmt.Sprintf("k%d", (c+i)%3)
				if i%3 == 0 {
					v := fmt.Sprintf("c%d-%d", c, i)
					id := r.Begin(c, Put(k, v))
					s.put(k, v)
					if unknown && i%9 == 0 {
						r.End(id, Unknown())
					} else {
						r.End(id, Ack())
					}
					continue
				}
				id := r.Begin(c, Get(k))
				v, ok := s.get(k)
				if ok {
					r.End(id, Value(v))
				} else {
					r.End(id, NotFound())
				}
				if i%5 == 0 {
					r.Note("test", fmt.Sprintf("client %d at op %d", c, i))
				}
			}
		}()
	}
	wg.Wait()
}

func TestConcurrentClients(t *testing.T) {
	r := NewRecorder()
	runWorkload(r, &store{data: map[string]string{}}, 8, 60, true)
	mustPass(t, r)
	if r.Len() != 480 {
		t.Fatalf("Len() = %d", r.Len())
	}

	// Reads from a replica that never catches up are caught. (Without
	// unknown writes: proving a violation in a history full of writes that
	// may take effect at any time is exponential, see TestTimeout.)
	r = NewRecorder()
	runWorkload(r, &store{data: map[string]string{}, stale: map[string]string{}}, 8, 60, false)
	mustFail(t, r)
}

func TestVisualize(t *testing.T) {
	dir := t.TempDir()

	r := NewRecorder()
	runWorkload(r, &store{data: map[string]string{}}, 3, 10, true)
	r.Note("faults", "partition n1")
	path := filepath.Join(dir, "ok.html")
	// Without a Check first: Visualize checks by itself.
	if err := r.Visualize(path); err != nil {
		t.Fatal(err)
	}
	checkHTML(t, path, `put(\"k0\", \"c0-0\") → ?`, "partition n1")

	r = NewRecorder()
	do(r, 0, Put("x", "1"), Ack())
	do(r, 1, Get("x"), Value("bogus"))
	mustFail(t, r)
	path = filepath.Join(dir, "bad.html")
	if err := r.Visualize(path); err != nil {
		t.Fatal(err)
	}
	checkHTML(t, path, `get(\"x\") → \"bogus\"`)
}

func checkHTML(t *testing.T, path string, want ...string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	if !strings.Contains(s, "<html") {
		t.Fatalf("%s is not HTML", path)
	}
	for _, w := range want {
		if !strings.Contains(s, w) {
			t.Errorf("%s does not contain %s", path, w)
		}
	}
}

func TestTimeout(t *testing.T) {
	// Forty writes of unknown outcome and a read no order can explain: the
	// checker has 2^40 subsets of writes to rule out.
	r := NewRecorder()
	for i := range 40 {
		do(r, i, Put("x", fmt.Sprint(i)), Unknown())
	}
	do(r, 40, Get("x"), Value("never written"))
	start := time.Now()
	ok, info, err := r.Check(200 * time.Millisecond)
	if ok || !errors.Is(err, ErrTimeout) {
		t.Fatalf("Check() = %v, %v, want ErrTimeout:\n%s", ok, err, info)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Check with a 200ms timeout took %v", d)
	}
	t.Log(info)
}
