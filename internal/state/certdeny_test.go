package state

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

// TestEndpointRenewDenies: renewing an endpoint's certificate keeps its
// token and grants, moves the old certificate to the deny-list and the new
// one into use; revoking denies the current one; a revoked endpoint cannot
// be renewed.
func TestEndpointRenewDenies(t *testing.T) {
	s := openWithWallet(t, filepath.Join(t.TempDir(), "state.db"))
	defer s.Close()
	fpOld, fpNew := strings.Repeat("1", 64), strings.Repeat("2", 64)
	tok := strings.Repeat("3", 64)
	res := func(idx uint64, typ Type, body any) any {
		t.Helper()
		return s.ApplyBatch([]*raft.Log{cmdLog(t, idx, typ, body)})[0]
	}
	if r, ok := res(2, TypeEndpointEnroll, EndpointEnroll{Endpoint: Endpoint{Name: "app", CertFingerprint: fpOld}, TokenHash: tok}).(error); ok {
		t.Fatal(r)
	}
	if r, ok := res(3, TypeGrant, Grant{Wallet: "w", Endpoint: "app", Permission: "read"}).(error); ok {
		t.Fatal(r)
	}
	if s.CertDenied(fpOld) {
		t.Fatal("an enrolled certificate is denied")
	}
	if r, ok := res(4, TypeEndpointRenew, EndpointRenew{Name: "app", CertFingerprint: fpNew}).(error); ok {
		t.Fatal(r)
	}
	if !s.CertDenied(fpOld) || s.CertDenied(fpNew) {
		t.Fatalf("after renewal: old denied %v, new denied %v", s.CertDenied(fpOld), s.CertDenied(fpNew))
	}
	if _, err := s.EndpointByCert(fpOld); err == nil {
		t.Fatal("the replaced certificate still names the endpoint")
	}
	if e, err := s.EndpointByCert(fpNew); err != nil || e.Name != "app" {
		t.Fatalf("the new certificate: %+v %v", e, err)
	}
	if tk, err := s.TokenByHash(tok); err != nil || tk.Subject != "app" {
		t.Fatalf("the token after renewal: %+v %v", tk, err)
	}
	w, err := s.Wallet("w")
	if err != nil || w.Grants["app"] != "read" {
		t.Fatalf("the grant after renewal: %+v %v", w.Grants, err)
	}
	if r, ok := res(5, TypeEndpointRenew, EndpointRenew{Name: "app", CertFingerprint: fpOld}).(error); !ok || !errors.Is(r, ErrExists) {
		t.Fatalf("renewing back to a denied certificate: %v, want refused", r)
	}
	if r, ok := res(6, TypeEndpointRevoke, EndpointRevoke{Name: "app"}).(error); ok {
		t.Fatal(r)
	}
	if !s.CertDenied(fpNew) {
		t.Fatal("revoking did not deny the endpoint's certificate")
	}
	if r, ok := res(7, TypeEndpointRenew, EndpointRenew{Name: "app", CertFingerprint: strings.Repeat("4", 64)}).(error); !ok || !errors.Is(r, ErrConflict) {
		t.Fatalf("renewing a revoked endpoint: %v, want a conflict", r)
	}
}
