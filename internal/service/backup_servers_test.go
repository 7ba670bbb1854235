package service

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/backup"
	"github.com/coffer-kms/coffer/internal/datadir"
	"github.com/coffer-kms/coffer/internal/journal"
	"github.com/coffer-kms/coffer/internal/testserver"
	"github.com/coffer-kms/coffer/internal/testutil"
)

// cycle runs full, incremental and archiving against one destination and
// checks the catalog the destination holds afterwards.
func cycle(t *testing.T, s *Service, name string) {
	t.Helper()
	ctx := rootCtx()
	s.Objects.PutSecret(ctx, DefaultWallet, "c1", []byte("v"))
	full, err := s.Backups.RunBackup(ctx, BackupRequest{Destination: name, Mode: "full", Wait: true})
	if err != nil || full.Status != "DONE" {
		t.Fatalf("%s full: %+v %v", name, full, err)
	}
	s.Objects.PutSecret(ctx, DefaultWallet, "c2", []byte("v"))
	inc, err := s.Backups.RunBackup(ctx, BackupRequest{Destination: name, Mode: "incremental", Wait: true})
	if err != nil || inc.BaseFullID != full.ID {
		t.Fatalf("%s incremental: %+v %v", name, inc, err)
	}
	s.Objects.PutSecret(ctx, DefaultWallet, "c3", []byte("v"))
	s.RotateJournal(ctx)
	if err := s.Backups.backups.ArchiveOnce(ctx); err != nil {
		t.Fatalf("%s archive: %v", name, err)
	}
	d, _ := s.st.Destination(name)
	if d.ArchivedTo < inc.LastIndex {
		t.Fatalf("%s archived to %d, the incremental reached %d", name, d.ArchivedTo, inc.LastIndex)
	}
	dd, err := s.Backups.openDest(ctx, d, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dd.Close()
	cat, err := backup.LoadCatalog(ctx, dd)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, e := range cat.Entries {
		kinds[e.Kind]++
	}
	if kinds["full"] != 1 || kinds["incremental"] != 1 || kinds["segment"] == 0 {
		t.Fatalf("%s catalog: %v", name, kinds)
	}
	// The catalog agrees with a rebuild from the manifests.
	if n, skipped, err := s.Backups.RebuildCatalog(ctx, name); err != nil || n != len(cat.Entries) || len(skipped) > 0 {
		t.Fatalf("%s rebuild: %d of %d, skipped %v, %v", name, n, len(cat.Entries), skipped, err)
	}
}

func TestBackupToSFTP(t *testing.T) {
	srv := testserver.StartSSHD(t)
	s, _ := backupSvc(t)
	ctx := rootCtx()
	// Wrong password: refused with the reason, nothing stored.
	_, err := s.Backups.AddDestination(ctx, DestinationConfig{Name: "bad", Kind: "sftp", Host: srv.Host, Port: srv.Port, User: srv.User, Password: "wrong-password", Path: "/b"})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "authenticat") || strings.Contains(err.Error(), "wrong-password") {
		t.Fatalf("wrong password: %v", err)
	}
	if _, err := s.st.Destination("bad"); err == nil {
		t.Fatal("a refused destination was stored")
	}
	// Password authentication, host key pinned on first use.
	v, err := s.Backups.AddDestination(ctx, DestinationConfig{Name: "sftp-pw", Kind: "sftp", Host: srv.Host, Port: srv.Port, User: srv.User,
		Password: srv.Password, Path: filepath.Join(srv.Dir, "pw"), Archiving: true})
	if err != nil || v.HostKey == "" || !v.SecretSet {
		t.Fatalf("add sftp: %+v %v", v, err)
	}
	cycle(t, s, "sftp-pw")
	// Key authentication: Coffer generates the key; the destination is
	// usable once the public key is installed.
	v, err = s.Backups.AddDestination(ctx, DestinationConfig{Name: "sftp-key", Kind: "sftp", Host: srv.Host, Port: srv.Port, User: srv.User, Path: filepath.Join(srv.Dir, "key")})
	if err != nil || !strings.HasPrefix(v.PublicKey, "ssh-ed25519 ") || !strings.Contains(v.Note, "authorized_keys") {
		t.Fatalf("add sftp with a new key: %+v %v", v, err)
	}
	if err := s.Backups.TestDestination(ctx, "sftp-key"); err == nil {
		t.Fatal("test passed before the key was installed")
	}
	srv.AddAuthorizedKey(v.PublicKey)
	if err := s.Backups.TestDestination(ctx, "sftp-key"); err != nil {
		t.Fatalf("test after installing the key: %v", err)
	}
	if _, err := s.Backups.RunBackup(ctx, BackupRequest{Destination: "sftp-key", Wait: true}); err != nil {
		t.Fatal(err)
	}
	// A changed host key is refused, naming both fingerprints.
	srv.Restart(true)
	_, err = s.Backups.RunBackup(ctx, BackupRequest{Destination: "sftp-key", Wait: true})
	if err == nil || !strings.Contains(err.Error(), "host key") {
		t.Fatalf("changed host key: %v", err)
	}
	recs, _ := s.Backups.ListBackups(ctx, "sftp-key")
	if recs[0].Status != "FAILED" || !strings.Contains(recs[0].Reason, "host key") {
		t.Fatalf("the failed backup is not recorded as FAILED with its reason: %+v", recs[0])
	}
}

func TestBackupToS3(t *testing.T) {
	srv := testserver.StartS3(t)
	s, _ := backupSvc(t)
	ctx := rootCtx()
	base := DestinationConfig{Kind: "s3", Endpoint: srv.Endpoint, Bucket: srv.Bucket, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, PathStyle: true, Insecure: true}
	for _, c := range []struct {
		name string
		edit func(*DestinationConfig)
		want string
	}{
		{"wrong secret", func(d *DestinationConfig) { d.SecretKey = "not-the-secret-key" }, "authentication"},
		{"missing bucket", func(d *DestinationConfig) { d.Bucket = "no-such-bucket" }, "bucket"},
		{"unreachable", func(d *DestinationConfig) { d.Endpoint = "127.0.0.1:1" }, "unreachable"},
	} {
		d := base
		d.Name = "bad"
		c.edit(&d)
		_, err := s.Backups.AddDestination(ctx, d)
		if err == nil || !strings.Contains(strings.ToLower(err.Error()), c.want) || strings.Contains(err.Error(), d.SecretKey) {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	d := base
	d.Name, d.Prefix, d.Archiving = "s3", "coffer/prod", true
	if _, err := s.Backups.AddDestination(ctx, d); err != nil {
		t.Fatal(err)
	}
	cycle(t, s, "s3")
	// A second cluster is refused on the same bucket and prefix.
	other, _ := backupSvc(t)
	if _, err := other.Backups.AddDestination(rootCtx(), d); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "another cluster") {
		t.Fatalf("second cluster on the same prefix: %v", err)
	}
	// Age recipients instead of the passphrase.
	id, rcpt, err := bundleIdentity()
	if err != nil {
		t.Fatal(err)
	}
	d.Name, d.Prefix, d.Recipients, d.Archiving = "s3-age", "coffer/age", []string{rcpt}, false
	if _, err := s.Backups.AddDestination(ctx, d); err != nil {
		t.Fatal(err)
	}
	rec, err := s.Backups.RunBackup(ctx, BackupRequest{Destination: "s3-age", Wait: true})
	if err != nil || len(rec.Recipients) != 1 || rec.Recipients[0] != rcpt {
		t.Fatalf("age backup: %+v %v", rec, err)
	}
	_ = id
}

func TestBackupToFullDisk(t *testing.T) {
	dir := testserver.SmallTmpfs(t, 256<<10)
	s, _ := backupSvc(t)
	ctx := rootCtx()
	if _, err := s.Backups.AddDestination(ctx, DestinationConfig{Name: "small", Kind: "dir", Path: dir}); err != nil {
		t.Fatal(err)
	}
	// Fill the state so that a full does not fit.
	big := make([]byte, 60000)
	for i := range big {
		big[i] = byte(i*7919 + i/13) // poorly compressible
	}
	for i := 0; i < 8; i++ {
		randRead(big)
		if _, err := s.Objects.PutSecret(ctx, DefaultWallet, fmt.Sprintf("big%d", i), big); err != nil {
			t.Fatal(err)
		}
	}
	_, err := s.Backups.RunBackup(ctx, BackupRequest{Destination: "small", Mode: "full", Wait: true})
	if err == nil || !strings.Contains(err.Error(), "space") {
		t.Fatalf("backup onto a full disk: %v", err)
	}
	dd, _ := s.Backups.openDest(ctx, mustDest(t, s, "small"), nil)
	cat, err := backup.LoadCatalog(ctx, dd)
	if err != nil || len(cat.Entries) != 0 {
		t.Fatalf("catalog after the failed backup: %+v %v", cat, err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "backups", "*"))
	if len(files) != 0 {
		t.Fatalf("partial files left: %v", files)
	}
	recs, _ := s.Backups.ListBackups(ctx, "small")
	if len(recs) != 1 || recs[0].Status != "FAILED" {
		t.Fatalf("records %+v", recs)
	}
	// Above 80% full, status warns (and so do the metrics, read from status).
	filler := make([]byte, 230<<10)
	os.WriteFile(filepath.Join(dir, "filler"), filler, 0o600)
	found := false
	for _, w := range s.Status().Warnings {
		found = found || strings.Contains(w.Message, "destination small") && strings.Contains(w.Message, "full")
	}
	if !found {
		t.Fatalf("no warning for a destination above 80%%: %+v", s.Status().Warnings)
	}
	views, _ := s.Backups.ListDestinations(ctx)
	for _, v := range views {
		if v.Name == "small" && (v.Usage == nil || v.Usage.Total == 0) {
			t.Fatalf("no disk usage for a dir destination: %+v", v)
		}
	}
}

// TestJournalMirror: with a mirror, every acknowledged write is already in
// the mirror journal; a failing mirror (full disk) warns without stopping
// writes, and catches up once there is room again.
func TestJournalMirror(t *testing.T) {
	dir := testserver.SmallTmpfs(t, 1<<20)
	s, data := backupSvc(t)
	ctx := rootCtx()
	if _, err := s.Backups.AddDestination(ctx, DestinationConfig{Name: "mirror", Kind: "dir", Path: dir, Mirror: true}); err != nil {
		t.Fatal(err)
	}
	mdir := MirrorDir(mustDest(t, s, "mirror"), s.st.ClusterID(), "", 1)
	// mirrorEnd reads the mirror while its writer may be writing to it: a
	// reader sees a record as it is being written (and a write that fails
	// on the full disk until it is truncated back), so the last segment may
	// end in part of a record. That torn tail is the end of what is written
	// so far, as for coffer restore --journal, and is returned; any other
	// damage fails the test.
	mirrorEnd := func() (last uint64, torn error) {
		t.Helper()
		err := journal.Read(mdir, s.bar, func(_ journal.SegmentInfo, r journal.Record) error { last = r.Index; return nil })
		var ce *journal.CorruptError
		if errors.As(err, &ce) && ce.Torn {
			return last, err
		}
		if err != nil {
			t.Fatalf("read %s: %v", mdir, err)
		}
		return last, nil
	}
	lastIn := func() uint64 {
		t.Helper()
		last, _ := mirrorEnd()
		return last
	}
	for i := 0; i < 5; i++ {
		if _, err := s.Objects.PutSecret(ctx, DefaultWallet, fmt.Sprintf("m%d", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
		if got, want := lastIn(), s.st.AppliedIndex(); got != want {
			t.Fatalf("after write %d the mirror has index %d, the state %d", i, got, want)
		}
	}
	// Fill the mirror's disk: writes go on, status warns.
	filler := filepath.Join(dir, "filler")
	os.WriteFile(filler, make([]byte, 1<<20), 0o600)
	for i := 0; i < 20; i++ {
		if _, err := s.Objects.PutSecret(ctx, DefaultWallet, fmt.Sprintf("full%d", i), make([]byte, 4000)); err != nil {
			t.Fatalf("a failing mirror stopped writes: %v", err)
		}
	}
	warned := false
	for _, w := range s.Status().Warnings {
		warned = warned || w.Component == "mirror"
	}
	if !warned {
		t.Fatal("no warning for a failing mirror")
	}
	// Pruning keeps what the failing mirror still has to copy.
	s.cfg.JournalKeepSegments = 1
	for i := 0; i < 3; i++ {
		s.Objects.PutSecret(ctx, DefaultWallet, fmt.Sprintf("r%d", i), []byte("v"))
		s.RotateJournal(ctx)
	}
	behind := lastIn()
	p, err := s.Backups.PruneJournal(ctx, false)
	if err != nil || !strings.Contains(p.Holder, "journal mirror") || p.Floor != behind+1 {
		t.Fatalf("prune with the mirror behind at %d: %+v %v", behind, p, err)
	}
	for _, sg := range p.Removed {
		if sg.LastIndex > behind {
			t.Fatalf("pruned %s (to %d), the mirror only has records to %d", sg.Name, sg.LastIndex, behind)
		}
	}
	os.Remove(filler)
	// Caught up, the mirror ends in a whole record: the writes that failed
	// on the full disk left nothing behind.
	testutil.WaitFor(t, 10*time.Second, "the mirror to catch up", func() error {
		got, torn := mirrorEnd()
		if want := s.st.AppliedIndex(); got != want || torn != nil {
			return fmt.Errorf("mirror at %d of %d (torn tail: %v)", got, want, torn)
		}
		return nil
	})
	if s.st.MirrorHealth() != nil {
		t.Fatal("mirror still marked failing after catching up")
	}
	_ = data
}

// TestMirrorNeverGetsAHole: while a configured mirror is not attached,
// nothing is pruned; and a mirror whose missing records are gone from the
// journal is refused with the reason instead of being continued with a
// hole that a restore would only find when it is needed.
func TestMirrorNeverGetsAHole(t *testing.T) {
	s, data := backupSvc(t)
	ctx := rootCtx()
	s.cfg.JournalKeepSegments = 1
	if _, err := s.Backups.AddDestination(ctx, DestinationConfig{Name: "disk2", Kind: "dir", Path: t.TempDir(), Mirror: true}); err != nil {
		t.Fatal(err)
	}
	mdir := MirrorDir(mustDest(t, s, "disk2"), s.st.ClusterID(), "", 1)
	turn := func(n int) {
		for i := 0; i < n; i++ {
			if _, err := s.Objects.PutSecret(ctx, DefaultWallet, fmt.Sprintf("k%d", time.Now().UnixNano()), []byte("v")); err != nil {
				t.Fatal(err)
			}
			if _, err := s.RotateJournal(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	turn(3)
	if p, err := s.Backups.PruneJournal(ctx, false); err != nil || len(p.Removed) == 0 {
		t.Fatalf("prune with the mirror in sync: %+v %v", p, err)
	}
	// The mirror is not attached (its disk was not mounted at open, say).
	if ok, err := s.st.DetachMirror(time.Minute); !ok || err != nil {
		t.Fatalf("detach: %v %v", ok, err)
	}
	turn(3)
	p, err := s.Backups.PruneJournal(ctx, false)
	if err != nil || len(p.Removed) != 0 || !strings.Contains(p.Holder, "not attached") {
		t.Fatalf("prune with the mirror not attached: %+v %v", p, err)
	}
	// Had the journal been pruned anyway, the mirror is not continued.
	if _, _, err := s.st.PruneJournal(math.MaxUint64, 1, 0, false); err != nil {
		t.Fatal(err)
	}
	m, err := journal.Open(journal.Options{Dir: mdir, Name: "coffer"})
	if err != nil {
		t.Fatal(err)
	}
	err = s.st.AttachMirror(m, datadir.JournalDir(data))
	if err == nil || !strings.Contains(err.Error(), "no longer holds records") {
		t.Fatalf("a mirror with a hole was continued: %v", err)
	}
	if !strings.Contains(err.Error(), "move the mirror directory aside") || s.st.MirrorAttached() {
		t.Fatalf("a mirror with a hole: %v (attached: %v)", err, s.st.MirrorAttached())
	}
	m.Close()
	rep, err := journal.Verify(mdir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.LastIndex >= s.st.AppliedIndex() {
		t.Fatalf("the mirror was continued to %d", rep.LastIndex)
	}
}

// TestNoPruneDuringFreeze: a storage snapshot sees the journal unchanged.
func TestNoPruneDuringFreeze(t *testing.T) {
	s, _ := backupSvc(t)
	ctx := rootCtx()
	s.cfg.JournalKeepSegments = 1
	for i := 0; i < 3; i++ {
		s.Objects.PutSecret(ctx, DefaultWallet, fmt.Sprintf("f%d", i), []byte("v"))
		s.RotateJournal(ctx)
	}
	if _, err := s.Backups.Freeze(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Backups.PruneJournal(ctx, false); !errors.Is(err, ErrConflict) {
		t.Fatalf("prune while frozen: %v", err)
	}
	if _, err := s.Backups.Thaw(ctx); err != nil {
		t.Fatal(err)
	}
	if p, err := s.Backups.PruneJournal(ctx, false); err != nil || len(p.Removed) == 0 {
		t.Fatalf("prune after the thaw: %+v %v", p, err)
	}
}
