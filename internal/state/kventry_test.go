package state

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

// TestKVEntry: the object, its KV metadata and the sealed material of the
// version asked for (the latest for 0) come from one read; a version
// without material is nil, a missing name ObjectByName's error.
func TestKVEntry(t *testing.T) {
	s := openWithWallet(t, filepath.Join(t.TempDir(), "state.db"))
	defer s.Close()
	res := s.ApplyBatch([]*raft.Log{put(t, 2, "a", 1),
		cmdLog(t, 3, TypeObjectRotate, ObjectRotate{ID: "id-a", Version: 2, Material: []byte("sealed-2")})})
	for i, r := range res {
		if e, ok := r.(error); ok {
			t.Fatalf("entry %d: %v", i, e)
		}
	}
	for _, c := range []struct {
		material bool
		version  uint64
		want     string
	}{
		{true, 0, "sealed-2"}, {true, 2, "sealed-2"}, {true, 1, "sealed"}, {true, 9, ""}, {false, 0, ""},
	} {
		o, _, sealed, err := s.KVEntry("w", "a", c.material, c.version)
		if err != nil || o.ID != "id-a" || o.Latest != 2 || string(sealed) != c.want || (c.want == "") != (sealed == nil) {
			t.Errorf("KVEntry(material %v, version %d) = object %q latest %d, sealed %q, %v; want %q", c.material, c.version, o.ID, o.Latest, sealed, err, c.want)
		}
	}
	o, _, sealed, err := s.KVEntry("w", "missing", true, 0)
	if !errors.Is(err, ErrNotFound) || o.ID != "" || sealed != nil {
		t.Fatalf("missing name: object %q, sealed %q, %v", o.ID, sealed, err)
	}
}

// TestTokenAndEndpoint: an endpoint's token comes with its endpoint; other
// tokens without; a missing hash is ErrNotFound.
func TestTokenAndEndpoint(t *testing.T) {
	hashApp, hashRoot := strings.Repeat("a", 64), strings.Repeat("b", 64)
	s := openWithWallet(t, filepath.Join(t.TempDir(), "state.db"))
	defer s.Close()
	res := s.ApplyBatch([]*raft.Log{
		cmdLog(t, 2, TypeEndpointEnroll, EndpointEnroll{Endpoint: Endpoint{Name: "app"}, TokenHash: hashApp}),
		cmdLog(t, 3, TypeTokenCreate, Token{Hash: hashRoot, Kind: TokenRoot, Name: "root"}),
	})
	for i, r := range res {
		if e, ok := r.(error); ok {
			t.Fatalf("entry %d: %v", i, e)
		}
	}
	tok, e, ok, err := s.TokenAndEndpoint(hashApp)
	if err != nil || !ok || tok.Kind != TokenEndpoint || tok.Subject != "app" || e.Name != "app" || e.State != "active" {
		t.Fatalf("endpoint token: %+v, endpoint %+v (%v), %v", tok, e, ok, err)
	}
	tok, e, ok, err = s.TokenAndEndpoint(hashRoot)
	if err != nil || ok || tok.Kind != TokenRoot || e.Name != "" {
		t.Fatalf("root token: %+v, endpoint %+v (%v), %v", tok, e, ok, err)
	}
	if _, _, _, err := s.TokenAndEndpoint("nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing token: %v", err)
	}
}

// TestWalletGrant: an endpoint's grant on a wallet, "" without one, and
// ErrNotFound for a wallet that does not exist.
func TestWalletGrant(t *testing.T) {
	s := openWithWallet(t, filepath.Join(t.TempDir(), "state.db"))
	defer s.Close()
	res := s.ApplyBatch([]*raft.Log{
		cmdLog(t, 2, TypeEndpointEnroll, EndpointEnroll{Endpoint: Endpoint{Name: "app"}, TokenHash: strings.Repeat("a", 64)}),
		cmdLog(t, 3, TypeGrant, Grant{Wallet: "w", Endpoint: "app", Permission: "read"}),
	})
	for i, r := range res {
		if e, ok := r.(error); ok {
			t.Fatalf("entry %d: %v", i, e)
		}
	}
	for _, c := range []struct{ endpoint, want string }{{"app", "read"}, {"other", ""}} {
		for range 2 { // the second read is served from the decode cache
			if g, err := s.WalletGrant("w", c.endpoint); err != nil || g != c.want {
				t.Fatalf("grant of %s: %q, %v; want %q", c.endpoint, g, err, c.want)
			}
		}
	}
	if _, err := s.WalletGrant("nope", "app"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing wallet: %v", err)
	}
}

// TestObjectWithMaterial: an object by id and the sealed material of the
// version asked for (the latest for 0), nil for a version without.
func TestObjectWithMaterial(t *testing.T) {
	s := openWithWallet(t, filepath.Join(t.TempDir(), "state.db"))
	defer s.Close()
	res := s.ApplyBatch([]*raft.Log{put(t, 2, "a", 1),
		cmdLog(t, 3, TypeObjectRotate, ObjectRotate{ID: "id-a", Version: 2, Material: []byte("sealed-2")})})
	for i, r := range res {
		if e, ok := r.(error); ok {
			t.Fatalf("entry %d: %v", i, e)
		}
	}
	for _, c := range []struct {
		version uint64
		want    string
	}{{0, "sealed-2"}, {1, "sealed"}, {3, ""}} {
		o, sealed, err := s.ObjectWithMaterial("id-a", c.version)
		if err != nil || o.Name != "a" || string(sealed) != c.want || (c.want == "") != (sealed == nil) {
			t.Errorf("version %d: object %q, sealed %q, %v; want %q", c.version, o.Name, sealed, err, c.want)
		}
	}
	if _, _, err := s.ObjectWithMaterial("id-none", 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing object: %v", err)
	}
}

// TestObjectMaterialGrant: the object, its sealed material and an
// endpoint's grant on its wallet, as ObjectWithMaterial and WalletGrant
// give them apart.
func TestObjectMaterialGrant(t *testing.T) {
	s := openWithWallet(t, filepath.Join(t.TempDir(), "state.db"))
	defer s.Close()
	res := s.ApplyBatch([]*raft.Log{put(t, 2, "a", 1),
		cmdLog(t, 3, TypeObjectRotate, ObjectRotate{ID: "id-a", Version: 2, Material: []byte("sealed-2")}),
		cmdLog(t, 4, TypeEndpointEnroll, EndpointEnroll{Endpoint: Endpoint{Name: "app"}, TokenHash: strings.Repeat("a", 64)}),
		cmdLog(t, 5, TypeGrant, Grant{Wallet: "w", Endpoint: "app", Permission: "read"}),
	})
	for i, r := range res {
		if e, ok := r.(error); ok {
			t.Fatalf("entry %d: %v", i, e)
		}
	}
	for _, c := range []struct {
		version       uint64
		endpoint      string
		sealed, grant string
	}{{0, "app", "sealed-2", "read"}, {1, "app", "sealed", "read"}, {3, "other", "", ""}} {
		o, sealed, grant, gerr, err := s.ObjectMaterialGrant("id-a", c.version, c.endpoint)
		if err != nil || gerr != nil || o.Name != "a" || string(sealed) != c.sealed || (c.sealed == "") != (sealed == nil) || grant != c.grant {
			t.Errorf("version %d, %s: object %q, sealed %q, grant %q, %v, %v; want %q, %q", c.version, c.endpoint, o.Name, sealed, grant, gerr, err, c.sealed, c.grant)
		}
	}
	if _, _, _, _, err := s.ObjectMaterialGrant("id-none", 0, "app"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing object: %v", err)
	}
}
