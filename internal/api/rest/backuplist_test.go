package rest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/coffer-kms/coffer/internal/service"
	"github.com/coffer-kms/coffer/internal/service/servicetest"
)

// backupFixture is a REST server over a service with a recovery
// passphrase, a dir destination "nas" and one full backup of a key.
func backupFixture(t *testing.T) (*httptest.Server, *service.Service, string, service.Object, uint64) {
	t.Helper()
	svc := servicetest.New(t, func(c *service.Config) { c.NoAutoBackup, c.BackupScryptWorkFactor = true, 10 })
	tok, err := svc.Init(context.Background(), service.Identity{Local: true}, []byte("rest-test-passphrase"))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(Handler(svc, Options{}))
	t.Cleanup(srv.Close)
	ctx := service.WithIdentity(context.Background(), service.LocalRoot())
	if _, err := svc.SetRecoveryPassphrase(ctx, nil, []byte("recovery passphrase for tests")); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Backups.AddDestination(ctx, service.DestinationConfig{Name: "nas", Kind: "dir", Path: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	k, err := svc.Objects.CreateObject(ctx, service.CreateObject{Wallet: service.DefaultWallet, Name: "k", Type: service.TypeSymmetricKey})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := svc.Backups.RunBackup(ctx, service.BackupRequest{Destination: "nas", Mode: "full", Wait: true})
	if err != nil || rec.Status != "DONE" {
		t.Fatalf("backup: %+v %v", rec, err)
	}
	return srv, svc, tok, k, rec.LastIndex
}

// TestBackupListShowsVerification: a backup never verified is listed
// without "verified"; after a verification the listing carries its time
// and result.
func TestBackupListShowsVerification(t *testing.T) {
	srv, svc, tok, _, _ := backupFixture(t)
	list := func() BackupRecord {
		t.Helper()
		st, _, raw := do(t, srv, tok, "GET", "/api/v1/backup/backups?destination=nas", "")
		var l BackupList
		if st != 200 || json.Unmarshal([]byte(raw), &l) != nil || len(l.Backups) != 1 {
			t.Fatalf("list: %d %s", st, raw)
		}
		return l.Backups[0]
	}
	if b := list(); b.Verified != nil {
		t.Fatalf("a backup never verified is listed as %+v", b.Verified)
	}
	st, _, raw := do(t, srv, tok, "POST", "/api/v1/backup/destinations/nas/verify", `{"all":true}`)
	if st != 200 {
		t.Fatalf("verify: %d %s", st, raw)
	}
	b := list()
	if b.Verified == nil || b.Verified.Result != "OK" || b.Verified.Time.IsZero() {
		t.Fatalf("after verify the listing shows %+v", b.Verified)
	}
	// A catalog rebuilt from the manifests has no verifications: the
	// listing says what the catalog says (as another node would).
	if _, _, err := svc.Backups.RebuildCatalog(service.WithIdentity(context.Background(), service.LocalRoot()), "nas"); err != nil {
		t.Fatal(err)
	}
	if b := list(); b.Verified != nil {
		t.Fatalf("after a catalog rebuild the listing still shows %+v", b.Verified)
	}
}

// TestObjectRestorePreview: the preview names the versions the restore
// then brings back, changes nothing, and is audited under its own
// operation, previewObjectRestore (a read), not as a restore.
func TestObjectRestorePreview(t *testing.T) {
	srv, svc, tok, k, idx := backupFixture(t)
	ctx := service.WithIdentity(context.Background(), service.LocalRoot())
	for _, tr := range []service.Transition{service.Deactivate, service.Destroy} {
		if _, err := svc.Objects.ChangeState(ctx, service.Ref{ID: k.ID}, tr, "mistake"); err != nil {
			t.Fatal(err)
		}
	}
	applied, audits := svc.Status().AppliedIndex, svc.AuditCount()
	body := fmt.Sprintf(`{"destination":"nas","index":%d}`, idx)
	st, _, raw := do(t, srv, tok, "POST", "/api/v1/objects/"+k.ID+"/restore/preview", body)
	var p service.RestorePreview
	if st != 200 || json.Unmarshal([]byte(raw), &p) != nil {
		t.Fatalf("preview: %d %s", st, raw)
	}
	if !slices.Equal(p.Restored, []uint64{1}) || p.Object.State != "active" || len(p.Object.Versions) != 1 || p.Object.Versions[0].Destroyed {
		t.Fatalf("preview %s", raw)
	}
	if got := svc.Status().AppliedIndex; got != applied {
		t.Fatalf("the preview moved the applied index from %d to %d", applied, got)
	}
	recs, err := svc.AuditRecords(ctx, audits+1, 10)
	if err != nil || len(recs) != 1 || recs[0].Operation != "previewObjectRestore" || recs[0].Result != "ok" || !slices.Contains(recs[0].Objects, k.ID) {
		t.Fatalf("audit of the preview: %+v %v", recs, err)
	}
	if o, err := svc.Objects.DescribeObject(ctx, service.Ref{ID: k.ID}); err != nil || o.State != "destroyed" {
		t.Fatalf("after the preview: %+v %v", o, err)
	}
	st, _, raw = do(t, srv, tok, "POST", "/api/v1/objects/"+k.ID+"/restore", body)
	var o service.Object
	if st != 200 || json.Unmarshal([]byte(raw), &o) != nil {
		t.Fatalf("restore: %d %s", st, raw)
	}
	if o.State != p.Object.State || o.Latest != p.Object.Latest || !slices.EqualFunc(o.Versions, p.Object.Versions, func(a, b service.ObjectVersion) bool {
		return a.Version == b.Version && a.Created.Equal(b.Created) && a.Destroyed == b.Destroyed
	}) {
		t.Fatalf("restored %s\npreviewed %+v", raw, p.Object)
	}
}
