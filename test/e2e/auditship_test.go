package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/client"
	"github.com/coffer-kms/coffer/internal/audit"
	"github.com/coffer-kms/coffer/internal/backup"
)

// TestAuditFilesShippedAndPruned: on the real server, closed audit files go
// to a dir destination; with a short audit.retention they then leave the
// node; the remaining chain verifies from the anchor, and the shipped copies
// come back with coffer audit fetch and end exactly at the anchor.
func TestAuditFilesShippedAndPruned(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	n := initialisedNode(t, dataDir, "audit:\n  max_file_bytes: 1048576\n  retention: 2s\nbackup:\n  check_interval: 1s\n")
	ctx := context.Background()
	if _, err := n.https().SetRecoveryPassphrase(ctx, "", "e2e recovery passphrase"); err != nil {
		t.Fatal(err)
	}
	nas := filepath.Join(t.TempDir(), "nas")
	if _, err := n.https().AddDestination(ctx, client.DestinationConfig{Name: "nas", Kind: "dir", Path: nas}); err != nil {
		t.Fatal(err)
	}

	// Unrouted requests are audited with their path: about 700 bytes each,
	// so some 1600 of them fill more than one 1 MiB file.
	api := newRawAPI(t, n)
	long := strings.Repeat("x", 480)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 450 {
				resp, err := api.hc.Get(fmt.Sprintf("%s/no/such/%d/%d/%s", n.url, w, i, long))
				if err != nil {
					errs <- err
					return
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusNotFound {
					errs <- fmt.Errorf("status %d", resp.StatusCode)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	auditDir := filepath.Join(dataDir, "audit")
	var a audit.Anchor
	deadline := time.Now().Add(60 * time.Second)
	for {
		var ok bool
		var err error
		a, ok, err = audit.ReadAnchor(auditDir)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			files, _ := filepath.Glob(filepath.Join(auditDir, "*"))
			t.Fatalf("no audit file pruned after 60s: %v\n%s", files, n.logs)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := os.Stat(filepath.Join(auditDir, "audit-00000001.log")); !os.IsNotExist(err) {
		t.Fatalf("audit-00000001.log is still on the node: %v", err)
	}
	entries, err := os.ReadDir(filepath.Join(nas, backup.AuditDir))
	if err != nil || len(entries) != 1 {
		t.Fatalf("audit dirs on the destination: %v %v", entries, err)
	}
	node := entries[0].Name()
	if _, err := os.Stat(filepath.Join(nas, backup.AuditDir, node, "audit-00000001.log.cbk")); err != nil {
		t.Fatalf("the pruned file is not on the destination: %v", err)
	}

	rep, err := n.https().VerifyAudit(ctx)
	if err != nil || rep.PrunedThrough < a.Seq || rep.FirstSeq != rep.PrunedThrough+1 {
		t.Fatalf("verify through the server after pruning: %+v %v (anchor %+v)", rep, err, a)
	}
	n.stop()
	a, _, _ = audit.ReadAnchor(auditDir)
	if out, err := coffer(t, nil, "audit", "verify", "--offline", "--data-dir", dataDir); err != nil || !strings.Contains(out, fmt.Sprintf("records 1-%d were pruned", a.Seq)) {
		t.Fatalf("offline verify: %v\n%s", err, out)
	}

	// The copies of every pruned file come back and end at the anchor.
	rp := filepath.Join(t.TempDir(), "rp")
	os.WriteFile(rp, []byte("e2e recovery passphrase\n"), 0o600)
	copyDir := filepath.Join(t.TempDir(), "copy")
	out, err := coffer(t, nil, "audit", "fetch", "--from", nas, "--to", copyDir, "--recovery-passphrase-file", rp, "--format", "json")
	if err != nil {
		t.Fatalf("fetch: %v\n%s", err, out)
	}
	crep, err := audit.VerifyFiles(copyDir)
	if err != nil || crep.FirstSeq != 1 || crep.LastSeq < a.Seq {
		t.Fatalf("fetched copy: %+v %v", crep, err)
	}
	// Trim the copy to the pruned files: it then ends exactly at the anchor.
	for num := a.File + 1; ; num++ {
		p := filepath.Join(copyDir, audit.FileName(num))
		if _, err := os.Stat(p); err != nil {
			break
		}
		os.Remove(p)
	}
	if crep, err = audit.VerifyFiles(copyDir); err != nil || crep.LastSeq != a.Seq || crep.LastHash != a.Hash {
		t.Fatalf("pruned files fetched back end at seq %d %s, anchor %+v (%v)", crep.LastSeq, crep.LastHash, a, err)
	}
}
