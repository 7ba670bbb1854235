package dest_test

// Failure classification against real servers: every backend error must map
// to the sentinel a caller acts on, name the step and never show a secret.

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/backup/dest"
	"github.com/coffer-kms/coffer/internal/testserver"
	"golang.org/x/crypto/ssh"
)

func closedPort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return port
}

// probeFails runs dest.Test and checks the step and the sentinel.
func probeFails(t *testing.T, d dest.Destination, step string, want error, secrets ...string) {
	t.Helper()
	err := dest.Test(ctxT(t), d)
	var pe *dest.ProbeError
	if !errors.As(err, &pe) || pe.Step != step || !errors.Is(err, want) {
		t.Fatalf("Test = %v; want step %q and %v", err, step, want)
	}
	if want == dest.ErrUnreachable {
		if dest.IsPermanent(err) {
			t.Errorf("IsPermanent(%v) = true", err)
		}
	} else if !dest.IsPermanent(err) {
		t.Errorf("IsPermanent(%v) = false", err)
	}
	noSecrets(t, err, secrets...)
	t.Logf("%v", err)
}

func TestSFTPFailures(t *testing.T) {
	s := testserver.StartSSHD(t)
	priv, pub, err := dest.GenerateKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	s.AddAuthorizedKey(pub)
	base := dest.SFTPConfig{Host: s.Host, Port: s.Port, User: s.User, Path: s.Dir, KnownHostKey: s.HostKey, Timeout: 10 * time.Second}

	connectFails := func(t *testing.T, cfg dest.SFTPConfig, want error, secrets ...string) error {
		t.Helper()
		d, err := dest.NewSFTP(ctxT(t), cfg)
		if err == nil {
			d.Close()
			t.Fatalf("NewSFTP succeeded; want %v", want)
		}
		if !errors.Is(err, want) {
			t.Fatalf("NewSFTP = %v; want %v", err, want)
		}
		if !strings.Contains(err.Error(), "sftp://"+s.User+"@") {
			t.Errorf("message lacks the location: %v", err)
		}
		noSecrets(t, err, append(secrets, s.Password)...)
		t.Logf("%v", err)
		return err
	}

	t.Run("WrongPassword", func(t *testing.T) {
		cfg := base
		cfg.Password = "wrong-" + s.Password
		err := connectFails(t, cfg, dest.ErrAuth, cfg.Password)
		if !dest.IsPermanent(err) {
			t.Error("ErrAuth not permanent")
		}
	})
	t.Run("WrongKey", func(t *testing.T) {
		other, _, err := dest.GenerateKeyPair()
		if err != nil {
			t.Fatal(err)
		}
		cfg := base
		cfg.PrivateKeyPEM = other
		connectFails(t, cfg, dest.ErrAuth)
	})
	t.Run("ClosedPort", func(t *testing.T) {
		cfg := base
		cfg.PrivateKeyPEM, cfg.Port = priv, closedPort(t)
		err := connectFails(t, cfg, dest.ErrUnreachable)
		if dest.IsPermanent(err) {
			t.Error("ErrUnreachable is permanent")
		}
	})
	t.Run("BadKeyPEM", func(t *testing.T) {
		cfg := base
		cfg.PrivateKeyPEM = []byte("-----BEGIN OPENSSH PRIVATE KEY-----\nnope\n-----END OPENSSH PRIVATE KEY-----\n")
		connectFails(t, cfg, dest.ErrInvalid)
	})
	t.Run("PKCS8Keys", func(t *testing.T) {
		_, edKey, _ := ed25519.GenerateKey(rand.Reader)
		ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		for _, key := range []crypto.Signer{edKey, ecKey} {
			der, err := x509.MarshalPKCS8PrivateKey(key)
			if err != nil {
				t.Fatal(err)
			}
			pub, err := ssh.NewPublicKey(key.Public())
			if err != nil {
				t.Fatal(err)
			}
			s.AddAuthorizedKey(string(ssh.MarshalAuthorizedKey(pub)))
			cfg := base
			cfg.PrivateKeyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
			d, err := dest.NewSFTP(ctxT(t), cfg)
			if err != nil {
				t.Fatalf("%s: %v", pub.Type(), err)
			}
			if err := dest.Test(ctxT(t), d); err != nil {
				t.Fatal(err)
			}
			d.Close()
		}
	})
	t.Run("NoWritePermission", func(t *testing.T) {
		ro := filepath.Join(s.Dir, "readonly")
		if err := os.Mkdir(ro, 0o555); err != nil {
			t.Fatal(err)
		}
		if err := s.Chown(ro); err != nil {
			t.Fatal(err)
		}
		os.Chmod(ro, 0o555)
		cfg := base
		cfg.PrivateKeyPEM, cfg.Path = priv, ro
		d, err := dest.NewSFTP(ctxT(t), cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		probeFails(t, d, "write probe", dest.ErrPermission, s.Password)
		if files, _ := os.ReadDir(ro); len(files) != 0 {
			t.Fatalf("left %v", files)
		}
	})
	t.Run("DiskFull", func(t *testing.T) {
		full := testserver.SmallTmpfs(t, 1<<20)
		if err := s.Chown(full); err != nil {
			t.Fatal(err)
		}
		cfg := base
		cfg.PrivateKeyPEM, cfg.Path = priv, full
		d, err := dest.NewSFTP(ctxT(t), cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		if u, ok, err := d.Usage(ctxT(t)); err != nil || !ok || u.Total > 2<<20 {
			t.Fatalf("Usage = %+v %v %v", u, ok, err)
		}
		err = d.Save(ctxT(t), "b/big", &genReader{size: 3 << 20}, 3<<20)
		checkErr(t, backend{secrets: []string{s.Password}}, err, dest.ErrNoSpace)
		t.Logf("%v", err)
		if files := localFiles(t, full); len(files) != 0 {
			t.Fatalf("partial files left: %v", files)
		}
		if err := dest.Test(ctxT(t), d); err != nil { // a small object still fits
			t.Fatal(err)
		}
	})
	t.Run("TrustOnFirstUse", func(t *testing.T) {
		var got []string
		cfg := base
		cfg.PrivateKeyPEM, cfg.KnownHostKey = priv, ""
		cfg.OnHostKey = func(k string) { got = append(got, k) }
		d, err := dest.NewSFTP(ctxT(t), cfg)
		if err != nil {
			t.Fatal(err)
		}
		d.Close()
		if len(got) != 1 || got[0] != s.HostKey {
			t.Fatalf("OnHostKey got %q, want %q", got, s.HostKey)
		}
	})
	// Last: restarts the server.
	t.Run("ReconnectAndHostKeyChanged", func(t *testing.T) {
		cfg := base
		cfg.PrivateKeyPEM, cfg.KnownHostKey = priv, "" // pinned on first use, for reconnects
		d, err := dest.NewSFTP(ctxT(t), cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		r := dest.WithRetry(d, 3, 10*time.Millisecond)
		save(t, r, "r/x", "before restart")

		s.Restart(false) // same key: the dropped connection is re-dialed
		if got := read(t, r, "r/x", 0, 0); got != "before restart" {
			t.Fatalf("after restart: %q", got)
		}

		oldKey := s.HostKey
		oldPub, _, _, _, _ := ssh.ParseAuthorizedKey([]byte(oldKey))
		s.Restart(true)
		newPub, _, _, _, _ := ssh.ParseAuthorizedKey([]byte(s.HostKey))
		wantFPs := []string{ssh.FingerprintSHA256(oldPub), ssh.FingerprintSHA256(newPub)}

		_, err = r.Stat(ctxT(t), "r/x") // reconnect to a server with a new key
		if !errors.Is(err, dest.ErrHostKeyChanged) || !dest.IsPermanent(err) {
			t.Fatalf("reconnect after key change: %v", err)
		}
		cfg.KnownHostKey = oldKey
		err = connectFails(t, cfg, dest.ErrHostKeyChanged)
		for _, fp := range wantFPs {
			if !strings.Contains(err.Error(), fp) {
				t.Errorf("message lacks fingerprint %s: %v", fp, err)
			}
		}
	})
}

func TestS3Failures(t *testing.T) {
	s := testserver.StartS3(t)
	base := dest.S3Config{Endpoint: s.Endpoint, Bucket: s.Bucket, AccessKey: s.AccessKey, SecretKey: s.SecretKey, PathStyle: true, Insecure: true}
	open := func(t *testing.T, cfg dest.S3Config) dest.Destination {
		d, err := dest.NewS3(ctxT(t), cfg)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	t.Run("WrongSecret", func(t *testing.T) {
		cfg := base
		cfg.SecretKey = "wrong-" + s.SecretKey
		probeFails(t, open(t, cfg), "write probe", dest.ErrAuth, cfg.SecretKey, s.SecretKey)
	})
	t.Run("WrongAccessKey", func(t *testing.T) {
		cfg := base
		cfg.AccessKey = "nobody"
		probeFails(t, open(t, cfg), "write probe", dest.ErrAuth, s.SecretKey)
	})
	t.Run("MissingBucket", func(t *testing.T) {
		cfg := base
		cfg.Bucket = "no-such-bucket"
		probeFails(t, open(t, cfg), "write probe", dest.ErrBucketMissing, s.SecretKey)
	})
	t.Run("ClosedPort", func(t *testing.T) {
		cfg := base
		cfg.Endpoint = "127.0.0.1:" + strconv.Itoa(closedPort(t))
		probeFails(t, open(t, cfg), "write probe", dest.ErrUnreachable, s.SecretKey)
	})
	t.Run("DiskFull", func(t *testing.T) {
		full := testserver.StartS3On(t, testserver.SmallTmpfs(t, 1<<20))
		cfg := base
		cfg.Endpoint, cfg.SecretKey = full.Endpoint, full.SecretKey
		d := open(t, cfg)
		err := d.Save(ctxT(t), "b/big", &genReader{size: 3 << 20}, 3<<20)
		checkErr(t, backend{secrets: []string{full.SecretKey}}, err, dest.ErrNoSpace)
		t.Logf("%v", err)
		if _, err := d.Stat(ctxT(t), "b/big"); !errors.Is(err, dest.ErrNotFound) {
			t.Fatalf("partial object visible: %v", err)
		}
		if files := localFiles(t, filepath.Join(full.Dir, full.Bucket)); len(files) != 0 {
			t.Fatalf("partial files left: %v", files)
		}
	})
	t.Run("TLSWithCustomCA", func(t *testing.T) {
		s := testserver.StartS3TLS(t)
		cfg := dest.S3Config{Endpoint: s.Endpoint, Bucket: s.Bucket, AccessKey: s.AccessKey, SecretKey: s.SecretKey,
			PathStyle: true, CACertPEM: s.CACertPEM}
		if err := dest.Test(ctxT(t), open(t, cfg)); err != nil {
			t.Fatal(err)
		}
		// Without the CA the certificate is not trusted: a configuration
		// error, not a network hiccup to retry.
		cfg.CACertPEM = nil
		probeFails(t, open(t, cfg), "write probe", dest.ErrInvalid, s.SecretKey)
	})
	t.Run("Location", func(t *testing.T) {
		cfg := base
		cfg.Prefix = "/a/b/"
		if got, want := open(t, cfg).Location(), "s3://"+s.Endpoint+"/"+s.Bucket+"/a/b"; got != want {
			t.Fatalf("Location = %q, want %q", got, want)
		}
	})
}

func TestDirFailures(t *testing.T) {
	t.Run("DiskFull", func(t *testing.T) {
		full := testserver.SmallTmpfs(t, 1<<20)
		d, err := dest.NewDir(full)
		if err != nil {
			t.Fatal(err)
		}
		if u, ok, err := d.Usage(ctxT(t)); err != nil || !ok || u.Total != 1<<20 {
			t.Fatalf("Usage = %+v %v %v", u, ok, err)
		}
		save(t, d, "keep", "small")
		err = d.Save(ctxT(t), "backups/big", &genReader{size: 3 << 20}, 3<<20)
		checkErr(t, backend{}, err, dest.ErrNoSpace)
		if !dest.IsPermanent(err) {
			t.Error("ErrNoSpace not permanent")
		}
		t.Logf("%v", err)
		if files := localFiles(t, full); len(files) != 1 || files[0] != "keep" {
			t.Fatalf("partial files left: %v", files)
		}
		// The failure is permanent: WithRetry gives up at once.
		counted := &countingSaves{Destination: d}
		err = dest.WithRetry(counted, 5, time.Millisecond).Save(ctxT(t), "backups/big", &genReader{size: 3 << 20}, 3<<20)
		if !errors.Is(err, dest.ErrNoSpace) || counted.saves != 1 {
			t.Fatalf("retried a full disk: %v after %d attempts", err, counted.saves)
		}
	})
	t.Run("ReadOnly", func(t *testing.T) {
		ro := testserver.SmallTmpfs(t, 1<<20)
		if out, err := exec.Command("mount", "-o", "remount,ro", ro).CombinedOutput(); err != nil {
			t.Fatalf("remount ro: %v: %s", err, out)
		}
		d, err := dest.NewDir(ro)
		if err != nil {
			t.Fatal(err)
		}
		probeFails(t, d, "write probe", dest.ErrPermission)
	})
	t.Run("NotADirectory", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "file")
		os.WriteFile(f, nil, 0o600)
		if _, err := dest.NewDir(f); !errors.Is(err, dest.ErrInvalid) {
			t.Fatalf("NewDir(file) = %v", err)
		}
	})
	t.Run("ObjectWhereDirectoryIs", func(t *testing.T) {
		d, err := dest.NewDir(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		save(t, d, "a", "file")
		if err := d.Save(ctxT(t), "a/b", strings.NewReader("x"), 1); err == nil {
			t.Fatal("saved below a file")
		}
	})
}

// TestRetry checks the wrapper against a destination that fails on cue.
func TestRetry(t *testing.T) {
	ctx := context.Background()
	inner, err := dest.NewDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	f := &flaky{Destination: inner, fails: 2, err: dest.ErrUnreachable}
	r := dest.WithRetry(f, 3, time.Millisecond)
	if u, ok := r.(interface{ Unwrap() dest.Destination }); !ok || u.Unwrap() != f {
		t.Fatal("no Unwrap")
	}

	// Save: the reader is rewound to where it started for every try.
	rd := strings.NewReader("XXhello")
	rd.Seek(2, 0)
	if err := r.Save(ctx, "a", rd, 5); err != nil || f.calls != 3 {
		t.Fatalf("Save: %v after %d calls", err, f.calls)
	}
	if got := read(t, inner, "a", 0, 0); got != "hello" {
		t.Fatalf("saved %q", got)
	}

	// Too many failures: the last error comes back.
	f.calls, f.fails = 0, 5
	if _, err := r.Stat(ctx, "a"); !errors.Is(err, dest.ErrUnreachable) || f.calls != 3 {
		t.Fatalf("Stat: %v after %d calls", err, f.calls)
	}

	// Permanent errors are not retried.
	f.calls, f.fails, f.err = 0, 5, dest.ErrPermission
	if err := r.Remove(ctx, "a"); !errors.Is(err, dest.ErrPermission) || f.calls != 1 {
		t.Fatalf("Remove: %v after %d calls", err, f.calls)
	}

	// List resumes without repeating names.
	for _, n := range []string{"b", "c", "d"} {
		save(t, inner, n, n)
	}
	f.calls, f.fails, f.err, f.listFailAfter = 0, 1, dest.ErrUnreachable, 2
	var names []string
	err = r.List(ctx, "", func(fi dest.FileInfo) error { names = append(names, fi.Name); return nil })
	if err != nil || strings.Join(names, ",") != "a,b,c,d" {
		t.Fatalf("List: %v, %v", names, err)
	}

	// A done context stops the retries.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	f.calls, f.fails, f.listFailAfter = 0, 5, 0
	if _, err := dest.WithRetry(f, 10, time.Hour).Stat(cctx, "a"); err == nil || f.calls != 1 {
		t.Fatalf("Stat with done context: %v after %d calls", err, f.calls)
	}
}

// flaky fails its first `fails` calls with err (a List fails after passing
// listFailAfter names on).
type flaky struct {
	dest.Destination
	calls, fails, listFailAfter int
	err                         error
}

func (f *flaky) fail() error {
	f.calls++
	if f.calls <= f.fails {
		return f.err
	}
	return nil
}

func (f *flaky) Save(ctx context.Context, name string, r io.ReadSeeker, size int64) error {
	if err := f.fail(); err != nil {
		io.CopyN(io.Discard, r, 3) // consume some, as a failed upload would
		return err
	}
	return f.Destination.Save(ctx, name, r, size)
}

func (f *flaky) Stat(ctx context.Context, name string) (dest.FileInfo, error) {
	if err := f.fail(); err != nil {
		return dest.FileInfo{}, err
	}
	return f.Destination.Stat(ctx, name)
}

func (f *flaky) Remove(ctx context.Context, name string) error {
	if err := f.fail(); err != nil {
		return err
	}
	return f.Destination.Remove(ctx, name)
}

func (f *flaky) List(ctx context.Context, prefix string, fn func(dest.FileInfo) error) error {
	failing := f.fail() != nil
	n := 0
	return f.Destination.List(ctx, prefix, func(fi dest.FileInfo) error {
		if failing && n == f.listFailAfter {
			return f.err
		}
		n++
		return fn(fi)
	})
}

// countingSaves counts the Save calls that reach the destination.
type countingSaves struct {
	dest.Destination
	saves int
}

func (c *countingSaves) Save(ctx context.Context, name string, r io.ReadSeeker, size int64) error {
	c.saves++
	return c.Destination.Save(ctx, name, r, size)
}
