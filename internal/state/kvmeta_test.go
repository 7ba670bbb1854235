package state

import (
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
)

// TestKVMetadataMergeKeepsUnnamedFields: a kv-metadata-merge changes only
// the settings it names; a kv-metadata entry (older builds) still replaces
// both, so replaying an old log gives what it gave.
func TestKVMetadataMergeKeepsUnnamedFields(t *testing.T) {
	s := openWithWallet(t, filepath.Join(t.TempDir(), "state.db"))
	defer s.Close()
	yes, no := true, false
	steps := []struct {
		typ        Type
		body       any
		wantCAS    bool
		wantCustom map[string]string
	}{
		{TypeKVMetadata, KVMetadataPut{ID: "id-k", CASRequired: true, CustomMetadata: map[string]string{"a": "1"}}, true, map[string]string{"a": "1"}},
		{TypeKVMetadataMerge, KVMetadataMerge{ID: "id-k", CASRequired: &no}, false, map[string]string{"a": "1"}},
		{TypeKVMetadataMerge, KVMetadataMerge{ID: "id-k", SetCustomMetadata: true, CustomMetadata: map[string]string{"b": "2"}}, false, map[string]string{"b": "2"}},
		{TypeKVMetadataMerge, KVMetadataMerge{ID: "id-k", CASRequired: &yes}, true, map[string]string{"b": "2"}},
		{TypeKVMetadataMerge, KVMetadataMerge{ID: "id-k", SetCustomMetadata: true}, true, nil},
		{TypeKVMetadata, KVMetadataPut{ID: "id-k"}, false, nil},
	}
	if r := s.ApplyBatch([]*raft.Log{put(t, 2, "k", 1)}); latest(t, r[0]) != 1 {
		t.Fatalf("put: %v", r[0])
	}
	for i, st := range steps {
		r := s.ApplyBatch([]*raft.Log{cmdLog(t, uint64(3+i), st.typ, st.body)})
		ks, ok := r[0].(KVState)
		if !ok {
			t.Fatalf("step %d: %v", i, r[0])
		}
		m, err := s.KVMetaOf("id-k")
		if err != nil {
			t.Fatal(err)
		}
		if m.CASRequired != st.wantCAS || len(m.CustomMetadata) != len(st.wantCustom) || ks.Meta.CASRequired != st.wantCAS {
			t.Fatalf("step %d: %+v, want cas %v custom %v", i, m, st.wantCAS, st.wantCustom)
		}
		for k, v := range st.wantCustom {
			if m.CustomMetadata[k] != v {
				t.Fatalf("step %d: custom %v, want %v", i, m.CustomMetadata, st.wantCustom)
			}
		}
	}
	// Bad input is a result and changes nothing.
	r := s.ApplyBatch([]*raft.Log{cmdLog(t, 20, TypeKVMetadataMerge, KVMetadataMerge{ID: "missing", CASRequired: &yes})})
	if _, isErr := r[0].(error); !isErr {
		t.Fatalf("merge of a missing object: %v", r[0])
	}
}
