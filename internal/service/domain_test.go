package service

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/datadir"
	"github.com/coffer-kms/coffer/internal/lifecycle"
	"github.com/coffer-kms/coffer/internal/testutil"
)

func TestObjectTypesAndVersions(t *testing.T) {
	s := initSvc(t, t.TempDir())
	defer s.Close()
	ctx := rootCtx()
	for _, c := range []struct {
		req     CreateObject
		alg     string
		length  int
		checkFn func(m Material) error
	}{
		{CreateObject{Type: TypeSymmetricKey}, "AES", 256, func(m Material) error { return wantLen(m.Value, 32) }},
		{CreateObject{Type: TypeSymmetricKey, Length: 128}, "AES", 128, func(m Material) error { return wantLen(m.Value, 16) }},
		{CreateObject{Type: TypeSymmetricKey, Length: 192}, "AES", 192, func(m Material) error { return wantLen(m.Value, 24) }},
		{CreateObject{Type: TypeSecretData, Value: []byte("tde-master-key")}, "OPAQUE", 14 * 8, func(m Material) error {
			if string(m.Value) != "tde-master-key" {
				return fmt.Errorf("value %q", m.Value)
			}
			return nil
		}},
		{CreateObject{Type: TypeKeyPair, Algorithm: "RSA", Length: 2048}, "RSA", 2048, func(m Material) error {
			k, err := x509.ParsePKCS8PrivateKey(m.Value)
			if err != nil {
				return err
			}
			pub, err := x509.ParsePKIXPublicKey(m.Public)
			if err != nil || !k.(*rsa.PrivateKey).PublicKey.Equal(pub) || k.(*rsa.PrivateKey).N.BitLen() != 2048 {
				return fmt.Errorf("RSA pair does not match: %v", err)
			}
			return nil
		}},
		{CreateObject{Type: TypeKeyPair, Algorithm: "EC", Length: 384}, "EC", 384, func(m Material) error {
			k, err := x509.ParsePKCS8PrivateKey(m.Value)
			if err != nil {
				return err
			}
			if k.(*ecdsa.PrivateKey).Curve.Params().BitSize != 384 {
				return fmt.Errorf("curve %s", k.(*ecdsa.PrivateKey).Curve.Params().Name)
			}
			return nil
		}},
	} {
		c.req.Wallet, c.req.Name = DefaultWallet, fmt.Sprintf("%s-%s-%d", c.req.Type, c.alg, c.length)
		c.req.Attrs = map[string]string{"owner": "dba"}
		o, err := s.Objects.CreateObject(ctx, c.req)
		if err != nil {
			t.Fatalf("%s: %v", c.req.Name, err)
		}
		if o.Algorithm != c.alg || o.Length != c.length || o.State != "active" || o.Latest != 1 || o.Attributes["owner"] != "dba" || len(o.ID) != 36 {
			t.Fatalf("%s: %+v", c.req.Name, o)
		}
		_, m1, err := s.Objects.GetObject(ctx, Ref{Wallet: DefaultWallet, Name: c.req.Name}, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.checkFn(m1); err != nil {
			t.Fatalf("%s: %v", c.req.Name, err)
		}
		var newVal []byte
		if c.req.Type == TypeSecretData {
			newVal = []byte("second")
		}
		r, err := s.Objects.RotateObject(ctx, Ref{ID: o.ID}, newVal)
		if err != nil || r.Latest != 2 || len(r.Versions) != 2 {
			t.Fatalf("%s rotate: %+v %v", c.req.Name, r, err)
		}
		_, m2, err := s.Objects.GetObject(ctx, Ref{ID: o.ID}, 0)
		if err != nil || m2.Version != 2 || bytes.Equal(m1.Value, m2.Value) {
			t.Fatalf("%s: latest after rotate: v%d %v (same material: %v)", c.req.Name, m2.Version, err, bytes.Equal(m1.Value, m2.Value))
		}
		_, old, err := s.Objects.GetObject(ctx, Ref{ID: o.ID}, 1)
		if err != nil || !bytes.Equal(old.Value, m1.Value) {
			t.Fatalf("%s: old version not retrievable: %v", c.req.Name, err)
		}
		if _, _, err := s.Objects.GetObject(ctx, Ref{ID: o.ID}, 3); !errors.Is(err, ErrNotFound) {
			t.Fatalf("%s: version 3: %v", c.req.Name, err)
		}
	}
	// Names are unique within a wallet, not across wallets.
	if _, err := s.Objects.CreateObject(ctx, CreateObject{Wallet: DefaultWallet, Name: "symmetric_key-AES-256", Type: TypeSymmetricKey}); !errors.Is(err, ErrConflict) {
		t.Fatalf("duplicate name: %v", err)
	}
	if _, err := s.Access.CreateWallet(ctx, "other", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Objects.CreateObject(ctx, CreateObject{Wallet: "other", Name: "symmetric_key-AES-256", Type: TypeSymmetricKey}); err != nil {
		t.Fatalf("same name in another wallet: %v", err)
	}
}

func wantLen(b []byte, n int) error {
	if len(b) != n {
		return fmt.Errorf("%d bytes, want %d", len(b), n)
	}
	return nil
}

// TestLifecycleThroughService walks every pair of states through the
// service, checking each transition against the lifecycle table, and that
// destroying erases material but keeps metadata.
func TestLifecycleThroughService(t *testing.T) {
	s := initSvc(t, t.TempDir())
	defer s.Close()
	ctx := rootCtx()
	// How to reach each state from a fresh pre-active object.
	path := map[lifecycle.State][]Transition{
		lifecycle.PreActive:   nil,
		lifecycle.Active:      {Activate},
		lifecycle.Deactivated: {Activate, Deactivate},
		lifecycle.Compromised: {Activate, Revoke},
		lifecycle.Destroyed:   {Activate, Deactivate, Destroy},
	}
	target := map[Transition]lifecycle.State{Activate: lifecycle.Active, Deactivate: lifecycle.Deactivated, Revoke: lifecycle.Compromised, Destroy: lifecycle.Destroyed}
	n := 0
	for _, from := range lifecycle.All {
		for _, tr := range []Transition{Activate, Deactivate, Revoke, Destroy} {
			n++
			o, err := s.Objects.CreateObject(ctx, CreateObject{Wallet: DefaultWallet, Name: fmt.Sprintf("lc-%d", n), Type: TypeSymmetricKey, PreActive: true})
			if err != nil {
				t.Fatal(err)
			}
			for _, step := range path[from] {
				if _, err := s.Objects.ChangeState(ctx, Ref{ID: o.ID}, step, "setup"); err != nil {
					t.Fatalf("reach %s: %s: %v", from, step, err)
				}
			}
			got, err := s.Objects.ChangeState(ctx, Ref{ID: o.ID}, tr, "test")
			legal := lifecycle.Allowed(from, target[tr])
			switch {
			case legal && err != nil:
				t.Errorf("%s --%s--> refused: %v", from, tr, err)
			case legal && got.State != string(target[tr]):
				t.Errorf("%s --%s--> state %s", from, tr, got.State)
			case !legal && !errors.Is(err, ErrState):
				t.Errorf("%s --%s--> %v, want ErrState", from, tr, err)
			}
			after, _ := s.Objects.DescribeObject(ctx, Ref{ID: o.ID})
			if !legal && after.State != string(from) {
				t.Errorf("refused %s --%s--> still changed the state to %s", from, tr, after.State)
			}
		}
	}
	// Destroy: material gone, metadata kept, name still taken.
	o, _ := s.Objects.CreateObject(ctx, CreateObject{Wallet: DefaultWallet, Name: "doomed", Type: TypeSecretData, Value: []byte("destroy-me-123")})
	s.Objects.RotateObject(ctx, Ref{ID: o.ID}, []byte("destroy-me-456"))
	if _, err := s.Objects.ChangeState(ctx, Ref{ID: o.ID}, Destroy, ""); !errors.Is(err, ErrState) || !strings.Contains(err.Error(), "deactivate it") {
		t.Fatalf("destroy of an active object: %v", err)
	}
	s.Objects.ChangeState(ctx, Ref{ID: o.ID}, Deactivate, "retired")
	d, err := s.Objects.ChangeState(ctx, Ref{ID: o.ID}, Destroy, "")
	if err != nil || d.Destroyed == nil || d.Reason != "retired" || !d.Versions[0].Destroyed || !d.Versions[1].Destroyed {
		t.Fatalf("destroy: %+v %v", d, err)
	}
	if _, _, err := s.Objects.GetObject(ctx, Ref{ID: o.ID}, 1); !errors.Is(err, ErrGone) {
		t.Fatalf("get destroyed: %v", err)
	}
	if _, err := s.st.Material(o.ID, 1); err == nil {
		t.Fatal("destroyed material still in the state")
	}
	if _, err := s.Objects.RotateObject(ctx, Ref{ID: o.ID}, []byte("x")); !errors.Is(err, ErrState) {
		t.Fatalf("rotate destroyed: %v", err)
	}
	if _, err := s.Objects.CreateObject(ctx, CreateObject{Wallet: DefaultWallet, Name: "doomed", Type: TypeSecretData, Value: []byte("x")}); !errors.Is(err, ErrConflict) {
		t.Fatalf("name of a destroyed object reused: %v", err)
	}
	s.Close()
	b, _ := os.ReadFile(datadir.StatePath(s.cfg.DataDir))
	if bytes.Contains(b, []byte("destroy-me")) {
		t.Fatal("plaintext in state.db")
	}
}

func TestLocateAndPagination(t *testing.T) {
	s := initSvc(t, t.TempDir())
	defer s.Close()
	ctx := rootCtx()
	s.Access.CreateWallet(ctx, "db", "")
	for i := 0; i < 25; i++ {
		w := DefaultWallet
		if i%5 == 0 {
			w = "db"
		}
		typ, val := TypeSymmetricKey, []byte(nil)
		if i%2 == 1 {
			typ, val = TypeSecretData, []byte("v")
		}
		if _, err := s.Objects.CreateObject(ctx, CreateObject{Wallet: w, Name: fmt.Sprintf("app/key-%02d", i), Type: typ, Value: val,
			Attrs: map[string]string{"tier": fmt.Sprint(i % 3)}, PreActive: i >= 20}); err != nil {
			t.Fatal(err)
		}
	}
	count := func(q Query) int {
		t.Helper()
		n, pages := 0, 0
		for {
			p, err := s.Objects.ListObjects(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			n += len(p.Items)
			pages++
			if p.NextToken == "" {
				return n
			}
			q.PageToken = p.NextToken
		}
	}
	for _, c := range []struct {
		q    Query
		want int
	}{
		{Query{}, 25},
		{Query{Limit: 4}, 25},
		{Query{Wallet: "db"}, 5},
		{Query{Type: TypeSecretData}, 12},
		{Query{State: "pre-active"}, 5},
		{Query{Name: "app/key-1*"}, 10},
		{Query{Name: "app/key-07"}, 1},
		{Query{Attributes: map[string]string{"tier": "0"}}, 9},
		{Query{Wallet: DefaultWallet, Type: TypeSymmetricKey, Attributes: map[string]string{"tier": "1"}, Limit: 1}, 3},
	} {
		if got := count(c.q); got != c.want {
			t.Errorf("%+v: %d objects, want %d", c.q, got, c.want)
		}
	}
}

func TestEndpointPermissions(t *testing.T) {
	s := initSvc(t, t.TempDir())
	defer s.Close()
	ctx := rootCtx()
	s.Access.CreateWallet(ctx, "db", "")
	o, _ := s.Objects.CreateObject(ctx, CreateObject{Wallet: "db", Name: "tde", Type: TypeSymmetricKey})
	other, _ := s.Objects.CreateObject(ctx, CreateObject{Wallet: DefaultWallet, Name: "x", Type: TypeSymmetricKey})
	e, err := s.Access.EnrollEndpoint(ctx, "db1", "primary", nil)
	if err != nil || !strings.HasPrefix(e.Token, TokenPrefix) {
		t.Fatalf("enroll: %v", err)
	}
	id, err := s.Access.Authenticate(e.Token)
	if err != nil || id.Kind != KindEndpoint || id.Name != "db1" {
		t.Fatalf("endpoint token: %+v %v", id, err)
	}
	ep := WithIdentity(context.Background(), id)
	// By id, an object in a wallet without grant looks missing.
	if _, _, err := s.Objects.GetObject(ep, Ref{ID: o.ID}, 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("read without grant: %v", err)
	}
	if _, _, err := s.Objects.GetObject(ep, Ref{Wallet: "db", Name: "tde"}, 0); !errors.Is(err, ErrForbidden) {
		t.Fatalf("read by name without grant: %v", err)
	}
	s.Access.SetGrant(ctx, "db", "db1", PermRead)
	if _, _, err := s.Objects.GetObject(ep, Ref{Wallet: "db", Name: "tde"}, 0); err != nil {
		t.Fatalf("read with grant: %v", err)
	}
	if got, m, err := s.Objects.GetObject(ep, Ref{ID: o.ID}, 0); err != nil || got.ID != o.ID || len(m.Value) != 32 {
		t.Fatalf("read by id with grant: %+v, %d bytes, %v", got, len(m.Value), err)
	}
	if _, _, err := s.Objects.GetObject(ep, Ref{ID: other.ID}, 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("read in another wallet: %v", err)
	}
	if _, _, err := s.Objects.GetObject(ep, Ref{Wallet: DefaultWallet, Name: "nope"}, 0); !errors.Is(err, ErrForbidden) {
		t.Fatalf("probing a wallet without grant must not say what exists: %v", err)
	}
	if _, err := s.Objects.RotateObject(ep, Ref{ID: o.ID}, nil); !errors.Is(err, ErrForbidden) {
		t.Fatalf("rotate with read: %v", err)
	}
	p, _ := s.Objects.ListObjects(ep, Query{})
	if len(p.Items) != 1 || p.Items[0].ID != o.ID {
		t.Fatalf("endpoint list sees %d objects", len(p.Items))
	}
	s.Access.SetGrant(ctx, "db", "db1", PermReadModify)
	if _, err := s.Objects.RotateObject(ep, Ref{ID: o.ID}, nil); err != nil {
		t.Fatalf("rotate with read_modify: %v", err)
	}
	if _, err := s.Objects.ChangeState(ep, Ref{ID: o.ID}, Deactivate, ""); !errors.Is(err, ErrForbidden) {
		t.Fatalf("deactivate with read_modify: %v", err)
	}
	if _, err := s.Access.SetGrant(ep, "db", "db1", PermManage); !errors.Is(err, ErrForbidden) {
		t.Fatalf("endpoint raised its own permission: %v", err)
	}
	if _, err := s.Access.RevokeEndpoint(ctx, "db1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Access.Authenticate(e.Token); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("revoked endpoint token still works: %v", err)
	}
	w, _ := s.Access.GetWallet(ctx, "db")
	if _, ok := w.Grants["db1"]; ok {
		t.Fatal("revoked endpoint keeps its grant")
	}
	// Re-enrolment issues new credentials and starts with no grant.
	e2, err := s.Access.EnrollEndpoint(ctx, "db1", "", nil)
	if err != nil || e2.Token == e.Token {
		t.Fatalf("re-enrol: %v", err)
	}
}

func TestUsersSessionsAndThrottle(t *testing.T) {
	dir := t.TempDir()
	var slept []time.Duration
	s, err := New(testConfig(Config{DataDir: dir, SessionTTL: time.Hour,
		Sleep: func(_ context.Context, d time.Duration) error { slept = append(slept, d); return nil }}))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Init(rootCtx(), local, []byte(pass)); err != nil {
		t.Fatal(err)
	}
	ctx := rootCtx()
	if _, err := s.Access.CreateUser(ctx, "alice", "correct horse battery", []Role{RoleKeyAdmin, RoleKeyAdmin}); err != nil {
		t.Fatal(err)
	}
	u, _ := s.Access.GetUser(ctx, "alice")
	if len(u.Roles) != 1 {
		t.Fatalf("roles not deduplicated: %v", u.Roles)
	}
	raw, _ := s.st.User("alice")
	if !strings.HasPrefix(raw.PasswordHash, "$argon2id$v=19$") || strings.Contains(raw.PasswordHash, "correct horse") {
		t.Fatalf("password stored as %q", raw.PasswordHash)
	}
	sess, err := s.Access.Login(context.Background(), "alice", "correct horse battery", "10.0.0.1:5555")
	if err != nil || sess.Expires.Before(time.Now().Add(59*time.Minute)) {
		t.Fatalf("login: %+v %v", sess, err)
	}
	id, err := s.Access.Authenticate(sess.Token)
	if err != nil || id.Kind != KindUser || !id.Has(RoleKeyAdmin) || id.Has(RoleSystemAdmin) {
		t.Fatalf("session identity: %+v %v", id, err)
	}
	// Roles are read at each request: a change applies at once.
	s.Access.UpdateUser(ctx, "alice", UserChange{Roles: &[]Role{RoleAuditManager}})
	if id, _ := s.Access.Authenticate(sess.Token); id.Has(RoleKeyAdmin) || !id.Has(RoleAuditManager) {
		t.Fatalf("roles after change: %v", id.Roles)
	}
	// Failed logins: the first three are free, then each waits longer.
	for i := 0; i < 6; i++ {
		if _, err := s.Access.Login(context.Background(), "alice", "wrong password!", "10.0.0.1:5555"); !errors.Is(err, ErrUnauthenticated) {
			t.Fatalf("wrong password: %v", err)
		}
	}
	want := []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second}
	if fmt.Sprint(slept) != fmt.Sprint(want) {
		t.Fatalf("throttle delays %v, want %v", slept, want)
	}
	// Guesses from one address do not slow the user down at another.
	slept = nil
	if _, err := s.Access.Login(context.Background(), "alice", "correct horse battery", "10.0.0.7:1"); err != nil || len(slept) != 0 {
		t.Fatalf("login from another address after guesses elsewhere: %v, delays %v", err, slept)
	}
	// The guessing address still waits, also for another user...
	if _, err := s.Access.Login(context.Background(), "bob", "wrong password!", "10.0.0.1:5556"); !errors.Is(err, ErrUnauthenticated) || len(slept) != 1 {
		t.Fatalf("another user from the guessing address: %v, delays %v", err, slept)
	}
	// ...and a success there clears alice's count at that address.
	slept = nil
	if _, err := s.Access.Login(context.Background(), "alice", "correct horse battery", "10.0.0.1:5557"); err != nil || len(slept) != 1 {
		t.Fatalf("login at the guessing address: %v, delays %v", err, slept)
	}
	slept = nil
	if _, err := s.Access.Login(context.Background(), "alice", "wrong password!", "10.0.0.1:5558"); !errors.Is(err, ErrUnauthenticated) || len(slept) != 1 || slept[0] >= 8*time.Second {
		t.Fatalf("after a success: %v, delays %v (the address's count remains, alice's is cleared)", err, slept)
	}
	// Unknown users are throttled too and get the same answer.
	_, err = s.Access.Login(context.Background(), "mallory", "whatever-pw", "10.0.0.9:1")
	if !errors.Is(err, ErrUnauthenticated) || strings.Contains(err.Error(), "mallory") {
		t.Fatalf("unknown user: %v", err)
	}
	// A password change ends existing sessions; so does disabling.
	if _, err := s.Access.Login(context.Background(), "alice", "correct horse battery", "10.0.0.2:1"); err != nil {
		t.Fatal(err)
	}
	np := "another long password"
	s.Access.UpdateUser(ctx, "alice", UserChange{Password: &np})
	if _, err := s.Access.Authenticate(sess.Token); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("session survived a password change: %v", err)
	}
	// A user changes its own password only with the old one.
	sess2, _ := s.Access.Login(context.Background(), "alice", np, "10.0.0.2:1")
	id2, _ := s.Access.Authenticate(sess2.Token)
	self := WithIdentity(context.Background(), id2)
	bad, good := "not it at all", np
	np2 := "yet another password"
	if _, err := s.Access.UpdateUser(self, "alice", UserChange{Password: &np2, OldPassword: &bad}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("self change with a wrong old password: %v", err)
	}
	if _, err := s.Access.UpdateUser(self, "alice", UserChange{Password: &np2, OldPassword: &good}); err != nil {
		t.Fatalf("self change: %v", err)
	}
	if _, err := s.Access.UpdateUser(self, "alice", UserChange{Roles: &[]Role{RoleSystemAdmin}}); !errors.Is(err, ErrForbidden) {
		t.Fatalf("self promotion: %v", err)
	}
	// Logout ends the session.
	sess3, _ := s.Access.Login(context.Background(), "alice", np2, "10.0.0.2:1")
	id3, _ := s.Access.Authenticate(sess3.Token)
	if err := s.Access.Logout(WithIdentity(context.Background(), id3)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Access.Authenticate(sess3.Token); !errors.Is(err, ErrUnauthenticated) {
		t.Fatal("session survived logout")
	}
	if err := s.Access.DeleteUser(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
}

func TestSessionExpires(t *testing.T) {
	var clock testutil.Clock
	s := newSvcWith(t, testConfig(Config{DataDir: t.TempDir(), SessionTTL: time.Hour, Now: clock.Now}))
	defer s.Close()
	ctx := rootCtx()
	if _, err := s.Init(ctx, local, []byte(pass)); err != nil {
		t.Fatal(err)
	}
	s.Access.CreateUser(ctx, "bob", "bobs password", []Role{RoleSystemAdmin})
	sess, err := s.Access.Login(context.Background(), "bob", "bobs password", "x:1")
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(59 * time.Minute)
	if _, err := s.Access.Authenticate(sess.Token); err != nil {
		t.Fatalf("session before its expiry: %v", err)
	}
	clock.Advance(time.Minute)
	if _, err := s.Access.Authenticate(sess.Token); !errors.Is(err, ErrUnauthenticated) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired session: %v", err)
	}
}

func TestAuditRecordsRequests(t *testing.T) {
	dir := t.TempDir()
	s := initSvc(t, dir)
	defer s.Close()
	c := &Call{Identity: LocalRoot(), Transport: "rest", Source: "127.0.0.1:9", Start: time.Now()}
	ctx := WithCall(context.Background(), c)
	o, err := s.Objects.CreateObject(ctx, CreateObject{Wallet: DefaultWallet, Name: "audited", Type: TypeSecretData, Value: []byte("never-in-audit-42")})
	if err != nil {
		t.Fatal(err)
	}
	s.Audit(c, "createObject", 201, "ok", "")
	recs, err := s.AuditRecords(rootCtx(), 1, 100)
	if err != nil || len(recs) != 1 {
		t.Fatalf("records %d %v", len(recs), err)
	}
	r := recs[0]
	if r.Actor != "local" || r.Operation != "createObject" || len(r.Objects) != 1 || r.Objects[0] != o.ID || r.Source != "127.0.0.1:9" || r.Status != 201 {
		t.Fatalf("record %+v", r)
	}
	if _, err := s.VerifyAudit(rootCtx()); err != nil {
		t.Fatal(err)
	}
	s.Close()
	files, _ := filepath.Glob(filepath.Join(datadir.AuditDir(dir), "*"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		if bytes.Contains(b, []byte("never-in-audit-42")) {
			t.Fatalf("secret in %s", f)
		}
	}
}

// TestAuditTailLostAtOpen: after a power loss the audit log may end before
// audit.head; the node still starts, keeps the old head as evidence, warns,
// and the chain verifies again from there.
func TestAuditTailLostAtOpen(t *testing.T) {
	dir := t.TempDir()
	s := initSvc(t, dir)
	for i := 0; i < 5; i++ {
		s.Audit(&Call{Identity: LocalRoot(), Start: time.Now()}, fmt.Sprintf("op%d", i), 200, "ok", "")
	}
	s.Close()
	files, _ := filepath.Glob(filepath.Join(datadir.AuditDir(dir), "audit-*.log"))
	b, _ := os.ReadFile(files[len(files)-1])
	lines := bytes.SplitAfter(bytes.TrimSuffix(b, []byte("\n")), []byte("\n"))
	os.WriteFile(files[len(files)-1], bytes.Join(lines[:len(lines)-2], nil), 0o600) // the last two records are gone
	s = newSvc(t, dir)
	defer s.Close()
	st := s.Status()
	st.Warnings = notDisk(st.Warnings)
	if len(st.Warnings) != 1 || !strings.Contains(st.Warnings[0].Message, "lost at the end") {
		t.Fatalf("warnings %+v", st.Warnings)
	}
	kept, _ := filepath.Glob(filepath.Join(datadir.AuditDir(dir), "audit.head.lost-tail-*"))
	if len(kept) != 1 {
		t.Fatalf("old head not kept: %v", kept)
	}
	s.Audit(&Call{Identity: LocalRoot(), Start: time.Now()}, "after", 200, "ok", "")
	if rep, err := s.VerifyAudit(rootCtx()); err != nil || rep.LastSeq != 5 {
		t.Fatalf("verify after repair: %+v %v", rep, err)
	}
	recs, _ := s.AuditRecords(rootCtx(), 4, 10)
	if len(recs) != 2 || recs[0].Operation != "auditTailLost" || !strings.Contains(recs[0].Error, "records 4 to 5 were lost") {
		t.Fatalf("the repair is not recorded in the chain: %+v", recs)
	}
	// The warning stays across restarts until the kept head is removed.
	s.Close()
	s = newSvc(t, dir)
	if len(notDisk(s.Status().Warnings)) != 1 {
		t.Fatal("warning gone after a restart")
	}
	s.Close()
	os.Remove(kept[0])
	s = newSvc(t, dir)
	if len(notDisk(s.Status().Warnings)) != 0 {
		t.Fatal("warning still there after the kept head was removed")
	}
}

// TestAuditLogDeletedRefusesStart: deleting every log file is not what a
// power loss does: the start is refused, nothing is repaired.
func TestAuditLogDeletedRefusesStart(t *testing.T) {
	dir := t.TempDir()
	s := initSvc(t, dir)
	s.Audit(&Call{Identity: LocalRoot(), Start: time.Now()}, "op", 200, "ok", "")
	s.Close()
	files, _ := filepath.Glob(filepath.Join(datadir.AuditDir(dir), "audit-*.log"))
	for _, f := range files {
		os.Remove(f)
	}
	if _, err := New(testConfig(Config{DataDir: dir})); err == nil || !strings.Contains(err.Error(), "audit") {
		t.Fatalf("start with the audit log deleted: %v", err)
	}
}

func TestRecoveryPassphrase(t *testing.T) {
	s := initSvc(t, t.TempDir())
	defer s.Close()
	ctx := rootCtx()
	if st, err := s.Recovery(ctx); err != nil || st.Set {
		t.Fatalf("fresh: %+v %v", st, err)
	}
	if _, err := s.SetRecoveryPassphrase(ctx, nil, []byte("short")); !errors.Is(err, ErrPassphraseLength) {
		t.Fatalf("short: %v", err)
	}
	var hooked []string
	h := func(why string) { hooked = append(hooked, why) }
	s.keyChangeHook.Store(&h)
	st, err := s.SetRecoveryPassphrase(ctx, nil, []byte("recovery-pass-1"))
	if err != nil || st.Generation != 1 || st.Label != "recovery-1" {
		t.Fatalf("set: %+v %v", st, err)
	}
	if _, err := s.SetRecoveryPassphrase(ctx, []byte("not-it-at-all"), []byte("recovery-pass-2")); !errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("change with a wrong old passphrase: %v", err)
	}
	if st, err := s.SetRecoveryPassphrase(ctx, []byte("recovery-pass-1"), []byte("recovery-pass-2")); err != nil || st.Generation != 2 {
		t.Fatalf("change: %+v %v", st, err)
	}
	s.mu.RLock()
	got, err := s.recoveryLocked()
	s.mu.RUnlock()
	if err != nil || string(got) != "recovery-pass-2" {
		t.Fatalf("current: %v", err)
	}
	if len(hooked) != 2 {
		t.Fatalf("backups not triggered after the changes: %v", hooked)
	}
	raw, _ := s.st.Recovery()
	if bytes.Contains(raw.Sealed, []byte("recovery-pass")) {
		t.Fatal("recovery passphrase stored in the clear")
	}
}

// TestLoginRacingPasswordChange: a login checked against the old password
// while the password changes must not leave a working session.
func TestLoginRacingPasswordChange(t *testing.T) {
	s := initSvc(t, t.TempDir())
	defer s.Close()
	s.cfg.Sleep = func(context.Context, time.Duration) error { return nil } // failures after the change are throttled
	ctx := rootCtx()
	s.Access.CreateUser(ctx, "carol", "old password!", []Role{RoleKeyAdmin})
	var tokens []string
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			sess, err := s.Access.Login(context.Background(), "carol", "old password!", fmt.Sprintf("10.1.0.%d:1", i))
			if err == nil {
				mu.Lock()
				tokens = append(tokens, sess.Token)
				mu.Unlock()
			}
		}(i)
	}
	np := "new password!!"
	if _, err := s.Access.UpdateUser(ctx, "carol", UserChange{Password: &np}); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for _, tok := range tokens {
		if _, err := s.Access.Authenticate(tok); err == nil {
			t.Fatal("a session granted on the old password survived the change")
		}
	}
	// Disabling ends a live session too.
	sess, err := s.Access.Login(context.Background(), "carol", np, "10.2.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	yes := true
	s.Access.UpdateUser(ctx, "carol", UserChange{Disabled: &yes})
	if _, err := s.Access.Authenticate(sess.Token); err == nil {
		t.Fatal("session survived disabling the account")
	}
}

// TestConcurrentRotations: concurrent rotations of one object all succeed
// with distinct, contiguous versions.
func TestConcurrentRotations(t *testing.T) {
	s := initSvc(t, t.TempDir())
	defer s.Close()
	ctx := rootCtx()
	o, _ := s.Objects.CreateObject(ctx, CreateObject{Wallet: DefaultWallet, Name: "hot", Type: TypeSymmetricKey})
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for i := 0; i < 32; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Objects.RotateObject(ctx, Ref{ID: o.ID}, nil); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("rotation failed: %v", err)
	}
	got, _ := s.Objects.DescribeObject(ctx, Ref{ID: o.ID})
	if got.Latest != 33 || len(got.Versions) != 33 {
		t.Fatalf("latest %d with %d versions, want 33", got.Latest, len(got.Versions))
	}
}

// TestThrottleSerialisesParallelGuesses: parallel wrong guesses for one
// user from one address (many connections) wait in turn, each longer,
// instead of sharing one delay.
func TestThrottleSerialisesParallelGuesses(t *testing.T) {
	var mu sync.Mutex
	var total time.Duration
	s, err := New(testConfig(Config{DataDir: t.TempDir(), Sleep: func(_ context.Context, d time.Duration) error { mu.Lock(); total += d; mu.Unlock(); return nil }}))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Init(rootCtx(), local, []byte(pass))
	s.Access.CreateUser(rootCtx(), "dave", "daves password", []Role{RoleKeyAdmin})
	var wg sync.WaitGroup
	for i := 0; i < 12; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			s.Access.Login(context.Background(), "dave", fmt.Sprintf("guess %d!!", i), fmt.Sprintf("10.3.0.1:%d", 1000+i))
		}(i)
	}
	wg.Wait()
	// Guesses 4..12 wait 0.25+0.5+1+2+4+8+8+8+8 s.
	if want := 39750 * time.Millisecond; total != want {
		t.Fatalf("parallel guesses waited %s in total, want %s", total, want)
	}
}

func TestPaginationVisitsEachObjectOnce(t *testing.T) {
	s := initSvc(t, t.TempDir())
	defer s.Close()
	ctx := rootCtx()
	for i := 0; i < 12; i++ {
		s.Objects.CreateObject(ctx, CreateObject{Wallet: DefaultWallet, Name: fmt.Sprintf("p%02d", i), Type: TypeSymmetricKey})
	}
	for _, limit := range []int{1, 4, 5, 12, 13} {
		seen := map[string]bool{}
		q := Query{Limit: limit}
		pages := 0
		for {
			p, err := s.Objects.ListObjects(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			pages++
			for _, o := range p.Items {
				if seen[o.ID] {
					t.Fatalf("limit %d: %s listed twice", limit, o.Name)
				}
				seen[o.ID] = true
			}
			if p.NextToken == "" {
				break
			}
			q.PageToken = p.NextToken
		}
		if want := (12 + limit - 1) / limit; len(seen) != 12 || pages != want {
			t.Errorf("limit %d: %d objects in %d pages, want 12 in %d", limit, len(seen), pages, want)
		}
	}
}

// TestAuditRecordStaysBounded: a request cannot make its own audit record
// too big to write (and so escape the audit).
func TestAuditRecordStaysBounded(t *testing.T) {
	s := initSvc(t, t.TempDir())
	defer s.Close()
	c := &Call{Identity: LocalRoot(), Start: time.Now(), Source: strings.Repeat("<", 100000)}
	ctx := WithCall(context.Background(), c)
	s.Access.Login(ctx, strings.Repeat("<", 900000), "x", "1.2.3.4:5")
	for i := 0; i < 100; i++ {
		c.Note(strings.Repeat("<", 10000))
	}
	s.Audit(c, "login", 401, "unauthenticated", strings.Repeat("e", 100000))
	if s.AuditFailures() != 0 {
		t.Fatal("the audit record was not written")
	}
	recs, _ := s.AuditRecords(rootCtx(), 1, 10)
	if len(recs) != 1 || len(recs[0].Objects) != 32 || recs[0].Objects[0] != "user:(invalid name)" {
		t.Fatalf("record %+v", recs)
	}
}

// notDisk leaves out the warnings about how full this machine's disks are,
// which depend on the machine running the test, not on the test.
func notDisk(ws []Alert) []Alert {
	var out []Alert
	for _, w := range ws {
		if w.Code != AlertDiskFilling && w.Code != AlertDestinationFull {
			out = append(out, w)
		}
	}
	return out
}
