package dest_test

// One conformance suite, run against every backend: a directory, SFTP on a
// real OpenSSH sshd (key and password login) and S3 on a real versitygw. The
// servers come from internal/testserver; under CI=true a missing one fails
// the run instead of skipping it.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/backup/dest"
	"github.com/coffer-kms/coffer/internal/testserver"
	"github.com/coffer-kms/coffer/internal/testutil"
)

// backend opens fresh, empty destinations of one kind.
type backend struct {
	// open returns a new destination with nothing in it, and the local
	// directory that holds its files (to look for leftovers behind the API).
	open    func(t *testing.T) (dest.Destination, string)
	secrets []string // must never appear in an error message
	usage   bool     // Usage reports space
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func dirBackend() backend {
	return backend{usage: true, open: func(t *testing.T) (dest.Destination, string) {
		root := filepath.Join(t.TempDir(), "dest")
		d, err := dest.NewDir(root)
		if err != nil {
			t.Fatal(err)
		}
		return d, root
	}}
}

var seq atomic.Int64

func sftpBackend(t *testing.T, s *testserver.SSHD, password bool) backend {
	cfg := dest.SFTPConfig{Host: s.Host, Port: s.Port, User: s.User, KnownHostKey: s.HostKey, Timeout: 10 * time.Second}
	if password {
		cfg.Password = s.Password
	} else {
		priv, pub, err := dest.GenerateKeyPair()
		if err != nil {
			t.Fatal(err)
		}
		s.AddAuthorizedKey(pub)
		cfg.PrivateKeyPEM = priv
	}
	return backend{usage: true, secrets: []string{s.Password}, open: func(t *testing.T) (dest.Destination, string) {
		c := cfg
		c.Path = filepath.Join(s.Dir, fmt.Sprintf("d%d", seq.Add(1)))
		d, err := dest.NewSFTP(ctxT(t), c)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		return d, c.Path
	}}
}

func s3Backend(s *testserver.S3) backend {
	return backend{secrets: []string{s.SecretKey}, open: func(t *testing.T) (dest.Destination, string) {
		prefix := fmt.Sprintf("p%d/sub", seq.Add(1))
		d, err := dest.NewS3(ctxT(t), dest.S3Config{Endpoint: s.Endpoint, Bucket: s.Bucket, Prefix: prefix,
			AccessKey: s.AccessKey, SecretKey: s.SecretKey, PathStyle: true, Insecure: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		return d, filepath.Join(s.Dir, s.Bucket, prefix)
	}}
}

func TestDir(t *testing.T) { runSuite(t, dirBackend()) }

func TestSFTPKey(t *testing.T) {
	runSuite(t, sftpBackend(t, testserver.StartSSHD(t), false))
}

func TestSFTPPassword(t *testing.T) {
	runSuite(t, sftpBackend(t, testserver.StartSSHD(t), true))
}

func TestS3(t *testing.T) { runSuite(t, s3Backend(testserver.StartS3(t))) }

func runSuite(t *testing.T, b backend) {
	t.Run("RoundTrip", func(t *testing.T) { testRoundTrip(t, b) })
	t.Run("List", func(t *testing.T) { testList(t, b) })
	t.Run("BadNames", func(t *testing.T) { testBadNames(t, b) })
	t.Run("Overwrite", func(t *testing.T) { testOverwrite(t, b) })
	t.Run("Atomic", func(t *testing.T) { testAtomic(t, b) })
	t.Run("Large", func(t *testing.T) { testLarge(t, b) })
	t.Run("Probe", func(t *testing.T) {
		d, local := b.open(t)
		if err := dest.Test(ctxT(t), d); err != nil {
			t.Fatal(err)
		}
		if left := localFiles(t, local); len(left) != 0 {
			t.Fatalf("probe left %v", left)
		}
	})
	t.Run("Usage", func(t *testing.T) {
		d, _ := b.open(t)
		u, ok, err := d.Usage(ctxT(t))
		if err != nil || ok != b.usage {
			t.Fatalf("Usage = %+v, %v, %v; want ok=%v", u, ok, err, b.usage)
		}
		if ok && (u.Total == 0 || u.Free > u.Total) {
			t.Fatalf("Usage = %+v", u)
		}
	})
	t.Run("Retry", func(t *testing.T) {
		d, _ := b.open(t)
		r := dest.WithRetry(d, 3, time.Millisecond)
		ctx := ctxT(t)
		if err := r.Save(ctx, "a", strings.NewReader("hello"), 5); err != nil {
			t.Fatal(err)
		}
		if got := read(t, r, "a", 0, 0); got != "hello" {
			t.Fatalf("got %q", got)
		}
		_, err := r.Stat(ctx, "missing")
		if !errors.Is(err, dest.ErrNotFound) {
			t.Fatalf("Stat missing: %v", err)
		}
	})
}

func save(t *testing.T, d dest.Destination, name, data string) {
	t.Helper()
	if err := d.Save(ctxT(t), name, strings.NewReader(data), int64(len(data))); err != nil {
		t.Fatalf("Save %s: %v", name, err)
	}
}

func read(t *testing.T, d dest.Destination, name string, off, n int64) string {
	t.Helper()
	rc, err := d.Open(ctxT(t), name, off, n)
	if err != nil {
		t.Fatalf("Open %s: %v", name, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	return string(b)
}

func list(t *testing.T, d dest.Destination, prefix string) []string {
	t.Helper()
	var names []string
	if err := d.List(ctxT(t), prefix, func(fi dest.FileInfo) error {
		names = append(names, fi.Name)
		return nil
	}); err != nil {
		t.Fatalf("List %q: %v", prefix, err)
	}
	return names
}

// localFiles lists every file under dir, hidden ones included, as the
// storage holds it (a missing dir is empty).
func localFiles(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) && p == dir {
			return fs.SkipAll
		}
		if err != nil {
			return err
		}
		if !de.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			files = append(files, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func testRoundTrip(t *testing.T, b backend) {
	d, local := b.open(t)
	ctx := ctxT(t)
	const data = "0123456789abcdefghij"
	before := time.Now().Add(-time.Minute)
	save(t, d, "backups/2026/x.cbk", data)
	save(t, d, "empty", "")

	if got := read(t, d, "backups/2026/x.cbk", 0, 0); got != data {
		t.Fatalf("read all = %q", got)
	}
	for _, c := range []struct {
		off, n int64
		want   string
	}{{3, 5, "34567"}, {10, 0, "abcdefghij"}, {0, 4, "0123"}, {15, 100, "fghij"}, {20, 0, ""}, {25, 3, ""}} {
		if got := read(t, d, "backups/2026/x.cbk", c.off, c.n); got != c.want {
			t.Errorf("Open(off %d, len %d) = %q, want %q", c.off, c.n, got, c.want)
		}
	}
	if got := read(t, d, "empty", 0, 0); got != "" {
		t.Fatalf("empty = %q", got)
	}
	fi, err := d.Stat(ctx, "backups/2026/x.cbk")
	if err != nil || fi.Name != "backups/2026/x.cbk" || fi.Size != int64(len(data)) ||
		fi.ModTime.Before(before) || fi.ModTime.After(time.Now().Add(time.Minute)) {
		t.Fatalf("Stat = %+v, %v", fi, err)
	}
	if fi, err := d.Stat(ctx, "empty"); err != nil || fi.Size != 0 {
		t.Fatalf("Stat empty = %+v, %v", fi, err)
	}
	// A directory is not an object.
	if _, err := d.Stat(ctx, "backups/2026"); !errors.Is(err, dest.ErrNotFound) {
		t.Fatalf("Stat of a directory: %v", err)
	}

	if err := d.Remove(ctx, "backups/2026/x.cbk"); err != nil {
		t.Fatal(err)
	}
	_, err = d.Stat(ctx, "backups/2026/x.cbk")
	checkErr(t, b, err, dest.ErrNotFound)
	_, err = d.Open(ctx, "backups/2026/x.cbk", 0, 0)
	checkErr(t, b, err, dest.ErrNotFound)
	_, err = d.Open(ctx, "never/was", 5, 0)
	checkErr(t, b, err, dest.ErrNotFound)
	if !strings.Contains(err.Error(), d.Location()) || !strings.Contains(err.Error(), `"never/was"`) {
		t.Fatalf("message lacks location or name: %v", err)
	}
	if err := d.Remove(ctx, "backups/2026/x.cbk"); err != nil {
		t.Fatalf("Remove of a missing object: %v", err)
	}
	if got := list(t, d, ""); !slices.Equal(got, []string{"empty"}) {
		t.Fatalf("List = %v", got)
	}
	if files := localFiles(t, local); !slices.Equal(files, []string{"empty"}) {
		t.Fatalf("stored files = %v", files)
	}
}

func testList(t *testing.T, b backend) {
	d, _ := b.open(t)
	ctx := ctxT(t)
	names := []string{"catalog.json", "backups/2026/b.cbk", "backups/2026/a.cbk", "backups/2027/c.cbk",
		"backups.old", "backups-x/y", "backups/2026-01", "z/deep/er/file", "a"}
	for i, n := range names {
		save(t, d, n, strings.Repeat("x", i))
	}
	sorted := slices.Clone(names)
	slices.Sort(sorted)
	for _, c := range []struct {
		prefix string
		want   []string
	}{
		{"", sorted},
		{"backups/", []string{"backups/2026-01", "backups/2026/a.cbk", "backups/2026/b.cbk", "backups/2027/c.cbk"}},
		{"backups/2026/", []string{"backups/2026/a.cbk", "backups/2026/b.cbk"}},
		{"backups/2026", []string{"backups/2026-01", "backups/2026/a.cbk", "backups/2026/b.cbk"}},
		{"backups", []string{"backups-x/y", "backups.old", "backups/2026-01", "backups/2026/a.cbk", "backups/2026/b.cbk", "backups/2027/c.cbk"}},
		{"backups/2026/a", []string{"backups/2026/a.cbk"}},
		{"z/deep/", []string{"z/deep/er/file"}},
		{"nothing/", nil},
		{"nothing/here/", nil},
		{"c", []string{"catalog.json"}},
	} {
		if got := list(t, d, c.prefix); !slices.Equal(got, c.want) {
			t.Errorf("List(%q) = %v, want %v", c.prefix, got, c.want)
		}
	}
	// Sizes come with the names.
	err := d.List(ctx, "backups/2026/b", func(fi dest.FileInfo) error {
		if fi.Size != int64(slices.Index(names, fi.Name)) {
			t.Errorf("%s: size %d", fi.Name, fi.Size)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// An error from fn stops the listing and comes back as is.
	stop := errors.New("stop")
	calls := 0
	err = d.List(ctx, "", func(dest.FileInfo) error { calls++; return stop })
	if err != stop || calls != 1 {
		t.Fatalf("List with failing fn: %v after %d calls", err, calls)
	}
}

func testBadNames(t *testing.T, b backend) {
	d, _ := b.open(t)
	ctx := ctxT(t)
	for _, name := range []string{"", ".", "/abs", "../x", "a/../../x", "a/..", "a//b", "a/", "./a", `a\b`, ".x.tmp-123", "d/.y.tmp-1"} {
		err := d.Save(ctx, name, strings.NewReader("x"), 1)
		checkErr(t, b, err, dest.ErrInvalid)
		_, err = d.Open(ctx, name, 0, 0)
		checkErr(t, b, err, dest.ErrInvalid)
		_, err = d.Stat(ctx, name)
		checkErr(t, b, err, dest.ErrInvalid)
		checkErr(t, b, d.Remove(ctx, name), dest.ErrInvalid)
	}
	for _, prefix := range []string{"/", "/a", "../", "a/../", "a//"} {
		checkErr(t, b, d.List(ctx, prefix, func(dest.FileInfo) error { return nil }), dest.ErrInvalid)
	}
}

func testOverwrite(t *testing.T, b backend) {
	d, local := b.open(t)
	save(t, d, "cat/catalog.json", "first version, longer")
	save(t, d, "cat/catalog.json", "second")
	if got := read(t, d, "cat/catalog.json", 0, 0); got != "second" {
		t.Fatalf("got %q", got)
	}
	if fi, err := d.Stat(ctxT(t), "cat/catalog.json"); err != nil || fi.Size != 6 {
		t.Fatalf("Stat = %+v, %v", fi, err)
	}
	if got := list(t, d, ""); !slices.Equal(got, []string{"cat/catalog.json"}) {
		t.Fatalf("List = %v", got)
	}
	if files := localFiles(t, local); !slices.Equal(files, []string{"cat/catalog.json"}) {
		t.Fatalf("stored files = %v", files)
	}
}

// failingReader gives n bytes, then an error.
type failingReader struct {
	r io.ReadSeeker
	n int64
}

var errReader = errors.New("reader broke")

func (f *failingReader) Read(p []byte) (int, error) {
	pos, _ := f.r.Seek(0, io.SeekCurrent)
	if pos >= f.n {
		return 0, errReader
	}
	if int64(len(p)) > f.n-pos {
		p = p[:f.n-pos]
	}
	return f.r.Read(p)
}

func (f *failingReader) Seek(off int64, whence int) (int64, error) { return f.r.Seek(off, whence) }

func testAtomic(t *testing.T, b backend) {
	d, local := b.open(t)
	ctx := ctxT(t)
	old := strings.Repeat("old", 1000)
	save(t, d, "x/obj", old)
	big := bytes.Repeat([]byte("new!"), 256<<10) // 1 MiB
	for _, name := range []string{"x/obj", "x/new"} {
		err := d.Save(ctx, name, &failingReader{bytes.NewReader(big), 300 << 10}, int64(len(big)))
		if err == nil {
			t.Fatalf("Save %s with a failing reader succeeded", name)
		}
		if dest.IsPermanent(err) {
			t.Errorf("a reader error is not permanent: %v", err)
		}
		// A reader that ends early fails too.
		if err := d.Save(ctx, name, bytes.NewReader(big[:1000]), int64(len(big))); err == nil {
			t.Fatalf("Save %s with a short reader succeeded", name)
		}
	}
	if got := read(t, d, "x/obj", 0, 0); got != old {
		t.Fatalf("old object changed: %d bytes", len(got))
	}
	_, err := d.Stat(ctx, "x/new")
	checkErr(t, b, err, dest.ErrNotFound)
	if got := list(t, d, ""); !slices.Equal(got, []string{"x/obj"}) {
		t.Fatalf("List = %v", got)
	}
	if files := localFiles(t, local); !slices.Equal(files, []string{"x/obj"}) {
		t.Fatalf("stored files = %v (partial or temp files left)", files)
	}
	// A cancelled context stops a save the same way.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := d.Save(cctx, "x/new", bytes.NewReader(big), int64(len(big))); err == nil {
		t.Fatal("Save with a cancelled context succeeded")
	}
	if _, err := d.Stat(ctx, "x/new"); !errors.Is(err, dest.ErrNotFound) {
		t.Fatalf("after cancelled save: %v", err)
	}
}

// genReader yields size bytes of a fixed pattern without holding them.
type genReader struct{ pos, size int64 }

func genByte(i int64) byte { return byte((uint64(i) * 0x9E3779B97F4A7C15) >> 56) }

func (g *genReader) Read(p []byte) (int, error) {
	if g.pos >= g.size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), g.size-g.pos))
	for i := range n {
		p[i] = genByte(g.pos + int64(i))
	}
	g.pos += int64(n)
	return n, nil
}

func (g *genReader) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekCurrent:
		off += g.pos
	case io.SeekEnd:
		off += g.size
	}
	if off < 0 {
		return 0, errors.New("negative position")
	}
	g.pos = off
	return off, nil
}

// heapPeak samples HeapInuse until stopped and returns the highest value.
func heapPeak() (stop func() uint64) {
	var peak atomic.Uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	return func() uint64 { close(done); wg.Wait(); return peak.Load() }
}

func testLarge(t *testing.T, b backend) {
	d, _ := b.open(t)
	ctx := ctxT(t)
	const size = 64 << 20
	const limit = 24 << 20 // "flat": far below the object size
	want := sha256.New()
	io.Copy(want, &genReader{size: size})

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	stop := heapPeak()
	start := time.Now()
	err := d.Save(ctx, "big/object", &genReader{size: size}, size)
	peak := stop()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("save 64 MiB: %v, heap in use grew by %.1f MiB", time.Since(start).Round(time.Millisecond), float64(peak-base)/(1<<20))
	if peak > base && peak-base > limit {
		t.Errorf("heap in use grew by %d MiB during Save of a 64 MiB object", (peak-base)>>20)
	}

	fi, err := d.Stat(ctx, "big/object")
	if err != nil || fi.Size != size {
		t.Fatalf("Stat = %+v, %v", fi, err)
	}
	runtime.GC()
	runtime.ReadMemStats(&ms)
	base = ms.HeapInuse
	stop = heapPeak()
	start = time.Now()
	rc, err := d.Open(ctx, "big/object", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	got := sha256.New()
	n, err := io.Copy(got, rc)
	rc.Close()
	peak = stop()
	if err != nil || n != size {
		t.Fatalf("read back %d bytes: %v", n, err)
	}
	t.Logf("read 64 MiB: %v, heap in use grew by %.1f MiB", time.Since(start).Round(time.Millisecond), float64(peak-base)/(1<<20))
	if peak > base && peak-base > limit {
		t.Errorf("heap in use grew by %d MiB during reading a 64 MiB object", (peak-base)>>20)
	}
	if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Fatal("64 MiB object read back differs")
	}
	// A range near the end.
	tail := read(t, d, "big/object", size-10, 6)
	for i := range 6 {
		if tail[i] != genByte(size-10+int64(i)) {
			t.Fatalf("range read near the end differs at %d", i)
		}
	}
}

// checkErr asserts errors.Is(err, want) and that the message holds no secret.
func checkErr(t *testing.T, b backend, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("got %v, want %v", err, want)
	}
	noSecrets(t, err, b.secrets...)
}

func noSecrets(t *testing.T, err error, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(fmt.Sprintf("%v %+v %#v", err, err, err), s) {
			t.Fatalf("error message contains a secret: %v", err)
		}
	}
}

// TestCleanup: temp files of crashed saves go once stale, fresh ones stay
// (a save may be running in another process), and neither is ever listed.
func TestCleanup(t *testing.T) {
	backends := map[string]backend{"dir": dirBackend()}
	if os.Geteuid() == 0 || testutil.CI() {
		backends["sftp"] = sftpBackend(t, testserver.StartSSHD(t), false)
	}
	for name, b := range backends {
		t.Run(name, func(t *testing.T) {
			d, local := b.open(t)
			save(t, d, "sub/keep", "k")
			stale := filepath.Join(local, "sub", ".crashed.tmp-abc")
			fresh := filepath.Join(local, ".running.tmp-def")
			for _, p := range []string{stale, fresh} {
				if err := os.WriteFile(p, []byte("partial"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			old := time.Now().Add(-2 * dest.StaleTempAge)
			if err := os.Chtimes(stale, old, old); err != nil {
				t.Fatal(err)
			}
			if got := list(t, d, ""); !slices.Equal(got, []string{"sub/keep"}) {
				t.Fatalf("List shows temp files: %v", got)
			}
			c, ok := dest.WithRetry(d, 2, time.Millisecond).(dest.Cleaner)
			if !ok {
				t.Fatal("not a Cleaner")
			}
			if err := c.Cleanup(ctxT(t)); err != nil {
				t.Fatal(err)
			}
			if files := localFiles(t, local); !slices.Equal(files, []string{".running.tmp-def", "sub/keep"}) {
				t.Fatalf("after Cleanup: %v", files)
			}
		})
	}
}
