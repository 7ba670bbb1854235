package state

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"

	"github.com/coffer-kms/coffer/internal/barrier"
	"github.com/coffer-kms/coffer/internal/lifecycle"
)

var fuzzT0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func fuzzCmd(f *testing.F, typ Type, body any) []byte {
	c, err := NewCommand(typ, fuzzT0, body)
	if err != nil {
		f.Fatal(err)
	}
	return c.Marshal()
}

// fuzzDump returns every key/value of the state except the applied index and
// term, which ApplyBatch advances for every entry, failed or not.
func fuzzDump(t *testing.T, s *Store) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := s.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			return b.ForEach(func(k, v []byte) error {
				if bytes.Equal(name, bucketMeta) && (bytes.Equal(k, keyAppliedIndex) || bytes.Equal(k, keyAppliedTerm)) {
					return nil
				}
				out[string(name)+"\x00"+string(k)] = string(v)
				return nil
			})
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// FuzzUnmarshalCommand decodes arbitrary raft log data and applies it as
// the entry after a small prelude applied to a fresh state (data key
// 1, wallet "w" holding object "a", endpoint "db1", user "alice", token "aaaa…"), so that commands referring to existing
// objects are exercised too. A malformed or refused command must give an
// error result and change nothing but the applied index; no command may make
// ApplyBatch retry forever (that is what it does with an I/O error).
func FuzzUnmarshalCommand(f *testing.F) {
	wk := func(id uint32) barrier.WrappedKey {
		return barrier.WrappedKey{ID: id, MEKGen: 1, Wrapped: []byte("wrapped"), Created: fuzzT0}
	}
	prelude := [][]byte{
		fuzzCmd(f, TypeDEKCreate, wk(1)),
		fuzzCmd(f, TypeWalletCreate, Wallet{Name: "w"}),
		fuzzCmd(f, TypeObjectCreate, ObjectCreate{Object: Object{ID: "id-a", Wallet: "w", Name: "a", Type: TypeSecretData, State: "active"}, Material: []byte("sealed")}),
		fuzzCmd(f, TypeEndpointEnroll, EndpointEnroll{Endpoint: Endpoint{Name: "db1"}, TokenHash: "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"}),
		fuzzCmd(f, TypeUserCreate, User{Name: "alice", PasswordHash: "$argon2id$x", Roles: []string{"key_admin"}}),
		fuzzCmd(f, TypeTokenCreate, Token{Hash: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", Policy: "root", Name: "root", Created: fuzzT0}),
	}
	seeds := [][]byte{
		fuzzCmd(f, TypeClusterInit, ClusterInit{ClusterID: "c1", Key: wk(2)}),
		fuzzCmd(f, TypeDEKCreate, wk(2)),
		fuzzCmd(f, TypeDEKRewrap, []barrier.WrappedKey{wk(1)}),
		fuzzCmd(f, TypeDEKRewrap, []barrier.WrappedKey{wk(9)}),
		fuzzCmd(f, TypeTokenCreate, Token{Hash: "abc", Policy: "root", Name: "t", Created: fuzzT0}),
		fuzzCmd(f, TypeObjectRotate, ObjectRotate{ID: "id-a", Version: 2, Material: []byte("v2")}),
		fuzzCmd(f, TypeObjectRotate, ObjectRotate{ID: "id-a", Version: 3, Material: []byte("v3")}),
		fuzzCmd(f, TypeObjectCreate, ObjectCreate{Object: Object{ID: "id-b", Wallet: "w", Name: "b", Type: TypeSymmetricKey, State: "pre-active"}, Material: []byte("v1")}),
		fuzzCmd(f, TypeObjectCreate, ObjectCreate{Object: Object{ID: "id-c", Wallet: "w", Name: "a", Type: TypeSecretData, State: "active"}, Material: []byte("v1")}),
		fuzzCmd(f, TypeObjectCreate, ObjectCreate{Object: Object{ID: "id-d", Wallet: "nope", Name: "d", Type: TypeSecretData, State: "active"}, Material: []byte("v1")}),
		fuzzCmd(f, TypeObjectState, ObjectState{ID: "id-a", To: "deactivated"}),
		fuzzCmd(f, TypeObjectState, ObjectState{ID: "id-a", To: "destroyed"}),
		fuzzCmd(f, TypeObjectAttrs, ObjectAttrs{ID: "id-a", Set: map[string]string{"owner": "dba"}, Delete: []string{"x"}}),
		fuzzCmd(f, TypeKVMetadata, KVMetadataPut{ID: "id-a", CASRequired: true, CustomMetadata: map[string]string{"o": "d"}}),
		fuzzCmd(f, TypeKVMetadataMerge, KVMetadataMerge{ID: "id-a", SetCustomMetadata: true, CustomMetadata: map[string]string{"o": "d"}}),
		fuzzCmd(f, TypeWalletCreate, Wallet{Name: "w"}),
		fuzzCmd(f, TypeWalletDelete, WalletDelete{Name: "w"}),
		fuzzCmd(f, TypeGrant, Grant{Wallet: "w", Endpoint: "db1", Permission: "read"}),
		fuzzCmd(f, TypeGrant, Grant{Wallet: "w", Endpoint: "db1", Permission: "owner"}),
		fuzzCmd(f, TypeEndpointEnroll, EndpointEnroll{Endpoint: Endpoint{Name: "db1"}, TokenHash: "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"}),
		fuzzCmd(f, TypeEndpointRevoke, EndpointRevoke{Name: "db1"}),
		fuzzCmd(f, TypeUserCreate, User{Name: "alice", PasswordHash: "h", Roles: []string{"x"}}),
		fuzzCmd(f, TypeUserUpdate, UserUpdate{Name: "alice"}),
		fuzzCmd(f, TypeUserDelete, UserDelete{Name: "alice"}),
		fuzzCmd(f, TypeTokenRevoke, TokenRevoke{Hash: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}),
		fuzzCmd(f, TypeRestorePoint, RestorePoint{Name: "rp1"}),
		fuzzCmd(f, TypeNodePut, Node{ID: "node-a", RaftAddr: "127.0.0.2:7001", APIURL: "https://127.0.0.2:8200"}),
		fuzzCmd(f, TypeNodeDelete, NodeDelete{ID: "node-a"}),
		fuzzCmd(f, TypeJoinToken, JoinToken{Hash: strings.Repeat("ab", 32), Expires: time.Unix(1900000000, 0)}),
		fuzzCmd(f, TypeJoinTokenUse, JoinTokenUse{Hash: strings.Repeat("ab", 32), Node: "node-b"}),
		fuzzCmd(f, TypeDestinationPut, Destination{Name: "nas", Kind: "dir", Path: "/b"}),
		fuzzCmd(f, TypeDestinationPut, Destination{Name: "x", Kind: "tape"}),
		fuzzCmd(f, TypeDestinationDelete, DestinationDelete{Name: "nas"}),
		fuzzCmd(f, TypeBackupRecord, BackupRecord{ID: "b1", Status: "RUNNING"}),
		fuzzCmd(f, TypeBackupRecord, BackupRecord{ID: "b1", Status: "BOGUS"}),
		fuzzCmd(f, TypeSchedulePut, Schedule{Name: "s", Destination: "nas", Type: "periodic", State: "ACTIVE"}),
		fuzzCmd(f, TypeRecoverySet, Recovery{Generation: 1, Sealed: []byte("sealed")}),
		fuzzCmd(f, TypeRecoverySet, Recovery{Generation: 2, Sealed: []byte("sealed")}),
		fuzzCmd(f, TypeRestoreRelease, RestoreRelease{TakeOver: true}),
		fuzzCmd(f, TypeArchiveProgress, ArchiveProgress{Name: "nas", ArchivedTo: 5}),
		fuzzCmd(f, Type(999), struct{}{}),
		append(fuzzCmd(f, TypeObjectCreate, nil)[:cmdHeader], `{"object":`...),
		{0, 100, 0, 0},
		{},
	}
	for _, s := range seeds {
		f.Add(s)
	}

	// Build the prelude state once; every input starts from a copy of it.
	tmpl := filepath.Join(f.TempDir(), "state.db")
	s, err := Open(tmpl, Options{})
	if err != nil {
		f.Fatal(err)
	}
	var logs []*raft.Log
	for i, d := range prelude {
		logs = append(logs, &raft.Log{Index: uint64(i + 1), Term: 1, Type: raft.LogCommand, Data: d})
	}
	for i, r := range s.ApplyBatch(logs) {
		if e, ok := r.(error); ok {
			f.Fatalf("prelude entry %d: %v", i+1, e)
		}
	}
	if err := s.Close(); err != nil {
		f.Fatal(err)
	}
	tmplBytes, err := os.ReadFile(tmpl)
	if err != nil {
		f.Fatal(err)
	}
	index := uint64(len(prelude) + 1)

	f.Fuzz(func(t *testing.T, data []byte) {
		cmd, err := UnmarshalCommand(data)
		if len(data) < cmdHeader {
			if !errors.Is(err, ErrBadCommand) {
				t.Fatalf("UnmarshalCommand(%d bytes): %v, want ErrBadCommand", len(data), err)
			}
		} else {
			if err != nil {
				t.Fatalf("UnmarshalCommand: %v", err)
			}
			if cmd.Type != Type(binary.BigEndian.Uint16(data)) || !bytes.Equal(cmd.Body, data[cmdHeader:]) || !bytes.Equal(cmd.Marshal(), data) {
				t.Fatalf("UnmarshalCommand does not round-trip: %+v", cmd)
			}
		}

		path := filepath.Join(t.TempDir(), "state.db")
		if err := os.WriteFile(path, tmplBytes, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := Open(path, Options{RetryDelay: 5 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		before := fuzzDump(t, s)

		done := make(chan []any, 1)
		go func() {
			done <- s.ApplyBatch([]*raft.Log{{Index: index, Term: 2, Type: raft.LogCommand, Data: data}})
		}()
		var res []any
		var stuck, unknown string
		deadline := time.After(10 * time.Second)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
	wait:
		for {
			select {
			case res = <-done:
				break wait
			case <-tick.C:
				if h := s.Health(); len(h) > 0 && stuck == "" && unknown == "" {
					if h[0].Component == "upgrade" {
						// A command type of a newer build: the store
						// applies nothing until it is upgraded (or closed).
						unknown = h[0].Error
					} else {
						// The batch failed as if the disk did: ApplyBatch
						// now retries it until the store is closed.
						stuck = fmt.Sprintf("%s write failing: %s", h[0].Component, h[0].Error)
					}
					s.Interrupt()
				}
			case <-deadline:
				stuck = "ApplyBatch did not return within 10s"
				s.Interrupt()
				deadline = nil
			}
		}
		if stuck != "" {
			t.Fatalf("command %q (type %s) is retried forever as an I/O failure instead of getting an error result: %s",
				data, cmd.Type, stuck)
		}
		if len(res) != 1 {
			t.Fatalf("ApplyBatch returned %d results for 1 entry", len(res))
		}
		if unknown != "" {
			if !strings.HasPrefix(cmd.Type.String(), "type-") || !strings.Contains(unknown, ErrUnknownCommand.Error()) ||
				!errors.Is(asErr(res[0]), ErrAbandoned) || s.AppliedIndex() != index-1 {
				t.Fatalf("command %q (type %s) waits for an upgrade: %s; result %v, applied index %d", data, cmd.Type, unknown, res[0], s.AppliedIndex())
			}
			after := fuzzDump(t, s)
			for k, v := range after {
				if before[k] != v {
					t.Fatalf("command %q of an unknown type wrote %q", data, k)
				}
			}
			if len(after) != len(before) {
				t.Fatalf("command %q of an unknown type deleted records", data)
			}
			return
		}
		if got := s.AppliedIndex(); got != index {
			t.Fatalf("applied index %d after applying entry %d", got, index)
		}
		after := fuzzDump(t, s)
		e, isErr := res[0].(error)
		if !isErr {
			return
		}
		if !errors.Is(e, ErrBadCommand) && !errors.Is(e, ErrNotFound) && !errors.Is(e, ErrConflict) && !errors.Is(e, ErrExists) && !errors.Is(e, lifecycle.ErrIllegal) {
			t.Fatalf("error result %v wraps none of the package's errors", e)
		}
		for k, v := range after {
			if bv, ok := before[k]; !ok || bv != v {
				t.Fatalf("command %q failed (%v) but wrote %q = %q (before: %q, present %v)", data, e, k, v, bv, ok)
			}
		}
		for k := range before {
			if _, ok := after[k]; !ok {
				t.Fatalf("command %q failed (%v) but deleted %q", data, e, k)
			}
		}
	})
}
