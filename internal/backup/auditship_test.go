package backup

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/backup/bundle"
	"github.com/coffer-kms/coffer/internal/backup/dest"
	"github.com/coffer-kms/coffer/internal/state"
)

type auditSource struct {
	benchSource
	cluster string
	tl      uint32
}

func (a auditSource) ClusterID() string        { return a.cluster }
func (a auditSource) Timeline() state.Timeline { return state.Timeline{ID: a.tl} }

func TestShipAudit(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	d, err := dest.NewDir(root)
	if err != nil {
		t.Fatal(err)
	}
	if err := SaveCatalog(ctx, d, Catalog{ClusterID: "cl-a"}); err != nil {
		t.Fatal(err)
	}
	content := []byte(`{"seq":1,"prev":"00"}` + "\n" + `{"seq":2,"prev":"11"}` + "\n")
	p := filepath.Join(t.TempDir(), "audit-00000003.log")
	if err := os.WriteFile(p, content, 0o600); err != nil {
		t.Fatal(err)
	}
	f := AuditFile{Name: "audit-00000003.log", Path: p, FirstSeq: 1, LastSeq: 2, LastTime: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	enc := bundle.Encryption{Passphrase: []byte("pw"), ScryptWorkFactor: 10}
	staging := filepath.Join(t.TempDir(), "staging")
	name, err := ShipAudit(ctx, auditSource{cluster: "cl-a", tl: 1}, &Target{Dest: d, Encryption: enc}, staging, f)
	if err != nil {
		t.Fatal(err)
	}
	if name != "audit/node-bench/audit-00000003.log.cbk" {
		t.Fatalf("name %q", name)
	}
	// Encrypted: the plain content is not in the file; it opens with the passphrase.
	raw, err := os.ReadFile(filepath.Join(root, name))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte(`"seq":1`)) {
		t.Fatal("the shipped file holds the audit records in clear")
	}
	rc, m, err := bundle.Open(bytes.NewReader(raw), int64(len(raw)), bundle.Decryption{Passphrase: []byte("pw")})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if m.Kind != KindAudit || m.Node != "node-bench" || m.Extra[ExtraAuditFile] != f.Name || m.Extra[ExtraAuditLastSeq] != "2" || !m.LastTime.Equal(f.LastTime) {
		t.Fatalf("manifest %+v", m)
	}
	tr := tar.NewReader(rc)
	h, err := tr.Next()
	if err != nil || h.Name != EntryAudit+f.Name {
		t.Fatalf("entry %v %v", h, err)
	}
	got, _ := io.ReadAll(tr)
	if !bytes.Equal(got, content) {
		t.Fatalf("content %q", got)
	}
	// Not a backup: the catalog does not list it, and a rebuild ignores it.
	if c, err := LoadCatalog(ctx, d); err != nil || len(c.Entries) != 0 {
		t.Fatalf("catalog %+v %v", c, err)
	}
	if c, skipped, err := Rebuild(ctx, d, "cl-a"); err != nil || len(c.Entries) != 0 || len(skipped) != 0 {
		t.Fatalf("rebuild %+v %v %v", c, skipped, err)
	}
	if left, _ := filepath.Glob(filepath.Join(staging, "*")); len(left) != 0 {
		t.Fatalf("staging files left: %v", left)
	}

	// A restored timeline ships beside the original, never over it.
	if err := SaveCatalog(ctx, d, Catalog{ClusterID: "cl-a", Writer: 2}); err != nil {
		t.Fatal(err)
	}
	if name, err := ShipAudit(ctx, auditSource{cluster: "cl-a", tl: 2}, &Target{Dest: d, Encryption: enc}, staging, f); err != nil || name != "audit/node-bench.tl2/audit-00000003.log.cbk" {
		t.Fatalf("timeline 2: %q %v", name, err)
	}
	// Refused: another cluster's destination, another timeline's destination.
	if _, err := ShipAudit(ctx, auditSource{cluster: "cl-b", tl: 2}, &Target{Dest: d, Encryption: enc}, staging, f); !errors.Is(err, ErrForeign) {
		t.Fatalf("foreign cluster: %v", err)
	}
	if _, err := ShipAudit(ctx, auditSource{cluster: "cl-a", tl: 1}, &Target{Dest: d, Encryption: enc}, staging, f); !errors.Is(err, ErrOtherWriter) {
		t.Fatalf("other timeline: %v", err)
	}

	// Read back.
	list, err := ListAudit(ctx, d)
	if err != nil || len(list) != 2 || len(list["node-bench"]) != 1 || list["node-bench.tl2"][0] != "audit/node-bench.tl2/audit-00000003.log.cbk" {
		t.Fatalf("list %v %v", list, err)
	}
	var out bytes.Buffer
	keys := []bundle.Decryption{{Passphrase: []byte("wrong")}, {Passphrase: []byte("pw")}}
	if m, err := FetchAudit(ctx, d, list["node-bench"][0], keys, t.TempDir(), &out); err != nil || !bytes.Equal(out.Bytes(), content) || m.Extra[ExtraAuditFile] != f.Name {
		t.Fatalf("fetch: %q %v", out.Bytes(), err)
	}
	if _, err := FetchAudit(ctx, d, list["node-bench"][0], keys[:1], t.TempDir(), io.Discard); !errors.Is(err, bundle.ErrWrongKey) {
		t.Fatalf("fetch with a wrong passphrase: %v", err)
	}
}
