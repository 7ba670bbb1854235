package cli

import (
	"encoding/json"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func TestRedactYAMLBlanksSecretNamedValues(t *testing.T) {
	in := `
data_dir: /var/lib/coffer
tls:
  key_file: /etc/coffer/tls/server.key
destinations:
  - name: nas
    password: hunter2-sftp
    secret_key: s3-secret-xyz
    token: tok-abc
    recovery_passphrase: correct horse
`
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(in), &n); err != nil {
		t.Fatal(err)
	}
	redactYAML(&n)
	out, err := yaml.Marshal(&n)
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"hunter2-sftp", "s3-secret-xyz", "tok-abc", "correct horse"} {
		if strings.Contains(string(out), secret) {
			t.Errorf("a secret-named value survived redaction:\n%s", out)
		}
	}
	for _, kept := range []string{"/var/lib/coffer", "/etc/coffer/tls/server.key", "name: nas", "[REDACTED]"} {
		if !strings.Contains(string(out), kept) {
			t.Errorf("%q missing after redaction:\n%s", kept, out)
		}
	}
}

func TestBundleScrubsTheToken(t *testing.T) {
	b := &supportBundle{scrub: []string{"s.tok3n"}}
	b.add("status.json", "status", []byte(`{"a":"s.tok3n","b":"x"}`))
	if got := string(b.files[0].data); strings.Contains(got, "s.tok3n") || !strings.Contains(got, "[REDACTED]") {
		t.Fatalf("scrubbed file: %s", got)
	}
}

func TestVersionPrintsBuildAndFormats(t *testing.T) {
	code, out, errOut := run("version")
	if code != 0 {
		t.Fatalf("version: %d %s", code, errOut)
	}
	for _, want := range []string{"coffer ", "commit:", "go:       go1.", "keystore", "state-schema", "journal", "backup-bundle", "audit", "catalog"} {
		if !strings.Contains(out, want) {
			t.Errorf("version output has no %q:\n%s", want, out)
		}
	}
	code, out, errOut = run("version", "--format", "json")
	var b BuildInfo
	if code != 0 || json.Unmarshal([]byte(out), &b) != nil || b.Commit == "" || len(b.Formats) < 4 {
		t.Fatalf("version --format json: %d %q %s", code, out, errOut)
	}
}

func TestBundleRefusesADirThatIsNoDataDir(t *testing.T) {
	code, _, errOut := run("debug", "bundle", "--data-dir", t.TempDir(), "--out", t.TempDir()+"/b.tar.gz")
	if code == 0 || !strings.Contains(errOut, "not a Coffer data dir") {
		t.Fatalf("bundle of an empty dir: %d %s", code, errOut)
	}
}
