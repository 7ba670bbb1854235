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
	"github.com/coffer-kms/coffer/internal/journal"
	"github.com/coffer-kms/coffer/internal/service"
	"github.com/coffer-kms/coffer/internal/service/servicetest"
)

// TestOpenWithDamagedJournal: opening with the passphrase over a journal the
// open refuses answers 503 unavailable with what to do (not 500 internal,
// and nothing about the passphrase); once the damaged segment is moved
// aside, as the answer says, the open rebuilds its records and succeeds.
func TestOpenWithDamagedJournal(t *testing.T) {
	dir := t.TempDir()
	svc := servicetest.New(t, servicetest.DataDir(dir))
	ctx := service.WithIdentity(context.Background(), service.LocalRoot())
	if _, err := svc.Init(ctx, service.Identity{Local: true}, []byte("rest-test-passphrase")); err != nil {
		t.Fatal(err)
	}
	for i, name := range []string{"a", "b", "c"} {
		if _, err := svc.Objects.PutSecret(ctx, service.DefaultWallet, name, []byte("v")); err != nil {
			t.Fatal(err)
		}
		if i < 2 {
			if _, err := svc.RotateJournal(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := svc.Seal(ctx); err != nil {
		t.Fatal(err)
	}
	segs, err := journal.ListSegments(datadir.JournalDir(dir))
	if err != nil || len(segs) != 3 {
		t.Fatalf("segments %+v: %v", segs, err)
	}
	// The footer of the middle segment, which the open reads.
	mid := segs[1]
	b, _ := os.ReadFile(mid.Path)
	b[len(b)-3] ^= 0x10
	os.WriteFile(mid.Path, b, 0o600)

	srv := httptest.NewServer(Handler(svc, Options{}))
	t.Cleanup(srv.Close)
	status, eb, raw := do(t, srv, "", "POST", "/api/v1/sys/open", `{"passphrase":"rest-test-passphrase"}`)
	if status != http.StatusServiceUnavailable || eb.Error.Code != "unavailable" || !strings.Contains(raw, mid.Name) ||
		!strings.Contains(raw, "move it aside") || strings.Contains(strings.ToLower(raw), "passphrase") {
		t.Fatalf("open over a damaged journal: %d %s", status, raw)
	}
	if err := os.Rename(mid.Path, filepath.Join(t.TempDir(), mid.Name)); err != nil {
		t.Fatal(err)
	}
	if status, _, raw := do(t, srv, "", "POST", "/api/v1/sys/open", `{"passphrase":"rest-test-passphrase"}`); status != http.StatusOK {
		t.Fatalf("open after moving the segment aside: %d %s", status, raw)
	}
	if _, err := journal.Verify(datadir.JournalDir(dir), nil); err != nil {
		t.Fatalf("journal after the open: %v", err)
	}
}
