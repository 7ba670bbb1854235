// Package compat checks that data dirs and backups written by earlier
// releases open with this build. Every release commits a directory
// testdata/compat/<version>/ (written by scripts/gencompat.sh, which runs
// TestGenerateCompat with -compat.write) holding:
//
//	data.tar.gz    a standalone data dir (keystore, state.db, raft/, journal/, audit/)
//	nas.tar.gz     its dir destination: a full, an incremental and archived segments
//	expected.json  what the test must find in them (below)
//
// The passphrases are fixed test values (README.md beside the data): this
// is test data, never key material anyone uses. TestCompat opens every
// version's data dir with the current code, reads every object back,
// checks wallets, the endpoint and the state digest, and restores the
// backup chain (internal/restore), checking the restored digest.
package compat

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/backup"
	"github.com/coffer-kms/coffer/internal/backup/bundle"
	"github.com/coffer-kms/coffer/internal/backup/dest"
	"github.com/coffer-kms/coffer/internal/keystore"
	"github.com/coffer-kms/coffer/internal/restore"
	"github.com/coffer-kms/coffer/internal/service"
)

// Fixed test passphrases of every compat data set (documented in each
// version's README.md).
const (
	keystorePass = "compat-keystore-passphrase"
	recoveryPass = "compat-recovery-passphrase"
)

var writeVersion = flag.String("compat.write", "", "write testdata/compat/<version> from this build (scripts/gencompat.sh)")

var cheapKDF = keystore.KDFParams{Time: 1, MemoryKiB: 1024, Threads: 1}

// Expected is expected.json: what a compat data set holds.
type Expected struct {
	Version     string            `json:"version"`    // the release that wrote it
	Written     time.Time         `json:"written"`    // when
	Formats     map[string]int    `json:"formats"`    // the format versions it was written with
	Secrets     map[string]string `json:"secrets"`    // "wallet/name@version" -> value
	Keys        map[string]int    `json:"keys"`       // "wallet/name" -> key length in bits (symmetric keys)
	Wallets     []string          `json:"wallets"`    // every wallet
	Endpoints   []string          `json:"endpoints"`  // every endpoint
	Index       uint64            `json:"index"`      // applied index of the data dir
	Digest      string            `json:"digest"`     // state digest of the data dir
	BackupIndex uint64            `json:"backup_idx"` // the newest archived record on nas
	Backups     int               `json:"backups"`    // files on nas (fulls, incrementals, segments)
}

func ctxRoot() context.Context {
	return service.WithIdentity(context.Background(), service.LocalRoot())
}

func newService(t testing.TB, dir string) *service.Service {
	t.Helper()
	s, err := service.New(service.Config{DataDir: dir, KDF: cheapKDF, PasswordKDF: service.PasswordKDF{Time: 1, MemoryKiB: 64, Threads: 1},
		MachineIdentity: func() ([]byte, error) { return []byte("compat-machine"), nil }, BackupScryptWorkFactor: 10,
		BackupTick: time.Hour, NoAutoBackup: true, WriteRetryDelay: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestCompat(t *testing.T) {
	dirs, _ := filepath.Glob(filepath.Join("..", "..", "testdata", "compat", "*"))
	if len(dirs) == 0 {
		t.Fatal("no testdata/compat/<version> directory: every release commits one (scripts/gencompat.sh)")
	}
	for _, d := range dirs {
		t.Run(filepath.Base(d), func(t *testing.T) { checkVersion(t, d) })
	}
}

func checkVersion(t *testing.T, dir string) {
	b, err := os.ReadFile(filepath.Join(dir, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var want Expected
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	data, nas := filepath.Join(work, "data"), filepath.Join(work, "nas")
	untar(t, filepath.Join(dir, "data.tar.gz"), data)
	untar(t, filepath.Join(dir, "nas.tar.gz"), nas)

	// The data dir opens (migrating if its formats are older) and holds
	// every object.
	s := newService(t, data)
	defer s.Close()
	ctx := ctxRoot()
	if err := s.Open(ctx, []byte(keystorePass)); err != nil {
		t.Fatalf("open the %s data dir: %v", want.Version, err)
	}
	checkObjects(t, s, want)
	idx, digest, _, err := s.Backups.Digest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if idx < want.Index {
		t.Fatalf("applied index %d, the data dir was written at %d", idx, want.Index)
	}
	if idx == want.Index && digest != want.Digest {
		t.Fatalf("state digest %s, written as %s", digest, want.Digest)
	}
	s.Close()

	// The backup chain restores.
	d, err := dest.NewDir(nas)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	out := filepath.Join(work, "restored")
	sum, err := restore.Run(context.Background(), restore.Options{From: d, Keys: []bundle.Decryption{{Passphrase: []byte(recoveryPass)}},
		DataDir: out, Passphrase: []byte("restored-passphrase"), KDF: cheapKDF})
	if err != nil {
		t.Fatalf("restore the %s backups: %v", want.Version, err)
	}
	if sum.Index != want.BackupIndex {
		t.Fatalf("restored to index %d, the backups reach %d", sum.Index, want.BackupIndex)
	}
	if want.BackupIndex == want.Index && sum.Digest != want.Digest {
		t.Fatalf("restored digest %s, written as %s", sum.Digest, want.Digest)
	}
	r := newService(t, out)
	defer r.Close()
	if err := r.Open(ctx, []byte("restored-passphrase")); err != nil {
		t.Fatalf("open the restored node: %v", err)
	}
	checkObjects(t, r, want)
	// The catalog (with the drill the release ran) reads, and a drill on
	// the same chain agrees.
	if cat, err := backup.LoadCatalog(context.Background(), d); err != nil || (want.Formats["catalog"] >= 2 && cat.LastGoodDrill() == nil) {
		t.Fatalf("catalog: %v (drills %d)", err, len(cat.Drills))
	}
	res, err := restore.Drill(context.Background(), d, restore.DrillOptions{Passphrase: []byte(recoveryPass), Work: work, KDF: cheapKDF})
	if err != nil || !res.OK() {
		t.Fatalf("drill: %+v %v", res, err)
	}
}

func checkObjects(t *testing.T, s *service.Service, want Expected) {
	t.Helper()
	ctx := ctxRoot()
	for ref, v := range want.Secrets {
		name, ver, _ := strings.Cut(ref, "@")
		wallet, obj, _ := strings.Cut(name, "/")
		var n uint64
		fmt.Sscan(ver, &n)
		_, m, err := s.Objects.GetObject(ctx, service.Ref{Wallet: wallet, Name: obj}, n)
		if err != nil || string(m.Value) != v {
			t.Errorf("%s: %v (value matches: %v)", ref, err, err == nil && string(m.Value) == v)
		}
	}
	for ref, bits := range want.Keys {
		wallet, obj, _ := strings.Cut(ref, "/")
		_, m, err := s.Objects.GetObject(ctx, service.Ref{Wallet: wallet, Name: obj}, 0)
		if err != nil || len(m.Value)*8 != bits {
			t.Errorf("key %s: %v (%d bytes)", ref, err, len(m.Value))
		}
	}
	for _, w := range want.Wallets {
		if _, err := s.Access.GetWallet(ctx, w); err != nil {
			t.Errorf("wallet %s: %v", w, err)
		}
	}
	for _, e := range want.Endpoints {
		if _, err := s.Access.GetEndpoint(ctx, e); err != nil {
			t.Errorf("endpoint %s: %v", e, err)
		}
	}
}

func untar(t *testing.T, file, dir string) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		if !strings.HasPrefix(p, filepath.Clean(dir)+string(os.PathSeparator)) && p != filepath.Clean(dir) {
			t.Fatalf("tar entry %q leaves the directory", h.Name)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o700); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
				t.Fatal(err)
			}
			w, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(w, io.LimitReader(tr, 64<<20)); err != nil { // #nosec G110 -- test data from this repository, bounded
				t.Fatal(err)
			}
			w.Close()
		}
	}
}

// writeTar packs dir (regular files and directories, sorted, fixed times)
// into file.
func writeTar(t *testing.T, dir, file string) {
	t.Helper()
	var paths []string
	filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err == nil && p != dir && (e.IsDir() || e.Type().IsRegular()) && !strings.HasSuffix(p, ".sock") && filepath.Base(p) != "LOCK" && filepath.Base(p) != "coffer.pid" {
			paths = append(paths, p)
		}
		return err
	})
	sort.Strings(paths)
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zw, _ := gzip.NewWriterLevel(f, gzip.BestCompression)
	tw := tar.NewWriter(zw)
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(dir, p)
		h := &tar.Header{Name: filepath.ToSlash(rel), ModTime: time.Unix(0, 0), Mode: 0o600, Typeflag: tar.TypeReg, Size: fi.Size()}
		if fi.IsDir() {
			h.Name += "/"
			h.Mode, h.Typeflag, h.Size = 0o700, tar.TypeDir, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if !fi.IsDir() {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			tw.Write(b)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
}
