// Package config reads Coffer's server configuration file (YAML). Every
// setting is documented in docs/reference/config.md; unknown keys are refused.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Duration is a time.Duration written as "5s", "1h".
type Duration struct{ time.Duration }

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return fmt.Errorf("line %d: duration must be a string like \"5s\"", n.Line)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %v", n.Line, err)
	}
	d.Duration = v
	return nil
}

// MarshalYAML writes the string form.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// Days is a Duration that also takes whole days: "90d", or "2160h".
type Days struct{ time.Duration }

// UnmarshalYAML parses "<N>d" or a Go duration string.
func (d *Days) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return fmt.Errorf("line %d: duration must be a string like \"90d\" or \"12h\"", n.Line)
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		v, err := strconv.ParseUint(days, 10, 32)
		if err != nil || v > 36500 {
			return fmt.Errorf("line %d: %q: use whole days up to 36500, like \"90d\"", n.Line, s)
		}
		d.Duration = time.Duration(v) * 24 * time.Hour
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %v", n.Line, err)
	}
	d.Duration = v
	return nil
}

// MarshalYAML writes whole days as "<N>d", other values as Go durations.
func (d Days) MarshalYAML() (any, error) {
	if d.Duration != 0 && d.Duration%(24*time.Hour) == 0 {
		return strconv.FormatInt(int64(d.Duration/(24*time.Hour)), 10) + "d", nil
	}
	return d.String(), nil
}

// Config is the server configuration.
type Config struct {
	DataDir  string `yaml:"data_dir"`
	Listen   string `yaml:"listen"`
	Name     string `yaml:"name"`
	TLS      TLS    `yaml:"tls"`
	Log      Log    `yaml:"log"`
	Keystore struct {
		AutoOpen bool `yaml:"auto_open"`
		KDF      struct {
			Time      uint32 `yaml:"time"`
			MemoryKiB uint32 `yaml:"memory_kib"`
			Threads   uint8  `yaml:"threads"`
		} `yaml:"kdf"`
	} `yaml:"keystore"`
	Journal struct {
		MaxSegmentBytes int64    `yaml:"max_segment_bytes"`
		MaxSegmentAge   Duration `yaml:"max_segment_age"`
		// KeepSegments: closed segments kept beyond what destinations need.
		KeepSegments int `yaml:"keep_segments"`
		// Prune removes closed segments nothing needs (default true).
		Prune *bool `yaml:"prune"`
		// MirrorTimeout: how long a write waits for the journal mirror's
		// fsync before the mirror is marked behind.
		MirrorTimeout Duration `yaml:"mirror_timeout"`
	} `yaml:"journal"`
	Storage struct {
		WriteRetryDelay   Duration `yaml:"write_retry_delay"`
		MinFreeBytes      uint64   `yaml:"min_free_bytes"`
		SnapshotThreshold uint64   `yaml:"snapshot_threshold"`
	} `yaml:"storage"`
	Shutdown struct {
		SmartTimeout Duration `yaml:"smart_timeout"`
	} `yaml:"shutdown"`
	Auth struct {
		SessionTTL Duration `yaml:"session_ttl"`
		// ClientCertDays is the lifetime of endpoint client certificates.
		ClientCertDays int `yaml:"client_cert_days"`
	} `yaml:"auth"`
	Audit struct {
		Syslog       bool   `yaml:"syslog"`
		SyslogTag    string `yaml:"syslog_tag"`
		MaxFileBytes int64  `yaml:"max_file_bytes"`
		// Retention: closed audit files older than this are removed once
		// every backup destination (LOCAL aside) holds a copy; 0 keeps them.
		Retention Days `yaml:"retention"`
	} `yaml:"audit"`
	Metrics struct {
		Disable bool `yaml:"disable"`
	} `yaml:"metrics"`
	Backup struct {
		// CheckInterval: how often schedules and journal archiving are checked.
		CheckInterval Duration `yaml:"check_interval"`
		// AutoFullAfterKeyChange: after a master-key rotation or a keystore or
		// recovery passphrase change, take a full backup to every destination
		// with an active schedule.
		AutoFullAfterKeyChange bool `yaml:"auto_full_after_key_change"`
		// FreezeTimeout ends a SIGUSR1 / coffer freeze nobody thawed.
		FreezeTimeout Duration `yaml:"freeze_timeout"`
		// ArchiveTimeout closes the journal segment at least this often, so the
		// data at risk between archives is bounded in time (0: journal.max_segment_age).
		ArchiveTimeout Duration `yaml:"archive_timeout"`
		// DrillMaxAge: an alert is raised for a destination holding backups
		// whose last successful restore drill is older (0: no alert).
		DrillMaxAge Days `yaml:"drill_max_age"`
	} `yaml:"backup"`
	// Cluster: high availability on Raft. Empty listen: a
	// standalone node.
	Cluster struct {
		// Listen is host:port of the raft transport (mutual TLS between
		// nodes); Advertise is what the other nodes dial (default Listen).
		Listen    string `yaml:"listen"`
		Advertise string `yaml:"advertise"`
		// APIURL is this node's https address for the others (forwarded
		// writes); default: https:// and the API listener's address.
		APIURL string `yaml:"api_url"`
		// FailoverThreshold: how long followers wait without the leader
		// before electing another (default 3s).
		FailoverThreshold Duration `yaml:"failover_threshold"`
		// AllowReadOnlyRestrictedMode: a node without quorum serves reads
		// and refuses writes (true, the default), or refuses everything.
		AllowReadOnlyRestrictedMode *bool `yaml:"allow_read_only_restricted_mode"`
	} `yaml:"cluster"`
	// KMIP: the KMIP listener. Empty listen: no KMIP listener.
	KMIP struct {
		// Listen is host:port for KMIP over mutual TLS (5696 is KMIP's port).
		Listen string `yaml:"listen"`
	} `yaml:"kmip"`
	Connections struct {
		// PerSource bounds the connections one source address (IPv6: one
		// /64) holds on each listener (HTTPS API, KMIP).
		PerSource int `yaml:"per_source"`
		// Max bounds the connections of each listener; the last eighth of
		// it is kept for sources that hold none.
		Max int `yaml:"max"`
	} `yaml:"connections"`
	Memory struct {
		// Lock locks the server's memory (mlockall) so keys are never
		// written to swap.
		Lock bool `yaml:"lock"`
		// GCPercent is the garbage collector's target (GOGC) for the
		// server process: the heap grows by this percentage of the live
		// heap between collections. GOGC in the environment wins.
		GCPercent int `yaml:"gc_percent"`
		// GCSoftLimitBytes is a soft limit on the process's Go memory
		// (debug.SetMemoryLimit): near it the collector runs more often,
		// whatever gc_percent says. 0: none. GOMEMLIMIT in the
		// environment wins.
		GCSoftLimitBytes int64 `yaml:"gc_soft_limit_bytes"`
	} `yaml:"memory"`
	Debug struct {
		// CoreDumps keeps the process dumpable with its inherited core
		// limit. A core file holds every key in memory: debugging only.
		CoreDumps bool `yaml:"core_dumps"`
		// PProf serves net/http/pprof (CPU, heap, goroutine profiles) on
		// PProfListen, a loopback address only. Profiles show no key
		// material, but goroutine dumps show request paths: debugging only.
		PProf       bool   `yaml:"pprof"`
		PProfListen string `yaml:"pprof_listen"`
	} `yaml:"debug"`
}

// TLS settings.
type TLS struct {
	Disable  bool     `yaml:"disable"`
	CertFile string   `yaml:"cert_file"`
	KeyFile  string   `yaml:"key_file"`
	Hosts    []string `yaml:"hosts"`
	// ClientCAFile: CA that signs endpoint client certificates when the
	// server uses its own cert_file (with generated certificates it is the
	// generated CA). Needs client_ca_key_file to enrol with certificates.
	ClientCAFile    string `yaml:"client_ca_file"`
	ClientCAKeyFile string `yaml:"client_ca_key_file"`
}

// Log settings.
type Log struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// DefaultGCPercent is memory.gc_percent's default: a collection when the
// heap has grown by four times the live heap, not by once (Go's own default,
// 100). The server's live heap is small (bounded caches, streamed backups),
// so the larger heap costs little memory and the collector runs a quarter
// as often; docs/performance.md has the measurements.
const DefaultGCPercent = 400

// Default returns the defaults every setting falls back to.
func Default() Config {
	var c Config
	c.DataDir = "/var/lib/coffer"
	c.Listen = "127.0.0.1:8200"
	c.Name = "coffer"
	c.Log.Level = "info"
	c.Log.Format = "json"
	c.Keystore.AutoOpen = true
	c.Journal.MaxSegmentBytes = 64 << 20
	c.Journal.MaxSegmentAge = Duration{time.Hour}
	c.Journal.KeepSegments = 24
	c.Journal.MirrorTimeout = Duration{2 * time.Second}
	c.Storage.WriteRetryDelay = Duration{5 * time.Second}
	c.Storage.MinFreeBytes = 64 << 20
	c.Auth.SessionTTL = Duration{8 * time.Hour}
	c.Auth.ClientCertDays = 730
	c.Audit.SyslogTag = "coffer-audit"
	c.Audit.MaxFileBytes = 64 << 20
	c.Debug.PProfListen = "127.0.0.1:6060"
	c.Backup.CheckInterval = Duration{30 * time.Second}
	c.Backup.AutoFullAfterKeyChange = true
	c.Backup.FreezeTimeout = Duration{5 * time.Minute}
	c.Backup.DrillMaxAge = Days{7 * 24 * time.Hour}
	c.Memory.Lock = true
	c.Memory.GCPercent = DefaultGCPercent
	c.Connections.PerSource = 64
	c.Connections.Max = 1024
	return c
}

// Load reads path over the defaults.
func Load(path string) (Config, error) {
	c := Default()
	b, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("read config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return c, fmt.Errorf("config %s: %w", path, err)
	}
	if !filepath.IsAbs(c.DataDir) {
		c.DataDir = filepath.Join(filepath.Dir(path), c.DataDir)
	}
	return c, c.Validate()
}

// Validate checks values.
func (c Config) Validate() error {
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("config: log.level %q: use debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "json", "text":
	default:
		return fmt.Errorf("config: log.format %q: use json or text", c.Log.Format)
	}
	if c.DataDir == "" {
		return errors.New("config: data_dir is required")
	}
	if c.Connections.PerSource < 1 || c.Connections.Max < 8 || c.Connections.PerSource > c.Connections.Max {
		return fmt.Errorf("config: connections.per_source %d and connections.max %d: per_source at least 1, max at least 8, per_source at most max", c.Connections.PerSource, c.Connections.Max)
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		return errors.New("config: tls.cert_file and tls.key_file go together")
	}
	if c.TLS.ClientCAKeyFile != "" && c.TLS.ClientCAFile == "" {
		return errors.New("config: tls.client_ca_key_file needs tls.client_ca_file")
	}
	if c.Auth.SessionTTL.Duration < time.Minute || c.Auth.SessionTTL.Duration > 30*24*time.Hour {
		return fmt.Errorf("config: auth.session_ttl %s: use 1m to 720h", c.Auth.SessionTTL.Duration)
	}
	if c.Auth.ClientCertDays < 1 || c.Auth.ClientCertDays > 3650 {
		return fmt.Errorf("config: auth.client_cert_days %d: use 1 to 3650", c.Auth.ClientCertDays)
	}
	if t := c.Cluster.FailoverThreshold.Duration; t != 0 && (t < 300*time.Millisecond || t > 10*time.Minute) {
		return fmt.Errorf("config: cluster.failover_threshold %s: use 300ms to 10m", t)
	}
	if c.Cluster.Listen != "" && c.Cluster.APIURL == "" {
		if host, _, err := net.SplitHostPort(c.Listen); err == nil && (host == "" || net.ParseIP(host) != nil && net.ParseIP(host).IsUnspecified()) {
			return fmt.Errorf("config: listen %s is a wildcard address: set cluster.api_url to the https address the other nodes reach this one at", c.Listen)
		}
	}
	if c.Cluster.Listen != "" && c.TLS.Disable {
		return fmt.Errorf("config: cluster.listen needs TLS (the nodes authenticate each other with certificates from Coffer's CA)")
	}
	if c.Backup.CheckInterval.Duration < time.Second || c.Backup.CheckInterval.Duration > time.Hour {
		return fmt.Errorf("config: backup.check_interval %s: use 1s to 1h", c.Backup.CheckInterval.Duration)
	}
	if c.Backup.FreezeTimeout.Duration < time.Second || c.Backup.FreezeTimeout.Duration > 24*time.Hour {
		return fmt.Errorf("config: backup.freeze_timeout %s: use 1s to 24h", c.Backup.FreezeTimeout.Duration)
	}
	if c.Backup.DrillMaxAge.Duration < 0 {
		return errors.New("config: backup.drill_max_age must not be negative (0 raises no drill alert)")
	}
	if c.Backup.ArchiveTimeout.Duration < 0 {
		return errors.New("config: backup.archive_timeout must not be negative")
	}
	if d := c.Journal.MirrorTimeout.Duration; d < 10*time.Millisecond || d > time.Hour {
		return fmt.Errorf("config: journal.mirror_timeout %s: use 10ms to 1h", d)
	}
	if k := c.Journal.KeepSegments; k < 1 || k > 1000000 {
		return fmt.Errorf("config: journal.keep_segments %d: use 1 to 1000000 (journal.prune: false turns automatic pruning off)", k)
	}
	// KMIP: mutual TLS only.
	if c.KMIP.Listen != "" {
		if _, _, err := net.SplitHostPort(c.KMIP.Listen); err != nil {
			return fmt.Errorf("config: kmip.listen %q: use host:port, e.g. 0.0.0.0:5696", c.KMIP.Listen)
		}
		if c.TLS.Disable {
			return errors.New("config: kmip.listen needs TLS: KMIP clients authenticate with certificates (remove tls.disable)")
		}
		if c.TLS.CertFile != "" && c.TLS.ClientCAFile == "" {
			return errors.New("config: kmip.listen with tls.cert_file needs tls.client_ca_file (the CA of endpoint certificates)")
		}
	}
	if c.Audit.Retention.Duration < 0 {
		return errors.New("config: audit.retention must not be negative (0 keeps audit files for ever)")
	}
	if c.Audit.MaxFileBytes < 1<<20 {
		return fmt.Errorf("config: audit.max_file_bytes %d: at least 1 MiB", c.Audit.MaxFileBytes)
	}
	if p := c.Memory.GCPercent; p < 25 || p > 2000 {
		return fmt.Errorf("config: memory.gc_percent %d: use 25 to 2000 (100 is Go's default; GOGC in the environment overrides it)", p)
	}
	if l := c.Memory.GCSoftLimitBytes; l != 0 && l < 64<<20 {
		return fmt.Errorf("config: memory.gc_soft_limit_bytes %d: 0 (none) or at least 64 MiB", l)
	}
	if c.Debug.PProf {
		host, _, err := net.SplitHostPort(c.Debug.PProfListen)
		if ip := net.ParseIP(host); err != nil || (host != "localhost" && (ip == nil || !ip.IsLoopback())) {
			return fmt.Errorf("config: debug.pprof_listen %q: use a loopback host:port, e.g. 127.0.0.1:6060 (pprof has no authentication)", c.Debug.PProfListen)
		}
	}
	return nil
}
