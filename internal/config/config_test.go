package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func write(t *testing.T, s string) string {
	p := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(p, []byte(s), 0o600)
	return p
}

func TestLoadOverridesDefaults(t *testing.T) {
	p := write(t, "data_dir: d\nlisten: 127.0.0.1:9\nstorage:\n  write_retry_delay: 250ms\n  min_free_bytes: 0\n")
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.DataDir != filepath.Join(filepath.Dir(p), "d") || c.Listen != "127.0.0.1:9" {
		t.Fatalf("%+v", c)
	}
	if c.Storage.WriteRetryDelay.Duration != 250*time.Millisecond || c.Storage.MinFreeBytes != 0 {
		t.Fatalf("storage %+v", c.Storage)
	}
	if c.Journal.MaxSegmentBytes != 64<<20 || !c.Keystore.AutoOpen || c.Log.Level != "info" {
		t.Fatalf("defaults lost: %+v", c)
	}
}

func TestLoadRefusesMistakes(t *testing.T) {
	for body, want := range map[string]string{
		"data_dir: d\nlisten_addr: x\n":                       "listen_addr",
		"data_dir: d\nlog:\n  level: loud\n":                  "log.level",
		"data_dir: d\njournal:\n  max_segment_age: 5\n":       "duration",
		"data_dir: d\ntls:\n  cert_file: a\n":                 "go together",
		"data_dir: [\n":                                       "config",
		"data_dir: d\nmemory:\n  gc_percent: 10\n":            "memory.gc_percent",
		"data_dir: d\nmemory:\n  gc_percent: 5000\n":          "memory.gc_percent",
		"data_dir: d\nmemory:\n  gc_soft_limit_bytes: 1000\n": "memory.gc_soft_limit_bytes",
	} {
		_, err := Load(write(t, body))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want mention of %q", body, err, want)
		}
	}
}

func TestEmptyFileUsesDefaults(t *testing.T) {
	c, err := Load(write(t, ""))
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:8200" || c.Memory.GCPercent != DefaultGCPercent || c.Memory.GCSoftLimitBytes != 0 {
		t.Fatalf("%+v", c)
	}
	c, err = Load(write(t, "memory:\n  gc_percent: 100\n  gc_soft_limit_bytes: 1073741824\n"))
	if err != nil || c.Memory.GCPercent != 100 || c.Memory.GCSoftLimitBytes != 1<<30 {
		t.Fatalf("%+v %v", c.Memory, err)
	}
}

// TestKMIPListen: off by default; a host:port turns it on; it
// needs TLS with a client CA.
func TestKMIPListen(t *testing.T) {
	c, err := Load(write(t, "data_dir: d\n"))
	if err != nil || c.KMIP.Listen != "" {
		t.Fatalf("default kmip.listen %q (%v): want empty (off)", c.KMIP.Listen, err)
	}
	c, err = Load(write(t, "data_dir: d\nkmip:\n  listen: 0.0.0.0:5696\n"))
	if err != nil || c.KMIP.Listen != "0.0.0.0:5696" {
		t.Fatalf("kmip.listen %q (%v)", c.KMIP.Listen, err)
	}
	for body, want := range map[string]string{
		"data_dir: d\nkmip:\n  listen: 5696\n":                                       "kmip.listen",
		"data_dir: d\ntls:\n  disable: true\nkmip:\n  listen: :5696\n":               "needs TLS",
		"data_dir: d\ntls:\n  cert_file: a\n  key_file: b\nkmip:\n  listen: :5696\n": "client_ca_file",
		"data_dir: d\nkmip:\n  port: 5696\n":                                         "port",
	} {
		_, err := Load(write(t, body))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want mention of %q", body, err, want)
		}
	}
}

func TestAuditRetention(t *testing.T) {
	c, err := Load(write(t, "data_dir: d\n"))
	if err != nil || c.Audit.Retention.Duration != 0 {
		t.Fatalf("default: %v %v", c.Audit.Retention, err)
	}
	for body, want := range map[string]time.Duration{
		"data_dir: d\naudit:\n  retention: 90d\n": 90 * 24 * time.Hour,
		"data_dir: d\naudit:\n  retention: 36h\n": 36 * time.Hour,
	} {
		c, err := Load(write(t, body))
		if err != nil || c.Audit.Retention.Duration != want {
			t.Errorf("%q: %v %v, want %v", body, c.Audit.Retention, err, want)
		}
	}
	for _, bad := range []string{"90", "1.5d", "-1d", "-1h", "x"} {
		if _, err := Load(write(t, "data_dir: d\naudit:\n  retention: \""+bad+"\"\n")); err == nil || !strings.Contains(err.Error(), "retention") && !strings.Contains(err.Error(), "line") {
			t.Errorf("retention %q accepted or unclear: %v", bad, err)
		}
	}
}
