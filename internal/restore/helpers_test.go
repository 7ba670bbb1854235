package restore_test

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/backup/bundle"
	"github.com/coffer-kms/coffer/internal/backup/dest"
	"github.com/coffer-kms/coffer/internal/keystore"
	"github.com/coffer-kms/coffer/internal/restore"
	"github.com/coffer-kms/coffer/internal/service"
	"github.com/coffer-kms/coffer/internal/service/servicetest"
	"github.com/coffer-kms/coffer/internal/testutil"
)

const (
	ksPass = "keystore-passphrase-1"
	rcPass = "recovery-passphrase-1"
)

var cheapKDF = keystore.KDFParams{Time: 1, MemoryKiB: 1024, Threads: 1}

// env is a live service backing up to a dir destination "nas".
type env struct {
	t   testing.TB
	s   *service.Service
	ctx context.Context
	dir string // data dir
	nas string // destination dir
}

func newService(t testing.TB, dir string, mod ...func(*service.Config)) *service.Service {
	t.Helper()
	cfg := servicetest.Config(t, append([]servicetest.Option{servicetest.DataDir(dir), func(c *service.Config) {
		c.KDF, c.BackupTick, c.NoAutoBackup, c.BackupScryptWorkFactor = cheapKDF, time.Hour, true, 10
	}}, mod...)...)
	s, err := service.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newEnv(t testing.TB, archiving bool, mod ...func(*service.Config)) *env {
	t.Helper()
	e := &env{t: t, dir: filepath.Join(t.TempDir(), "data"), nas: t.TempDir()}
	e.ctx = service.WithIdentity(context.Background(), service.LocalRoot())
	e.s = newService(t, e.dir, mod...)
	t.Cleanup(func() { e.s.Close() })
	if _, err := e.s.Init(e.ctx, service.Identity{Name: "test", Local: true}, []byte(ksPass)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.SetRecoveryPassphrase(e.ctx, nil, []byte(rcPass)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.Backups.AddDestination(e.ctx, service.DestinationConfig{Name: "nas", Kind: "dir", Path: e.nas, Archiving: archiving}); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) must(_ any, err error) {
	e.t.Helper()
	if err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) backup(mode string) {
	e.t.Helper()
	rec, err := e.s.Backups.RunBackup(e.ctx, service.BackupRequest{Destination: "nas", Mode: mode, Wait: true})
	if err != nil || rec.Status != "DONE" {
		e.t.Fatalf("%s backup: %+v %v", mode, rec, err)
	}
}

func (e *env) archive() {
	e.t.Helper()
	if err := e.s.Backups.ArchiveNow(e.ctx); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) digest() (uint64, string) {
	e.t.Helper()
	idx, d, _, err := e.s.Backups.Digest(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	return idx, d
}

func (e *env) put(name, value string) service.Object {
	e.t.Helper()
	o, err := e.s.Objects.PutSecret(e.ctx, service.DefaultWallet, name, []byte(value))
	if err != nil {
		e.t.Fatal(err)
	}
	return o
}

// restoreTo runs a restore from the env's destination into a new dir.
func (e *env) restoreTo(t Target, mod ...func(*restore.Options)) (restore.Summary, string, error) {
	e.t.Helper()
	d, err := dest.NewDir(e.nas)
	if err != nil {
		e.t.Fatal(err)
	}
	defer d.Close()
	out := filepath.Join(e.t.TempDir(), "restored")
	opts := restore.Options{From: d, Keys: []bundle.Decryption{{Passphrase: []byte(rcPass)}}, DataDir: out,
		Target: restore.Target(t), Passphrase: []byte("restored-passphrase"), KDF: cheapKDF}
	for _, m := range mod {
		m(&opts)
	}
	sum, err := restore.Run(context.Background(), opts)
	return sum, out, err
}

// Target mirrors restore.Target for brevity.
type Target restore.Target

// openRestored starts a service on a restored dir and opens it.
func openRestored(t testing.TB, dir string) (*service.Service, context.Context) {
	t.Helper()
	s := newService(t, dir)
	t.Cleanup(func() { s.Close() })
	ctx := service.WithIdentity(context.Background(), service.LocalRoot())
	if err := s.Open(ctx, []byte("restored-passphrase")); err != nil {
		t.Fatalf("open the restored node: %v", err)
	}
	return s, ctx
}

func secretValue(t testing.TB, s *service.Service, ctx context.Context, name string, version uint64) string {
	t.Helper()
	_, m, err := s.Objects.GetObject(ctx, service.Ref{Wallet: service.DefaultWallet, Name: name}, version)
	if err != nil {
		t.Fatalf("get %s v%d: %v", name, version, err)
	}
	return string(m.Value)
}

var _ = fmt.Sprint
var _ io.Closer

// takeOver is a restore option: the restore is the real recovery.
func takeOver(o *restore.Options) { o.TakeOver = true }

// openTakenOver opens a node restored with takeOver and waits until its
// first start took every destination over (a DONE full of its timeline to
// each).
func openTakenOver(t testing.TB, dir string) (*service.Service, context.Context) {
	t.Helper()
	s, ctx := openRestored(t, dir)
	tl := s.Status().Timeline.ID
	ds, err := s.Backups.ListDestinations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 60*time.Second, "the restored node to take its destinations over", func() error {
		recs, err := s.Backups.ListBackups(ctx, "")
		if err != nil {
			return err
		}
		done := map[string]bool{}
		for _, r := range recs {
			if r.Kind == "full" && r.Status == "DONE" && r.Timeline == tl {
				done[r.Destination] = true
			}
		}
		all := true
		for _, d := range ds {
			all = all && done[d.Name]
		}
		// The last full is recorded DONE a moment before the backup ends
		// (retention runs after): wait until none runs.
		if cur, err := s.Backups.CurrentBackup(ctx); all && err == nil && cur == nil {
			return nil
		}
		return fmt.Errorf("backups %+v", recs)
	})
	return s, ctx
}
