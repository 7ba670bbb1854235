package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
)

func kvSvc(t *testing.T) *Service {
	t.Helper()
	s := initSvc(t, t.TempDir())
	t.Cleanup(func() { s.Close() })
	if _, err := s.Access.CreateWallet(rootCtx(), "kvw", ""); err != nil {
		t.Fatal(err)
	}
	return s
}

// Concurrent check-and-set writes of the same version: exactly one wins,
// the others get the mismatch, and no version is skipped or doubled.
func TestKVPutCASConcurrent(t *testing.T) {
	s := kvSvc(t)
	ctx := rootCtx()
	if _, err := s.Objects.KVPut(ctx, "kvw", "k", []byte(`{"v":"0"}`), nil); err != nil {
		t.Fatal(err)
	}
	one := uint64(1)
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins, mismatches := 0, 0
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Objects.KVPut(ctx, "kvw", "k", []byte(`{"v":"1"}`), &one)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case errors.Is(err, ErrInvalid) && strings.Contains(err.Error(), "check-and-set"):
				mismatches++
			default:
				t.Errorf("unexpected error: %v", err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 || mismatches != 7 {
		t.Fatalf("wins %d, mismatches %d", wins, mismatches)
	}
	md, err := s.Objects.KVMetadataOf(ctx, "kvw", "k")
	if err != nil || md.Current != 2 || len(md.Versions) != 2 {
		t.Fatalf("metadata %+v %v", md, err)
	}
}

// KV refuses values that are not JSON objects before anything is written,
// and reads of a secret written as raw bytes say what is wrong.
func TestKVValuesAreJSONObjects(t *testing.T) {
	s := kvSvc(t)
	ctx := rootCtx()
	for _, v := range []string{``, `[]`, `"x"`, `{"a":`, `{} {}`} {
		if _, err := s.Objects.KVPut(ctx, "kvw", "k", []byte(v), nil); !errors.Is(err, ErrInvalid) {
			t.Fatalf("value %q: %v", v, err)
		}
	}
	if _, err := s.Objects.KVGet(ctx, "kvw", "k", 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a refused value was stored: %v", err)
	}
	if _, err := s.Objects.PutSecret(ctx, "kvw", "raw", []byte{0xff, 0x00}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Objects.KVGet(ctx, "kvw", "raw", 0); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "not a JSON object") {
		t.Fatalf("raw value through KV: %v", err)
	}
	// The Vault API copies the data KVGet answers into its reply without
	// checking it again: a value written by another API that is not one
	// JSON object is never answered.
	// White space JSON does not have ("\v", "\f", U+0085, U+00A0) around
	// an object makes it invalid JSON too.
	for i, v := range []string{`[]`, `"x"`, `{"a":`, `{} {}`, `{"a":1}x`, `{"a":"\xff"}`, " \t", "\v{}", "{}\f", "\u00a0{\"a\":1}", "{}\u0085"} {
		name := fmt.Sprintf("raw%d", i)
		if _, err := s.Objects.PutSecret(ctx, "kvw", name, []byte(v)); err != nil {
			t.Fatal(err)
		}
		if sec, err := s.Objects.KVGet(ctx, "kvw", name, 0); !errors.Is(err, ErrConflict) {
			t.Fatalf("raw value %q through KV: %q, %v", v, sec.Data, err)
		}
	}
	for i, v := range []string{`{}`, ` {"a" : [1, "<b>"]} `, "{\"\u2028\":null}"} {
		name := fmt.Sprintf("obj%d", i)
		if _, err := s.Objects.PutSecret(ctx, "kvw", name, []byte(v)); err != nil {
			t.Fatal(err)
		}
		if sec, err := s.Objects.KVGet(ctx, "kvw", name, 0); err != nil || !json.Valid(sec.Data) {
			t.Fatalf("object %q through KV: %q, %v", v, sec.Data, err)
		}
	}
}

// TestAttachCall: a call attached to a context with an audit mark is the
// call of that context and of contexts made from it; where there is no
// mark, or already a call, nothing is attached.
func TestAttachCall(t *testing.T) {
	ctx, seen := WithAuditMark(context.Background())
	child := context.WithValue(ctx, struct{ k int }{1}, "v")
	c := &Call{Transport: "vault"}
	if !AttachCall(child, c) || CallFrom(child) != c || CallFrom(ctx) != c {
		t.Fatalf("attached call not found: %p %p", CallFrom(child), CallFrom(ctx))
	}
	if AttachCall(child, &Call{}) || CallFrom(child) != c {
		t.Fatal("a second call replaced the first")
	}
	MarkAudited(child)
	if !seen.Load() {
		t.Fatal("the mark is not reached through the context")
	}
	if AttachCall(context.Background(), c) || CallFrom(context.Background()) != nil {
		t.Fatal("attached without an audit mark")
	}
	outer := &Call{}
	marked, _ := WithAuditMark(WithCall(context.Background(), outer))
	if AttachCall(marked, c) || CallFrom(marked) != outer {
		t.Fatal("attached over an existing call")
	}
	inner, _ := WithAuditMark(context.Background())
	withCall := WithCall(inner, outer)
	if AttachCall(withCall, c) || CallFrom(withCall) != outer {
		t.Fatal("attached under a nearer call")
	}
}

// TestKVListSaysWhenItStops: a KV list answers at most maxKVListKeys keys
// (Vault's list has no paging) and says when it stopped there, instead of
// answering a silently shortened list.
func TestKVListSaysWhenItStops(t *testing.T) {
	s := kvSvc(t)
	ctx := rootCtx()
	for _, p := range []string{"a", "b/x", "c"} {
		if _, err := s.Objects.KVPut(ctx, "kvw", p, []byte(`{"v":"1"}`), nil); err != nil {
			t.Fatal(err)
		}
	}
	defer func(n int) { maxKVListKeys = n }(maxKVListKeys)
	maxKVListKeys = 2
	keys, more, err := s.Objects.KVList(ctx, "kvw", "")
	if err != nil || fmt.Sprint(keys) != "[a b/]" || !more {
		t.Fatalf("list with a bound of 2: %v more=%v %v, want [a b/] more=true", keys, more, err)
	}
	maxKVListKeys = 3
	if keys, more, err := s.Objects.KVList(ctx, "kvw", ""); err != nil || len(keys) != 3 || more {
		t.Fatalf("list with a bound of 3: %v more=%v %v, want 3 keys, more=false", keys, more, err)
	}
}
