// Package linearize records a key/value register workload run by concurrent
// clients against a real server and checks the history for linearizability
// with github.com/anishathalye/porcupine.
//
// The HA fault tests share one Recorder between their client goroutines.
// Each client wraps every request in Begin/End, while the test kills nodes
// and cuts links; at the end the test checks the whole history:
//
//	rec := linearize.NewRecorder()
//	// in client goroutine c:
//	id := rec.Begin(c, linearize.Put("k1", "v7"))
//	err := client.Put(ctx, "k1", "v7")
//	switch {
//	case err == nil:
//		rec.End(id, linearize.Ack())
//	case isReadOnlyRestricted(err): // refused before anything happened
//		rec.End(id, linearize.Failed())
//	default: // timeout, connection cut, leader lost: it may have happened
//		rec.End(id, linearize.Unknown())
//	}
//	// after the run:
//	ok, info, err := rec.Check(time.Minute)
//	if err != nil || !ok {
//		rec.Visualize(filepath.Join(t.TempDir(), "history.html"))
//		t.Fatalf("history: ok=%v err=%v\n%s", ok, err, info)
//	}
//
// Reads must be ones the server promises to be linearizable (the
// linearizable-read option, or reads on the leader): a follower's local read
// may legitimately be stale and would show up here as a violation.
//
// Every Put should write a value unique to the run (e.g. client and sequence
// number): the checker then has few ways to explain a read and stays fast.
// Writes of unknown outcome are the expensive part: each may take effect at
// any later point, so proving a violation can cost 2^n in the n unknown
// writes on a key (a correct history is usually found quickly). Spread the
// workload over many keys, or move on to a fresh key every few hundred
// operations, so that no key collects more than a dozen or so.
//
// A write whose outcome is unknown is modelled the porcupine way: its return
// time is +infinity, so it may take effect at any point after its call, or
// never. An operation still open when Check runs (its client was stuck or
// killed) counts as unknown too. A read that fails tells nothing and is
// dropped, as is any operation ended with Failed.
package linearize

import (
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// Kind is what an operation does.
type Kind uint8

const (
	KindGet Kind = iota + 1
	KindPut
	KindDelete
)

func (k Kind) String() string {
	switch k {
	case KindGet:
		return "get"
	case KindPut:
		return "put"
	case KindDelete:
		return "delete"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Op is the input of one operation on one key.
type Op struct {
	Kind  Kind
	Key   string
	Value string // for KindPut
}

// Put writes value to key.
func Put(key, value string) Op { return Op{Kind: KindPut, Key: key, Value: value} }

// Get reads key.
func Get(key string) Op { return Op{Kind: KindGet, Key: key} }

// Delete removes key; a later Get finds nothing.
func Delete(key string) Op { return Op{Kind: KindDelete, Key: key} }

func (op Op) String() string {
	switch op.Kind {
	case KindPut:
		return fmt.Sprintf("put(%q, %q)", op.Key, op.Value)
	default:
		return fmt.Sprintf("%v(%q)", op.Kind, op.Key)
	}
}

// Status is how an operation ended.
type Status uint8

const (
	// StatusDone: the server answered; a write was acknowledged, a read returned
	// Output.Value (or Output.Found false).
	StatusDone Status = iota
	// StatusUnknown: the outcome is unknown (timeout, connection cut). A
	// write may or may not have taken effect; a read is dropped.
	StatusUnknown
	// StatusFailed: the operation certainly had no effect (the server
	// refused it before doing anything, e.g. read-only restricted mode). It
	// is dropped. When in doubt, use Unknown instead.
	StatusFailed
)

// Output is the result of one operation.
type Output struct {
	Status Status
	Found  bool   // Get: the key existed
	Value  string // Get: the value read, when Found
}

// Ack is the output of an acknowledged Put or Delete.
func Ack() Output { return Output{Status: StatusDone} }

// Value is the output of a Get that read v.
func Value(v string) Output { return Output{Status: StatusDone, Found: true, Value: v} }

// NotFound is the output of a Get that found no value for the key.
func NotFound() Output { return Output{Status: StatusDone} }

// Unknown is the output of an operation whose outcome is unknown.
func Unknown() Output { return Output{Status: StatusUnknown} }

// Failed is the output of an operation that certainly had no effect.
func Failed() Output { return Output{Status: StatusFailed} }

// ErrTimeout is returned by Check when porcupine could not decide in time.
var ErrTimeout = errors.New("linearize: check timed out before deciding")

// record is one operation; ret is zero while it is open.
type record struct {
	client int
	op     Op
	out    Output
	call   int64
	ret    int64
	ended  bool
}

type note struct {
	tag, text string
	at        int64
}

// Recorder collects the history of a workload. It is safe for concurrent
// use. Timestamps come from one monotonic clock read under a lock and made
// strictly increasing, so operations that one goroutine runs one after the
// other never appear concurrent.
type Recorder struct {
	mu      sync.Mutex
	start   time.Time
	last    int64
	ops     []record
	notes   []note
	misuse  []string
	checked *checked // the last Check, for Visualize

	vizMu sync.Mutex // serializes Visualize: porcupine sorts info in place
}

type checked struct {
	ops  int // len(ops) and ended count it covered
	done int
	info porcupine.LinearizationInfo
}

// NewRecorder returns an empty Recorder.
func NewRecorder() *Recorder {
	return &Recorder{start: time.Now()}
}

// nowLocked returns a timestamp greater than any returned before. r.mu is held.
func (r *Recorder) nowLocked() int64 {
	t := int64(time.Since(r.start)) + 1
	if t <= r.last {
		t = r.last + 1
	}
	r.last = t
	return t
}

// Begin records that client (a small number, 0 up) calls op now and
// returns the id to pass to End. Call it just before sending the request.
func (r *Recorder) Begin(client int, op Op) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops = append(r.ops, record{client: client, op: op, call: r.nowLocked()})
	return len(r.ops) - 1
}

// End records that operation id returned out now. Call it just after the
// answer (or the error) arrives. Misuse (an unknown id, a second End) is
// reported by Check.
func (r *Recorder) End(id int, out Output) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case id < 0 || id >= len(r.ops):
		r.misuse = append(r.misuse, fmt.Sprintf("End(%d) without Begin", id))
	case r.ops[id].ended:
		r.misuse = append(r.misuse, fmt.Sprintf("End(%d) called twice", id))
	default:
		r.ops[id].out = out
		r.ops[id].ret = r.nowLocked()
		r.ops[id].ended = true
	}
}

// Note records a point-in-time event (tag "faults", text "partition n1")
// that Visualize shows beside the clients' operations.
func (r *Recorder) Note(tag, text string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.notes = append(r.notes, note{tag: tag, text: text, at: r.nowLocked()})
}

// Len returns the number of operations begun so far.
func (r *Recorder) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ops)
}

// Operations returns the history as porcupine sees it: failed operations
// and reads without an answer left out, and every write of unknown outcome
// (or still open) returning at +infinity. It is for use with Model.
func (r *Recorder) Operations() []porcupine.Operation {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.operationsLocked()
}

func (r *Recorder) operationsLocked() []porcupine.Operation {
	hist := make([]porcupine.Operation, 0, len(r.ops))
	for _, rec := range r.ops {
		out, ret := rec.out, rec.ret
		if !rec.ended {
			out = Unknown()
		}
		switch {
		case out.Status == StatusFailed:
			continue
		case out.Status == StatusUnknown && rec.op.Kind == KindGet:
			continue
		case out.Status == StatusUnknown:
			ret = math.MaxInt64
		}
		hist = append(hist, porcupine.Operation{
			ClientId: rec.client,
			Input:    rec.op,
			Call:     rec.call,
			Output:   out,
			Return:   ret,
		})
	}
	return hist
}

// Check checks the history recorded so far, one key at a time, and gives up
// after timeout (0: no limit). ok reports whether it is linearizable; info
// is a short summary naming the keys that are not. err is ErrTimeout when
// porcupine could not decide in time, or reports misuse of the Recorder.
func (r *Recorder) Check(timeout time.Duration) (ok bool, info string, err error) {
	r.mu.Lock()
	hist := r.operationsLocked()
	misuse := slices.Clone(r.misuse)
	cover := checked{ops: len(r.ops), done: r.endedLocked()}
	r.mu.Unlock()

	if len(misuse) > 0 {
		return false, "", fmt.Errorf("linearize: recorder misused: %s", strings.Join(misuse, "; "))
	}
	res, li := porcupine.CheckOperationsVerbose(Model(), hist, timeout)
	cover.info = li
	r.mu.Lock()
	r.checked = &cover
	r.mu.Unlock()

	parts := partition(hist)
	switch res {
	case porcupine.Ok:
		return true, fmt.Sprintf("linearizable: %d operations on %d keys", len(hist), len(parts)), nil
	case porcupine.Unknown:
		return false, fmt.Sprintf("undecided after %v: %d operations on %d keys", timeout, len(hist), len(parts)), ErrTimeout
	}
	return false, describeIllegal(parts, li), nil
}

func (r *Recorder) endedLocked() int {
	n := 0
	for _, rec := range r.ops {
		if rec.ended {
			n++
		}
	}
	return n
}

// maxListed bounds the operations describeIllegal lists per key.
const maxListed = 10

// describeIllegal names each key whose history is not linearizable, with
// the longest prefix porcupine could explain and the operations it could
// not place.
func describeIllegal(parts [][]porcupine.Operation, li porcupine.LinearizationInfo) string {
	var b strings.Builder
	b.WriteString("not linearizable")
	lins := li.PartialLinearizations()
	for i, part := range parts {
		if i >= len(lins) {
			break
		}
		var best []int
		for _, l := range lins[i] {
			if len(l) > len(best) {
				best = l
			}
		}
		if len(best) == len(part) {
			continue
		}
		key := part[0].Input.(Op).Key
		fmt.Fprintf(&b, "\nkey %q: %d operations, at most %d can be ordered", key, len(part), len(best))
		placed := make(map[int]bool, len(best))
		for _, id := range best {
			placed[id] = true
		}
		if len(best) > 0 {
			b.WriteString("; end of the longest legal order:")
			if len(best) > maxListed {
				fmt.Fprintf(&b, "\n  ... %d before", len(best)-maxListed)
				best = best[len(best)-maxListed:]
			}
			for _, id := range best {
				fmt.Fprintf(&b, "\n  %s", describe(part[id]))
			}
		}
		b.WriteString("\n then none of these fits (earliest first):")
		listed := 0
		for id, op := range part { // in call order
			if placed[id] {
				continue
			}
			if listed == maxListed {
				fmt.Fprintf(&b, "\n  ... %d more", len(part)-len(placed)-listed)
				break
			}
			fmt.Fprintf(&b, "\n  %s", describe(op))
			listed++
		}
	}
	return b.String()
}

func describe(op porcupine.Operation) string {
	ret := "∞"
	if op.Return != math.MaxInt64 {
		ret = time.Duration(op.Return).String()
	}
	return fmt.Sprintf("client %d [%v, %s] %s", op.ClientId,
		time.Duration(op.Call), ret, describeOperation(op.Input, op.Output))
}

// Visualize writes porcupine's interactive HTML view of the last Check to
// path, checking again (for at most a minute) if operations were recorded
// since. Notes appear as annotations.
func (r *Recorder) Visualize(path string) error {
	r.vizMu.Lock()
	defer r.vizMu.Unlock()
	r.mu.Lock()
	c := r.checked
	stale := c == nil || c.ops != len(r.ops) || c.done != r.endedLocked()
	notes := slices.Clone(r.notes)
	r.mu.Unlock()
	if stale {
		if _, _, err := r.Check(time.Minute); err != nil && !errors.Is(err, ErrTimeout) {
			return err
		}
		r.mu.Lock()
		c = r.checked
		r.mu.Unlock()
	}
	info := c.info
	var anns []porcupine.Annotation
	for _, n := range notes {
		anns = append(anns, porcupine.Annotation{Tag: n.tag, Start: n.at, Description: n.text})
	}
	info.AddAnnotations(anns)
	if err := porcupine.VisualizePath(Model(), info, path); err != nil {
		return fmt.Errorf("linearize: %w", err)
	}
	return nil
}

// register is the state of one key: its value, if it exists.
type register struct {
	exists bool
	value  string
}

// Model is the porcupine model of the store: independent registers, one per
// key, checked separately. Operations use Op as input and Output as output.
func Model() porcupine.Model {
	return porcupine.Model{
		Partition: partition,
		Init:      func() any { return register{} },
		Step: func(state, input, output any) (bool, any) {
			st, op, out := state.(register), input.(Op), output.(Output)
			switch op.Kind {
			case KindPut:
				return true, register{exists: true, value: op.Value}
			case KindDelete:
				return true, register{}
			case KindGet:
				return out.Found == st.exists && (!out.Found || out.Value == st.value), st
			}
			return false, st
		},
		Hash: func(state any) uint64 {
			st := state.(register)
			h := fnv.New64a()
			if st.exists {
				h.Write([]byte{1})        // #nosec G104 -- hash.Hash writes never fail
				h.Write([]byte(st.value)) // #nosec G104 -- hash.Hash writes never fail
			}
			return h.Sum64()
		},
		DescribeOperation: describeOperation,
		DescribeState: func(state any) string {
			st := state.(register)
			if !st.exists {
				return "absent"
			}
			return fmt.Sprintf("%q", st.value)
		},
	}
}

func describeOperation(input, output any) string {
	op, out := input.(Op), output.(Output)
	switch {
	case out.Status == StatusUnknown:
		return op.String() + " → ?"
	case op.Kind != KindGet:
		return op.String() + " → ok"
	case !out.Found:
		return op.String() + " → absent"
	}
	return fmt.Sprintf("%s → %q", op, out.Value)
}

// partition splits a history by key, keys in sorted order, each
// partition's operations in history order.
func partition(history []porcupine.Operation) [][]porcupine.Operation {
	byKey := make(map[string][]porcupine.Operation)
	var keys []string
	for _, op := range history {
		k := op.Input.(Op).Key
		if _, ok := byKey[k]; !ok {
			keys = append(keys, k)
		}
		byKey[k] = append(byKey[k], op)
	}
	slices.Sort(keys)
	parts := make([][]porcupine.Operation, len(keys))
	for i, k := range keys {
		parts[i] = byKey[k]
	}
	return parts
}
