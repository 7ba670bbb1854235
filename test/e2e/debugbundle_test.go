package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coffer-kms/coffer/client"
	"github.com/coffer-kms/coffer/internal/testserver"
)

// TestDebugBundleHoldsNoSecret fills a server with known secrets (a key's
// material, a KV secret, the root token, an endpoint token, an SFTP
// password, an S3 secret key, the keystore and recovery passphrases),
// builds support bundles online (control socket, and HTTPS with the root
// token) and offline (stopped data dir), and searches every byte of every
// file for each secret: raw, hex and base64.
func TestDebugBundleHoldsNoSecret(t *testing.T) {
	sshd := testserver.StartSSHD(t)
	s3 := testserver.StartS3(t)
	n := initialisedNode(t, filepath.Join(t.TempDir(), "data"), "")
	ctx := context.Background()
	c := n.https()

	secrets := map[string][]byte{
		"keystore passphrase": []byte(testPassphrase),
		"root token":          []byte(n.token),
		"sftp password":       []byte(sshd.Password),
		"s3 secret key":       []byte(s3.SecretKey),
	}
	key, err := c.CreateObject(ctx, client.CreateObjectRequest{Wallet: "default", Name: "bundle-key", Type: "symmetric_key", Algorithm: "AES"})
	if err != nil {
		t.Fatal(err)
	}
	km, err := c.GetObject(ctx, key.ID, 0)
	if err != nil || km.Material == nil || len(km.Material.Value) == 0 {
		t.Fatalf("key material: %+v %v", km, err)
	}
	secrets["key material"] = km.Material.Value
	kv := []byte("kv-secret-value-7c1e9b3a5d")
	if _, err := c.PutSecret(ctx, "default", "bundle-secret", kv); err != nil {
		t.Fatal(err)
	}
	secrets["kv secret"] = kv
	enr, err := c.EnrollEndpoint(ctx, client.EnrollRequest{Name: "bundle-app"})
	if err != nil || enr.Token == "" {
		t.Fatalf("enroll: %+v %v", enr, err)
	}
	secrets["endpoint token"] = []byte(enr.Token)
	recovery := "recovery-passphrase-4f2a8c61e0"
	if _, err := c.SetRecoveryPassphrase(ctx, "", recovery); err != nil {
		t.Fatal(err)
	}
	secrets["recovery passphrase"] = []byte(recovery)
	if _, err := c.AddDestination(ctx, client.DestinationConfig{Name: "sftp-pw", Kind: "sftp", Host: sshd.Host, Port: sshd.Port, User: sshd.User,
		Password: sshd.Password, Path: filepath.Join(sshd.Dir, "pw")}); err != nil {
		t.Fatalf("sftp destination: %v", err)
	}
	if _, err := c.AddDestination(ctx, client.DestinationConfig{Name: "s3", Kind: "s3", Endpoint: s3.Endpoint, Bucket: s3.Bucket,
		AccessKey: s3.AccessKey, SecretKey: s3.SecretKey, PathStyle: true, Insecure: true}); err != nil {
		t.Fatalf("s3 destination: %v", err)
	}
	if _, err := c.RunBackup(ctx, "s3", "full", true); err != nil {
		t.Fatalf("backup: %v", err)
	}

	dir := t.TempDir()
	// Online through the control socket.
	local := filepath.Join(dir, "local.tar.gz")
	if out, err := coffer(t, nil, "debug", "bundle", "--data-dir", n.dataDir, "--config", n.config, "--out", local); err != nil {
		t.Fatalf("debug bundle: %v\n%s", err, out)
	}
	files := readBundle(t, local)
	for _, want := range []string{"manifest.txt", "version.txt", "config.yaml", "status.json", "alerts.json", "cluster-status.json",
		"journal-list.json", "backup-destinations.json", "backup-schedules.json", "backup-catalog.json", "metrics.txt",
		"goroutines.txt", "server-log.txt", "disk.txt", "system.txt"} {
		if _, ok := files[want]; !ok {
			t.Errorf("online bundle: no %s (files: %v)", want, keys(files))
		}
	}
	for name := range files {
		if name != "manifest.txt" && !strings.Contains(string(files["manifest.txt"]), name) {
			t.Errorf("manifest.txt does not list %s", name)
		}
	}
	if !strings.Contains(string(files["goroutines.txt"]), "goroutine profile:") || !strings.Contains(string(files["metrics.txt"]), "# TYPE") ||
		!strings.Contains(string(files["backup-catalog.json"]), `"s3"`) {
		t.Errorf("goroutines, metrics or catalog look wrong:\n%.300s\n%.300s\n%.300s", files["goroutines.txt"], files["metrics.txt"], files["backup-catalog.json"])
	}
	assertBundleHasNoSecret(t, "online bundle (control socket)", files, secrets)

	// Online over HTTPS with the root token: the token itself is scrubbed.
	remote := filepath.Join(dir, "remote.tar.gz")
	if out, err := coffer(t, []string{"COFFER_TOKEN=" + n.token}, "debug", "bundle", "--address", n.url, "--ca-cert", n.caFile,
		"--config", n.config, "--out", remote); err != nil {
		t.Fatalf("debug bundle over https: %v\n%s", err, out)
	}
	files = readBundle(t, remote)
	if _, ok := files["goroutines.txt"]; !ok {
		t.Errorf("https bundle has no goroutine dump: %v", keys(files))
	}
	assertBundleHasNoSecret(t, "online bundle (https, root token)", files, secrets)
	if fi, err := os.Stat(remote); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("bundle file mode: %v %v", fi, err)
	}

	// Offline: the stopped data dir, with coffer check.
	n.stop()
	offline := filepath.Join(dir, "offline.tar.gz")
	if out, err := coffer(t, nil, "debug", "bundle", "--data-dir", n.dataDir, "--config", n.config, "--out", offline); err != nil {
		t.Fatalf("offline debug bundle: %v\n%s", err, out)
	}
	files = readBundle(t, offline)
	if !strings.Contains(string(files["check.txt"]), "state") || files["journal-list.txt"] == nil {
		t.Errorf("offline bundle: check or journal list missing:\n%s\n%v", files["check.txt"], keys(files))
	}
	assertBundleHasNoSecret(t, "offline bundle", files, secrets)
}

// readBundle returns the files of a support bundle by base name.
func readBundle(t *testing.T, path string) map[string][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	files := map[string][]byte{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[filepath.Base(h.Name)] = data
	}
	return files
}

func keys(m map[string][]byte) []string {
	var k []string
	for n := range m {
		k = append(k, n)
	}
	return k
}

// assertBundleHasNoSecret searches every file for every secret, raw, hex (both
// cases) and base64 (standard and URL alphabets, padded or not). Failures
// name the secret and the file, never the secret's value.
func assertBundleHasNoSecret(t *testing.T, what string, files map[string][]byte, secrets map[string][]byte) {
	t.Helper()
	for name, s := range secrets {
		forms := [][]byte{s, []byte(hex.EncodeToString(s)), []byte(strings.ToUpper(hex.EncodeToString(s))),
			[]byte(base64.StdEncoding.EncodeToString(s)), []byte(base64.RawStdEncoding.EncodeToString(s)),
			[]byte(base64.URLEncoding.EncodeToString(s)), []byte(base64.RawURLEncoding.EncodeToString(s))}
		for file, data := range files {
			for i, f := range forms {
				if len(f) > 0 && bytes.Contains(data, f) {
					t.Errorf("%s: %s holds the %s (form %d)", what, file, name, i)
				}
			}
		}
	}
}
