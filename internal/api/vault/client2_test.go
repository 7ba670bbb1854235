package vault

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/service"
	"github.com/coffer-kms/coffer/internal/service/servicetest"
	"github.com/coffer-kms/coffer/internal/tlsutil"
	vaultapi "github.com/hashicorp/vault/api"
)

// withCA gives the service a certificate authority for client certificates.
func withCA(t *testing.T) servicetest.Option {
	tlsDir := filepath.Join(t.TempDir(), "tls")
	if _, err := tlsutil.EnsureGenerated(tlsDir, []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	ca, err := tlsutil.LoadCA(tlsDir)
	if err != nil {
		t.Fatal(err)
	}
	ca.Valid = 24 * time.Hour
	return func(c *service.Config) { c.CertIssuer = ca }
}

// certClient enrols endpoint name with a fresh key pair, grants it perm on
// the fixture's wallets, and returns a Vault client presenting its
// certificate to a TLS server that asks for client certificates.
func certClient(t *testing.T, f *fixture, name string) *vaultapi.Client {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}}, key)
	if err != nil {
		t.Fatal(err)
	}
	enr, err := f.svc.Access.EnrollEndpoint(rootCtx(), name, "", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Access.SetGrant(rootCtx(), "kvw", name, "read_modify"); err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	cert, err := tls.X509KeyPair([]byte(enr.Certificate), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(Handler(f.svc, Options{}))
	srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	hc := srv.Client()
	hc.Transport.(*http.Transport).TLSClientConfig.Certificates = []tls.Certificate{cert}
	cfg := vaultapi.DefaultConfig()
	cfg.Address, cfg.HttpClient, cfg.MaxRetries = srv.URL, hc, 0
	c, err := vaultapi.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.ClearToken()
	return c
}

// TestGoClientCertLogin: auth/cert/login with an enrolled endpoint's
// certificate returns Vault's auth block; the token carries the endpoint's
// grants, names them as policies, and dies with revoke-self.
func TestGoClientCertLogin(t *testing.T) {
	f := newFixture(t, withCA(t))
	ctx := context.Background()
	c := certClient(t, f, "app1")
	sec, err := c.Logical().WriteWithContext(ctx, "auth/cert/login", map[string]any{"name": ""})
	if err != nil {
		t.Fatal(err)
	}
	if sec.Auth == nil || !strings.HasPrefix(sec.Auth.ClientToken, "cof_") || sec.Auth.Accessor == "" ||
		sec.Auth.LeaseDuration <= 0 || sec.Auth.LeaseDuration > 3600 || sec.Auth.Renewable {
		t.Fatalf("auth block: %+v", sec.Auth)
	}
	if strings.Join(sec.Auth.Policies, ",") != "kvw:read_modify" {
		t.Errorf("policies: %v", sec.Auth.Policies)
	}
	if _, err := c.Logical().WriteWithContext(ctx, "auth/cert/login", map[string]any{"name": "someone-else"}); err == nil {
		t.Error("login naming another endpoint succeeded")
	}
	// The token alone (no certificate) works, with the endpoint's grants.
	tc := newVaultClient(t, f, sec.Auth.ClientToken)
	if _, err := tc.KVv2("kv").Put(ctx, "from-login", map[string]any{"a": "b"}); err != nil {
		t.Fatal(err)
	}
	self, err := tc.Auth().Token().LookupSelfWithContext(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ttl, _ := self.TokenTTL(); ttl <= 0 {
		t.Errorf("lookup-self ttl %v", ttl)
	}
	if acc, _ := self.TokenAccessor(); acc != sec.Auth.Accessor {
		t.Errorf("accessor %q, want %q", acc, sec.Auth.Accessor)
	}
	if _, err := tc.Auth().Token().RenewSelfWithContext(ctx, 0); err == nil || !strings.Contains(err.Error(), "not renewable") {
		t.Errorf("renew-self of a login token: %v", err)
	}
	if err := tc.Auth().Token().RevokeSelfWithContext(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := tc.KVv2("kv").Get(ctx, "from-login"); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("after revoke-self: %v", err)
	}
	// A revoked endpoint's login tokens die with it.
	sec, err = c.Logical().WriteWithContext(ctx, "auth/cert/login", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Access.RevokeEndpoint(rootCtx(), "app1"); err != nil {
		t.Fatal(err)
	}
	if _, err := newVaultClient(t, f, sec.Auth.ClientToken).KVv2("kv").Get(ctx, "from-login"); err == nil {
		t.Error("login token outlived its endpoint")
	}
	// Without a certificate there is nothing to log in with.
	if _, err := newVaultClient(t, f, "").Logical().WriteWithContext(ctx, "auth/cert/login", nil); err == nil {
		t.Error("cert login without a certificate succeeded")
	}
}

// TestGoClientCompat drives the newer paths through the Go client: KVv2
// patch, metadata, delete/undelete/destroy, sys/leader, capabilities,
// Transit HMAC and ECDSA signatures, and the UI mount lookup.
func TestGoClientCompat(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	c := newVaultClient(t, f, f.tokens["ep-manage"])
	kv := c.KVv2("kv")
	if _, err := kv.Put(ctx, "p", map[string]any{"a": "1", "b": "2"}); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Patch(ctx, "p", map[string]any{"b": nil, "c": "3"}); err != nil {
		t.Fatal(err)
	}
	got, err := kv.Get(ctx, "p")
	if err != nil || got.VersionMetadata.Version != 2 || got.Data["a"] != "1" || got.Data["c"] != "3" || got.Data["b"] != nil {
		t.Fatalf("after patch: %+v %v", got, err)
	}
	if _, err := kv.Patch(ctx, "p", map[string]any{"d": "4"}, vaultapi.WithMergeMethod(vaultapi.KVMergeMethodReadWrite)); err != nil {
		t.Fatal(err)
	}
	if err := kv.PutMetadata(ctx, "p", vaultapi.KVMetadataPutInput{CustomMetadata: map[string]any{"team": "db"}}); err != nil {
		t.Fatal(err)
	}
	md, err := kv.GetMetadata(ctx, "p")
	if err != nil || md.CurrentVersion != 3 || md.CustomMetadata["team"] != "db" || len(md.Versions) != 3 {
		t.Fatalf("metadata: %+v %v", md, err)
	}
	if err := kv.DeleteVersions(ctx, "p", []int{1}); err != nil {
		t.Fatal(err)
	}
	if v, err := kv.GetVersion(ctx, "p", 1); err == nil && v.Data != nil {
		t.Errorf("deleted version readable: %+v", v)
	}
	if err := kv.Undelete(ctx, "p", []int{1}); err != nil {
		t.Fatal(err)
	}
	if v, err := kv.GetVersion(ctx, "p", 1); err != nil || v.Data["b"] != "2" {
		t.Fatalf("undeleted: %+v %v", v, err)
	}
	if err := kv.DeleteVersions(ctx, "p", []int{1}); err != nil {
		t.Fatal(err)
	}
	if err := kv.Destroy(ctx, "p", []int{1}); err != nil {
		t.Fatal(err)
	}
	if md, _ := kv.GetMetadata(ctx, "p"); !md.Versions["1"].Destroyed {
		t.Errorf("destroyed: %+v", md.Versions["1"])
	}
	ld, err := c.Sys().LeaderWithContext(ctx)
	if err != nil || !ld.IsSelf || ld.HAEnabled {
		t.Fatalf("leader: %+v %v", ld, err)
	}
	caps, err := c.Sys().CapabilitiesSelfWithContext(ctx, "kv/data/p")
	if err != nil || strings.Join(caps, ",") != "create,delete,list,patch,read,update" {
		t.Fatalf("capabilities: %v %v", caps, err)
	}
	l := c.Logical()
	if _, err := l.WriteWithContext(ctx, "transit/keys/h", nil); err != nil {
		t.Fatal(err)
	}
	s, err := l.WriteWithContext(ctx, "transit/hmac/h", map[string]any{"input": "aGk="})
	if err != nil {
		t.Fatal(err)
	}
	v, err := l.WriteWithContext(ctx, "transit/verify/h", map[string]any{"input": "aGk=", "hmac": s.Data["hmac"]})
	if err != nil || v.Data["valid"] != true {
		t.Fatalf("verify: %+v %v", v, err)
	}
	if _, err := l.WriteWithContext(ctx, "transit/keys/signer", map[string]any{"type": "ecdsa-p256"}); err != nil {
		t.Fatal(err)
	}
	sg, err := l.WriteWithContext(ctx, "transit/sign/signer/sha2-256", map[string]any{"input": "aGk="})
	if err != nil {
		t.Fatal(err)
	}
	v, err = l.WriteWithContext(ctx, "transit/verify/signer/sha2-256", map[string]any{"input": "aGk=", "signature": sg.Data["signature"]})
	if err != nil || v.Data["valid"] != true {
		t.Fatalf("verify signature: %+v %v", v, err)
	}
	mounts, err := l.ReadWithContext(ctx, "sys/internal/ui/mounts/kv/p")
	if err != nil || mounts.Data["path"] != "kv/" {
		t.Fatalf("ui mounts: %+v %v", mounts, err)
	}
}

// TestGoClientAppRole: a secret_id issued for an endpoint logs in through
// auth/approle/login with the endpoint's name as role_id, within its use
// limit, until it is revoked or its endpoint is; the token has the
// endpoint's grants.
func TestGoClientAppRole(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	sec, err := f.svc.Access.IssueAppRoleSecret(rootCtx(), "ep-read", 0, 2)
	if err != nil {
		t.Fatal(err)
	}
	if sec.RoleID != "ep-read" || sec.SecretID == "" || sec.Uses != 2 {
		t.Fatalf("issued: %+v", sec)
	}
	c := newVaultClient(t, f, "")
	login := func(role, secret string) (*vaultapi.Secret, error) {
		return c.Logical().WriteWithContext(ctx, "auth/approle/login", map[string]any{"role_id": role, "secret_id": secret})
	}
	if _, err := login("ep-rm", sec.SecretID); err == nil {
		t.Fatal("secret_id accepted with another endpoint's role_id")
	}
	if _, err := login("ep-read", sec.SecretID+"x"); err == nil {
		t.Fatal("wrong secret_id accepted")
	}
	s, err := login("ep-read", sec.SecretID)
	if err != nil {
		t.Fatal(err)
	}
	if s.Auth == nil || strings.Join(s.Auth.Policies, ",") != "kvw:read,tw:read" || s.Auth.LeaseDuration <= 0 {
		t.Fatalf("auth: %+v", s.Auth)
	}
	app := newVaultClient(t, f, s.Auth.ClientToken)
	if _, err := app.KVv2("kv").Put(ctx, "x", map[string]any{"a": "b"}); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("read-only login token wrote: %v", err)
	}
	if _, err := login("ep-read", sec.SecretID); err != nil {
		t.Fatalf("second use: %v", err)
	}
	if _, err := login("ep-read", sec.SecretID); err == nil {
		t.Fatal("a third login with a two-use secret_id succeeded")
	}
	// Revoking the secret ids keeps the endpoint and its login tokens.
	sec2, err := f.svc.Access.IssueAppRoleSecret(rootCtx(), "ep-read", time.Hour, 0)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := f.svc.Access.RevokeAppRoleSecrets(rootCtx(), "ep-read"); err != nil || n != 1 {
		t.Fatalf("revoke: %d %v", n, err)
	}
	if _, err := login("ep-read", sec2.SecretID); err == nil {
		t.Fatal("revoked secret_id accepted")
	}
	// Revoking the endpoint revokes its secret ids.
	sec3, err := f.svc.Access.IssueAppRoleSecret(rootCtx(), "ep-read", time.Hour, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Access.RevokeEndpoint(rootCtx(), "ep-read"); err != nil {
		t.Fatal(err)
	}
	if _, err := login("ep-read", sec3.SecretID); err == nil {
		t.Fatal("secret_id of a revoked endpoint accepted")
	}
	if _, err := f.svc.Access.IssueAppRoleSecret(rootCtx(), "ep-read", time.Hour, 0); err == nil {
		t.Error("secret_id issued for a revoked endpoint")
	}
	// Only key administrators issue secret ids.
	if _, err := f.svc.Access.IssueAppRoleSecret(service.WithIdentity(ctx, service.Identity{Kind: service.KindEndpoint, Name: "ep-manage"}), "ep-manage", time.Hour, 0); err == nil {
		t.Error("an endpoint issued itself a secret_id")
	}
}
