package service

import (
	"errors"
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
}
