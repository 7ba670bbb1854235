package vault

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"

	vaultapi "github.com/hashicorp/vault/api"
)

// newVaultClient is HashiCorp's own Go client pointed at the fixture's TLS
// server (trusting its certificate) with token tok.
func newVaultClient(t *testing.T, f *fixture, tok string) *vaultapi.Client {
	t.Helper()
	cfg := vaultapi.DefaultConfig()
	cfg.Address = f.srv.URL
	cfg.HttpClient = f.srv.Client()
	cfg.MaxRetries = 0
	c, err := vaultapi.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(tok)
	return c
}

// TestGoClientKV drives KV v2 through github.com/hashicorp/vault/api.
func TestGoClientKV(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	c := newVaultClient(t, f, f.tokens["ep-manage"])
	kv := c.KVv2("kv")

	s, err := kv.Put(ctx, "app/db", map[string]any{"user": "app", "password": "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	if s.VersionMetadata == nil || s.VersionMetadata.Version != 1 {
		t.Fatalf("put: %+v", s.VersionMetadata)
	}
	if _, err := kv.Put(ctx, "app/db", map[string]any{"user": "app", "password": "n3w"}, vaultapi.WithCheckAndSet(1)); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "app/db", map[string]any{"x": "y"}, vaultapi.WithCheckAndSet(1)); err == nil || !strings.Contains(err.Error(), "check-and-set") {
		t.Fatalf("stale cas: %v", err)
	}
	got, err := kv.Get(ctx, "app/db")
	if err != nil || got.Data["password"] != "n3w" || got.VersionMetadata.Version != 2 {
		t.Fatalf("get: %+v %v", got, err)
	}
	old, err := kv.GetVersion(ctx, "app/db", 1)
	if err != nil || old.Data["password"] != "s3cret" {
		t.Fatalf("get v1: %+v %v", old, err)
	}
	if _, err := kv.Get(ctx, "app/none"); !errors.Is(err, vaultapi.ErrSecretNotFound) {
		t.Fatalf("missing: %v", err)
	}

	if err := kv.PutMetadata(ctx, "app/db", vaultapi.KVMetadataPutInput{CustomMetadata: map[string]any{"owner": "dba"}}); err != nil {
		t.Fatal(err)
	}
	md, err := kv.GetMetadata(ctx, "app/db")
	if err != nil || md.CurrentVersion != 2 || md.OldestVersion != 1 || len(md.Versions) != 2 || md.CustomMetadata["owner"] != "dba" {
		t.Fatalf("metadata: %+v %v", md, err)
	}
	list, err := kv.GetVersionsAsList(ctx, "app/db")
	if err != nil || len(list) != 2 || list[0].Version != 1 {
		t.Fatalf("versions: %+v %v", list, err)
	}

	if err := kv.Delete(ctx, "app/db"); err != nil {
		t.Fatal(err)
	}
	if s, err := kv.Get(ctx, "app/db"); err == nil && s.Data != nil {
		t.Fatalf("read a deleted version: %+v", s)
	}
	if err := kv.Undelete(ctx, "app/db", []int{2}); err != nil {
		t.Fatal(err)
	}
	if got, err := kv.Get(ctx, "app/db"); err != nil || got.Data["password"] != "n3w" {
		t.Fatalf("after undelete: %+v %v", got, err)
	}
	if err := kv.DeleteVersions(ctx, "app/db", []int{1}); err != nil {
		t.Fatal(err)
	}
	if err := kv.Destroy(ctx, "app/db", []int{1}); err != nil {
		t.Fatal(err)
	}
	md, err = kv.GetMetadata(ctx, "app/db")
	if err != nil || !md.Versions["1"].Destroyed || md.Versions["2"].Destroyed {
		t.Fatalf("after destroy: %+v %v", md, err)
	}
	// Destroy without a delete first is refused (two steps).
	if err := kv.Destroy(ctx, "app/db", []int{2}); err == nil {
		t.Fatal("destroyed a live version in one step")
	}

	sec, err := c.Logical().ListWithContext(ctx, "kv/metadata/app")
	if err != nil || sec == nil || len(sec.Data["keys"].([]any)) != 1 || sec.Data["keys"].([]any)[0] != "db" {
		t.Fatalf("list: %+v %v", sec, err)
	}

	// The Go client's view of the mount: version 2.
	if _, err := c.Sys().MountConfigWithContext(ctx, "kv"); err != nil {
		t.Fatalf("mount tune: %v", err)
	}
	mo, err := c.Sys().GetMountWithContext(ctx, "kv")
	if err != nil || mo.Options["version"] != "2" || mo.Type != "kv" {
		t.Fatalf("mount: %+v %v", mo, err)
	}
	self, err := c.Auth().Token().LookupSelfWithContext(ctx)
	if err != nil || self.Data["display_name"] != "endpoint-ep-manage" {
		t.Fatalf("lookup-self: %+v %v", self, err)
	}
	health, err := c.Sys().HealthWithContext(ctx)
	if err != nil || !health.Initialized || health.Sealed {
		t.Fatalf("health: %+v %v", health, err)
	}

	// A read-only endpoint is refused writes with Vault's 403.
	ro := newVaultClient(t, f, f.tokens["ep-read"]).KVv2("kv")
	var re *vaultapi.ResponseError
	if _, err := ro.Put(ctx, "app/db", map[string]any{"a": "b"}); !errors.As(err, &re) || re.StatusCode != 403 {
		t.Fatalf("read-only put: %v", err)
	}
	if got, err := ro.Get(ctx, "app/db"); err != nil || got.Data["user"] != "app" {
		t.Fatalf("read-only get: %+v %v", got, err)
	}
}

// TestGoClientTransit drives Transit through github.com/hashicorp/vault/api.
func TestGoClientTransit(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	c := newVaultClient(t, f, f.tokens["root"])
	l := c.Logical()
	if _, err := l.WriteWithContext(ctx, "transit/keys/orders", map[string]any{"type": "aes256-gcm96"}); err != nil {
		t.Fatal(err)
	}
	pt := base64.StdEncoding.EncodeToString([]byte("order 42"))
	enc, err := l.WriteWithContext(ctx, "transit/encrypt/orders", map[string]any{"plaintext": pt})
	if err != nil {
		t.Fatal(err)
	}
	ct, _ := enc.Data["ciphertext"].(string)
	if !strings.HasPrefix(ct, "vault:v1:") {
		t.Fatalf("ciphertext %q", ct)
	}
	if _, err := l.WriteWithContext(ctx, "transit/keys/orders/rotate", nil); err != nil {
		t.Fatal(err)
	}
	rw, err := l.WriteWithContext(ctx, "transit/rewrap/orders", map[string]any{"ciphertext": ct})
	if err != nil || !strings.HasPrefix(rw.Data["ciphertext"].(string), "vault:v2:") {
		t.Fatalf("rewrap: %+v %v", rw, err)
	}
	for _, ct := range []string{ct, rw.Data["ciphertext"].(string)} {
		dec, err := l.WriteWithContext(ctx, "transit/decrypt/orders", map[string]any{"ciphertext": ct})
		if err != nil || dec.Data["plaintext"] != pt {
			t.Fatalf("decrypt %s: %+v %v", ct[:9], dec, err)
		}
	}
	batch, err := l.WriteWithContext(ctx, "transit/encrypt/orders", map[string]any{
		"batch_input": []map[string]any{{"plaintext": pt, "reference": "r1"}, {"plaintext": pt, "reference": "r2"}}})
	if err != nil {
		t.Fatal(err)
	}
	res := batch.Data["batch_results"].([]any)
	if len(res) != 2 || res[1].(map[string]any)["reference"] != "r2" || !strings.HasPrefix(res[0].(map[string]any)["ciphertext"].(string), "vault:v2:") {
		t.Fatalf("batch: %+v", res)
	}
	key, err := l.ReadWithContext(ctx, "transit/keys/orders")
	if err != nil || fmt.Sprint(key.Data["latest_version"]) != "2" {
		t.Fatalf("key: %+v %v", key, err)
	}
	dk, err := l.WriteWithContext(ctx, "transit/datakey/plaintext/orders", map[string]any{"bits": 256})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := base64.StdEncoding.DecodeString(dk.Data["plaintext"].(string))
	if len(raw) != 32 {
		t.Fatalf("datakey: %d bytes", len(raw))
	}
	dec, err := l.WriteWithContext(ctx, "transit/decrypt/orders", map[string]any{"ciphertext": dk.Data["ciphertext"]})
	if err != nil || dec.Data["plaintext"] != dk.Data["plaintext"] {
		t.Fatalf("datakey decrypt: %+v %v", dec, err)
	}
	// A tampered ciphertext: Vault's 400 with an error message.
	if _, err := l.WriteWithContext(ctx, "transit/decrypt/orders", map[string]any{"ciphertext": "vault:v1:AAAA"}); err == nil {
		t.Fatal("decrypted garbage")
	}
}
