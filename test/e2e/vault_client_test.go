package e2e

import (
	"context"
	"encoding/base64"
	"path/filepath"
	"strings"
	"testing"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/coffer-kms/coffer/client"
)

// TestVaultGoClientRealServer drives the real coffer binary with
// HashiCorp's Go client: mounts declared with Sys().Mount, KV v2 and
// Transit through an endpoint token, data surviving a restart.
func TestVaultGoClientRealServer(t *testing.T) {
	n := initialisedNode(t, filepath.Join(t.TempDir(), "data"), "")
	ctx := context.Background()
	c := n.https()
	for _, w := range []string{"apps", "crypto"} {
		if _, err := c.CreateWallet(ctx, w, ""); err != nil {
			t.Fatal(err)
		}
	}
	newClient := func(tok string) *vaultapi.Client {
		cfg := vaultapi.DefaultConfig()
		cfg.Address = n.url
		cfg.MaxRetries = 0
		if err := cfg.ConfigureTLS(&vaultapi.TLSConfig{CACert: n.caFile}); err != nil {
			t.Fatal(err)
		}
		vc, err := vaultapi.NewClient(cfg)
		if err != nil {
			t.Fatal(err)
		}
		vc.SetToken(tok)
		return vc
	}
	admin := newClient(n.token)
	if err := admin.Sys().MountWithContext(ctx, "secret", &vaultapi.MountInput{Type: "kv", Options: map[string]string{"version": "2", "wallet": "apps"}}); err != nil {
		t.Fatal(err)
	}
	if err := admin.Sys().MountWithContext(ctx, "transit", &vaultapi.MountInput{Type: "transit", Options: map[string]string{"wallet": "crypto"}}); err != nil {
		t.Fatal(err)
	}
	mounts, err := admin.Sys().ListMountsWithContext(ctx)
	if err != nil || mounts["secret/"] == nil || mounts["secret/"].Options["version"] != "2" || mounts["transit/"] == nil {
		t.Fatalf("mounts: %+v %v", mounts, err)
	}

	e, err := c.EnrollEndpoint(ctx, client.EnrollRequest{Name: "app1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"apps", "crypto"} {
		if _, err := c.Grant(ctx, w, "app1", "read_modify"); err != nil {
			t.Fatal(err)
		}
	}
	app := newClient(e.Token)
	kv := app.KVv2("secret")
	if _, err := kv.Put(ctx, "db/creds", map[string]any{"user": "app", "password": "pw-1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "db/creds", map[string]any{"user": "app", "password": "pw-2"}, vaultapi.WithCheckAndSet(1)); err != nil {
		t.Fatal(err)
	}
	enc, err := app.Logical().WriteWithContext(ctx, "transit/encrypt/orders", map[string]any{"plaintext": base64.StdEncoding.EncodeToString([]byte("order 1"))})
	if err != nil {
		t.Fatal(err)
	}
	ct := enc.Data["ciphertext"].(string)

	// The same data through the native API: one object model.
	sec, err := c.GetSecret(ctx, "apps", "db/creds", 1)
	if err != nil || !strings.Contains(string(sec.Value), "pw-1") {
		t.Fatalf("native read of the KV secret: %+v %v", sec, err)
	}

	n.stop()
	n.start()
	n.waitState("open")
	app, admin = newClient(e.Token), newClient(n.token)
	kv = app.KVv2("secret")
	got, err := kv.Get(ctx, "db/creds")
	if err != nil || got.Data["password"] != "pw-2" || got.VersionMetadata.Version != 2 {
		t.Fatalf("after restart: %+v %v", got, err)
	}
	dec, err := app.Logical().WriteWithContext(ctx, "transit/decrypt/orders", map[string]any{"ciphertext": ct})
	if err != nil || dec.Data["plaintext"] != base64.StdEncoding.EncodeToString([]byte("order 1")) {
		t.Fatalf("decrypt after restart: %+v %v", dec, err)
	}
	if h, err := admin.Sys().HealthWithContext(ctx); err != nil || !h.Initialized || h.Sealed {
		t.Fatalf("health: %+v %v", h, err)
	}
	if strings.Contains(n.logs.String(), e.Token) || strings.Contains(n.logs.String(), "pw-2") {
		t.Fatal("a token or a secret value is in the server log")
	}
}
