package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"

	"github.com/coffer-kms/coffer/internal/barrier"
	"github.com/coffer-kms/coffer/internal/journal"
	"github.com/coffer-kms/coffer/internal/lifecycle"
)

// mixedHistory is a journal of n records after a cluster init: wallets
// created and deleted, creations, rotations, state changes up to
// destruction, attributes, tokens created and revoked, data keys, raft
// configuration and marker records, restore points, and commands that fail (duplicates, wrong versions, unknown objects, bodies
// that do not decode, entries that are not commands).
func mixedHistory(t *testing.T, seed uint64, n int) []journal.Record {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 7))
	t0 := time.Unix(1700000000, 0)
	var recs []journal.Record
	add := func(typ Type, body any) {
		idx := uint64(len(recs) + 1)
		at := t0.Add(time.Duration(idx) * time.Millisecond)
		c, err := NewCommand(typ, at, body)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, journal.Record{Index: idx, Time: at, Type: uint16(typ), Payload: c.Marshal()})
	}
	raw := func(typ Type, payload []byte) {
		idx := uint64(len(recs) + 1)
		recs = append(recs, journal.Record{Index: idx, Time: t0.Add(time.Duration(idx) * time.Millisecond), Type: uint16(typ), Payload: payload})
	}
	wk := func(id uint32) barrier.WrappedKey {
		return barrier.WrappedKey{ID: id, MEKGen: 1, Wrapped: []byte("wrapped"), Created: t0}
	}
	add(TypeClusterInit, ClusterInit{ClusterID: "c1", Key: wk(1)})
	add(TypeWalletCreate, Wallet{Name: "w"})
	objects := 0
	latest := map[int]uint64{}
	states := []lifecycle.State{lifecycle.Deactivated, lifecycle.Compromised, lifecycle.Destroyed, lifecycle.Active}
	for len(recs) < n {
		o := rng.IntN(objects + 1)
		id := fmt.Sprintf("id-%d", o)
		switch k := rng.IntN(20); {
		case k < 7 || objects == 0: // create a new object (sometimes an existing name: fails)
			name := fmt.Sprintf("key-%d", objects)
			if rng.IntN(10) == 0 && objects > 0 {
				name = "key-0"
			}
			st := lifecycle.Active
			if rng.IntN(3) == 0 {
				st = lifecycle.PreActive
			}
			add(TypeObjectCreate, ObjectCreate{Object: Object{ID: fmt.Sprintf("id-%d", objects), Wallet: "w", Name: name,
				Type: TypeSymmetricKey, Algorithm: "AES", Length: 256, State: st, CreatedBy: []string{"user:admin", "user:<admin>"}[rng.IntN(2)],
				Attributes: map[string]string{"owner": "dba", "ünïcode": "é"}}, Material: []byte(fmt.Sprintf("sealed-%d", objects))})
			latest[objects] = 1
			objects++
		case k < 11: // rotate (sometimes with the wrong version: fails)
			v := latest[o] + 1
			if rng.IntN(5) == 0 {
				v += 3
			} else if latest[o] > 0 {
				latest[o] = v
			}
			add(TypeObjectRotate, ObjectRotate{ID: id, Version: v, Material: []byte("rotated"), Public: []byte{1, 2, 3}})
		case k < 13:
			add(TypeObjectState, ObjectState{ID: id, To: states[rng.IntN(len(states))], Reason: "test <reason>"})
		case k < 14:
			add(TypeObjectAttrs, ObjectAttrs{ID: id, Set: map[string]string{"b": "2", "a": "1"}, Delete: []string{"owner"}})
		case k < 15:
			h := fmt.Sprintf("%064x", rng.IntN(50))
			if rng.IntN(2) == 0 {
				add(TypeTokenCreate, Token{Hash: h, Kind: TokenRoot, Name: "t", Created: t0})
			} else {
				add(TypeTokenRevoke, TokenRevoke{Hash: h})
			}
		case k < 16:
			raw(TypeRaftMarker, nil)
		case k < 17:
			raw(TypeRaftConfig, []byte(fmt.Sprintf("config-%d", len(recs))))
		case k < 18: // not decodable: a short entry, a body that is not JSON
			if rng.IntN(2) == 0 {
				raw(TypeInvalid, []byte{1, 2, 3})
			} else {
				c := Command{Type: TypeObjectCreate, Time: t0, Body: []byte(`{"object":`)}
				raw(TypeObjectCreate, c.Marshal())
			}
		case k < 19:
			if rng.IntN(2) == 0 {
				add(TypeDEKCreate, wk(uint32(2+len(recs))))
			} else {
				add(TypeRestorePoint, RestorePoint{Name: fmt.Sprintf("rp-%d", len(recs))})
			}
		default: // wallets come and go (deleting one with objects fails)
			if w := fmt.Sprintf("w%d", rng.IntN(5)); rng.IntN(2) == 0 {
				add(TypeWalletCreate, Wallet{Name: w})
			} else {
				add(TypeWalletDelete, WalletDelete{Name: []string{w, "w"}[rng.IntN(2)]})
			}
		}
	}
	return recs
}

func resultString(v any) string {
	if err, ok := v.(error); ok {
		return "error: " + err.Error()
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("unencodable %T", v)
	}
	return fmt.Sprintf("%T %s", v, b)
}

// TestPreparedReplayMatchesOneByOne: a history replayed in batches decoded
// ahead in parallel, and applied through ApplyBatch in one batch, ends in
// the same state (digest) with the same results as the same history applied
// one entry at a time, each decoded inside its transaction.
func TestPreparedReplayMatchesOneByOne(t *testing.T) {
	recs := mixedHistory(t, 1, 3000)
	dir := t.TempDir()
	open := func(name string) *Store {
		s, err := Open(filepath.Join(dir, name), Options{NoSync: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	oneByOne, batched, parallel := open("one.db"), open("batched.db"), open("parallel.db")

	b, err := PrepareReplay(recs, 1)
	if err != nil {
		t.Fatal(err)
	}
	var want []any
	for _, l := range b.logs {
		want = append(want, oneByOne.applyBatch([]*raft.Log{l}, nil, false)[0])
	}
	failed := 0
	for _, r := range want {
		if _, ok := r.(error); ok {
			failed++
		}
	}
	if failed < 100 {
		t.Fatalf("the history has %d failing commands: too few to test them", failed)
	}

	b2, err := PrepareReplay(recs, 1)
	if err != nil {
		t.Fatal(err)
	}
	got := batched.ApplyBatch(b2.logs)
	for i := range want {
		if w, g := resultString(want[i]), resultString(got[i]); w != g {
			t.Fatalf("entry %d (%s): one by one %s, in one batch %s", i+1, Type(recs[i].Type), w, g)
		}
	}

	// Replay in batches of several sizes, some large enough to decode in
	// parallel.
	for lo, i := 0, 0; lo < len(recs); i++ {
		hi := min(lo+[]int{1, 700, 3, 1200, 256}[i%5], len(recs))
		if err := parallel.Replay(recs[lo:hi], 1); err != nil {
			t.Fatal(err)
		}
		lo = hi
	}

	_, want0, objs, err := oneByOne.Digest()
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]*Store{"one batch": batched, "parallel replay": parallel} {
		idx, d, _, err := s.Digest()
		if err != nil {
			t.Fatal(err)
		}
		if d != want0 || idx != uint64(len(recs)) {
			t.Fatalf("%s: digest %s at %d, one by one %s at %d", name, d, idx, want0, len(recs))
		}
	}
	t.Logf("%d records, %d objects, %d failing commands", len(recs), objs, failed)
}

// TestPredecodersMatchHandlers: every body type decoded ahead is the one
// its handler in apply takes, so the decoded body is used (a body that does
// not decode would otherwise fail the command).
func TestPredecodersMatchHandlers(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "state.db"), Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for typ, dec := range predecoders {
		pre, ok := dec([]byte(`{}`))
		if !ok {
			t.Fatalf("%s: {} does not decode", typ)
		}
		// The body itself does not decode: only the decoded value can be
		// used.
		cmd := Command{Type: typ, Time: time.Unix(1700000000, 0), Body: []byte("not json"), pre: pre}
		var res any
		var ioErr error
		rollBack := errors.New("roll back") // leaves the state empty for the next type
		err := s.db.Update(func(tx *bolt.Tx) error {
			res, ioErr = s.apply(tx, 1, cmd)
			return rollBack
		})
		if ioErr != nil || !errors.Is(err, rollBack) {
			t.Fatalf("%s: %v %v", typ, ioErr, err)
		}
		if e, ok := res.(error); ok && strings.Contains(e.Error(), typ.String()+" body") {
			t.Errorf("%s: the body decoded ahead (%T) was not used: %v", typ, pre, e)
		}
	}
}
