package rest

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coffer-kms/coffer/internal/datadir"
	"github.com/coffer-kms/coffer/internal/keystore"
	"github.com/coffer-kms/coffer/internal/service"
	"github.com/coffer-kms/coffer/internal/service/servicetest"
)

// TestOpenWithDamagedKeystore: opening over a keystore.ks with a flipped
// bit, or cut short, answers what the runbook "A damaged keystore file"
// says the operator sees: keystore.ks corrupt or truncated (503
// keystore_damaged), never a 500 with only an error id, and never "wrong
// passphrase". Auto-open over a damaged file answers the same.
func TestOpenWithDamagedKeystore(t *testing.T) {
	dir := t.TempDir()
	svc := servicetest.New(t, servicetest.DataDir(dir))
	ctx := service.WithIdentity(context.Background(), service.LocalRoot())
	root, err := svc.Init(ctx, service.Identity{Local: true}, []byte("rest-test-passphrase"))
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.EnableAutoOpen(ctx); err != nil {
		t.Fatal(err)
	}
	if err := svc.Seal(ctx); err != nil {
		t.Fatal(err)
	}
	ks := filepath.Join(datadir.KeystoreDir(dir), keystore.FileName)
	good, err := os.ReadFile(ks)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(Handler(svc, Options{}))
	t.Cleanup(srv.Close)
	for _, c := range []struct {
		name, want string
		damage     func([]byte) []byte
	}{
		{"bit flip", "corrupt", func(b []byte) []byte { b[len(b)/2] ^= 0x04; return b }},
		{"truncated", "truncated", func(b []byte) []byte { return b[:len(b)-10] }},
	} {
		if err := os.WriteFile(ks, c.damage(append([]byte(nil), good...)), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, open := range []struct{ tok, body string }{
			{"", `{"passphrase":"rest-test-passphrase"}`},
			{root, `{"auto":true}`},
		} {
			status, eb, raw := do(t, srv, open.tok, "POST", "/api/v1/sys/open", open.body)
			if status != http.StatusServiceUnavailable || eb.Error.Code != "keystore_damaged" ||
				!strings.Contains(raw, keystore.FileName) || !strings.Contains(raw, c.want) || strings.Contains(raw, "wrong passphrase") {
				t.Fatalf("%s: open %s: %d %s", c.name, open.body, status, raw)
			}
		}
	}
	if err := os.WriteFile(ks, good, 0o600); err != nil {
		t.Fatal(err)
	}
	if status, _, raw := do(t, srv, "", "POST", "/api/v1/sys/open", `{"passphrase":"rest-test-passphrase"}`); status != http.StatusOK {
		t.Fatalf("open after the file was put back: %d %s", status, raw)
	}
}
