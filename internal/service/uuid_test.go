package service

import (
	"encoding/hex"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

var uuidV7RE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// uuidMillis is the Unix millisecond an id's first 48 bits hold.
func uuidMillis(t *testing.T, id string) int64 {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(id, "-", ""))
	if err != nil || len(b) != 16 {
		t.Fatalf("id %q is not 16 hex bytes: %v", id, err)
	}
	var ms int64
	for _, c := range b[:6] {
		ms = ms<<8 | int64(c)
	}
	return ms
}

// TestNewUUIDFormat: an object id is a UUIDv7 (version 7, variant 10) whose
// first 48 bits are the Unix time in milliseconds, big-endian.
func TestNewUUIDFormat(t *testing.T) {
	at := time.UnixMilli(0x0123_4567_89ab).Add(999 * time.Microsecond)
	id := newUUIDAt(at)
	if !uuidV7RE.MatchString(id) {
		t.Fatalf("id %q is not a UUIDv7", id)
	}
	if !strings.HasPrefix(id, "01234567-89ab-7") {
		t.Errorf("id %q does not start with the time's milliseconds 0x0123456789ab", id)
	}
	before := time.Now().UnixMilli()
	id = newUUID()
	after := time.Now().UnixMilli()
	if !uuidV7RE.MatchString(id) {
		t.Fatalf("id %q is not a UUIDv7", id)
	}
	if ms := uuidMillis(t, id); ms < before || ms > after {
		t.Errorf("id %q holds millisecond %d, want %d..%d", id, ms, before, after)
	}
}

// TestNewUUIDOrder: ids of later milliseconds sort after earlier ones as
// strings (so new objects append to the buckets keyed by id), ids of one
// millisecond differ in their random bits.
func TestNewUUIDOrder(t *testing.T) {
	base := time.UnixMilli(1_800_000_000_000)
	prev := ""
	for i := 0; i < 1000; i++ {
		id := newUUIDAt(base.Add(time.Duration(i) * time.Millisecond))
		if id <= prev {
			t.Fatalf("id %q of millisecond %d does not sort after %q", id, i, prev)
		}
		prev = id
	}
	// Crossing a byte boundary of the timestamp (0x..ff -> 0x..00).
	a, b := newUUIDAt(time.UnixMilli(0x01ff)), newUUIDAt(time.UnixMilli(0x0200))
	if a >= b {
		t.Errorf("%q (ms 0x1ff) does not sort before %q (ms 0x200)", a, b)
	}
	same := map[string]bool{}
	for i := 0; i < 1000; i++ {
		same[newUUIDAt(base)] = true
	}
	if len(same) != 1000 {
		t.Errorf("1000 ids of one millisecond: %d distinct", len(same))
	}
}

// TestNewUUIDConcurrent: ids made at the same time by many goroutines are
// all distinct.
func TestNewUUIDConcurrent(t *testing.T) {
	const workers, each = 16, 2000
	ids := make([][]string, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				ids[w] = append(ids[w], newUUID())
			}
		}()
	}
	wg.Wait()
	seen := make(map[string]bool, workers*each)
	for _, l := range ids {
		for _, id := range l {
			if seen[id] {
				t.Fatalf("id %q made twice", id)
			}
			seen[id] = true
		}
	}
}

// TestCreatedObjectIDIsUUIDv7: a created object's id is a UUIDv7 of its
// creation time.
func TestCreatedObjectIDIsUUIDv7(t *testing.T) {
	s := initSvc(t, t.TempDir())
	defer s.Close()
	ctx := rootCtx()
	before := time.Now().UnixMilli()
	o, err := s.Objects.CreateObject(ctx, CreateObject{Wallet: DefaultWallet, Name: "v7/a", Type: TypeSymmetricKey})
	if err != nil {
		t.Fatal(err)
	}
	after := time.Now().UnixMilli()
	if !uuidV7RE.MatchString(o.ID) {
		t.Fatalf("created object id %q is not a UUIDv7", o.ID)
	}
	if ms := uuidMillis(t, o.ID); ms < before || ms > after {
		t.Errorf("id %q holds millisecond %d, want %d..%d", o.ID, ms, before, after)
	}
}
