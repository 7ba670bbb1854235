package cli

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/coffer-kms/coffer/client"
	"github.com/coffer-kms/coffer/internal/config"
	"github.com/coffer-kms/coffer/internal/datadir"
	"github.com/coffer-kms/coffer/internal/fsutil"
	"github.com/coffer-kms/coffer/internal/server"
)

// defaultConfigPath is where the Debian package installs the configuration.
const defaultConfigPath = "/etc/coffer/coffer.yaml"

func newDebugCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "debug",
		Short: "Support tools: the support bundle",
	}
	cmd.AddCommand(newDebugBundleCmd(g))
	return cmd
}

func newDebugBundleCmd(g *globals) *cobra.Command {
	var out, configPath string
	var since time.Duration
	cmd := &cobra.Command{
		Use:   "bundle [--out FILE] [--since 24h]",
		Short: "Write a support bundle (.tar.gz) with no key, token, passphrase or destination secret",
		Long: `Write one .tar.gz to send to support: version and build information, the
configuration with every secret redacted, the status, cluster status and
alerts, the server log of the last --since (from the systemd journal: the
server logs to stderr), the journal segments, the backup destinations,
schedules and catalog summary, a metrics snapshot, a goroutine dump, disk
use, and the operating system and limits. manifest.txt in the bundle lists
every file and what it holds.

Online (a running server, through the API: a system administrator's token,
or the local control socket with --data-dir) or offline (--data-dir of a
stopped server: then "coffer check --auto" runs on it and the bundle holds
its output, and the parts only a running server knows are left out).

The bundle never holds key material, tokens, passphrases or destination
passwords and secret keys: the API does not return them, destination
secrets are blanked, configuration values whose name says password,
passphrase, secret or token are replaced by [REDACTED], and the token the
command uses is removed from every file. Read it before sending it.`,
		Example: `  coffer debug bundle --data-dir /var/lib/coffer
  coffer debug bundle --address https://coffer1:8200 --out /tmp/coffer-support.tar.gz --since 2h
  systemctl stop coffer && coffer debug bundle --data-dir /var/lib/coffer   # offline, with coffer check`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if since <= 0 {
				return errors.New("--since must be positive, e.g. 24h")
			}
			if out == "" {
				out = "coffer-support-" + time.Now().UTC().Format("20060102T150405Z") + ".tar.gz"
			}
			dir := g.dataDir
			if dir == "" {
				dir = os.Getenv(envDataDir)
			}
			b := &supportBundle{since: since, now: time.Now().UTC(), dataDir: dir, configPath: configPath}
			if dir != "" && !server.Locked(dir) {
				if _, err := os.Stat(datadir.StatePath(dir)); err != nil { // #nosec G703 -- the data dir the operator named with --data-dir
					return fmt.Errorf("%s is not a Coffer data dir and no server runs on it: %w", dir, err)
				}
				b.offline = true
			}
			if configPath == "" {
				if _, err := os.Stat(defaultConfigPath); err == nil {
					b.configPath = defaultConfigPath
				}
			}
			if !b.offline {
				c, err := g.client()
				if err != nil {
					return err
				}
				b.c = c
				if tok := c.Token(); tok != "" {
					b.scrub = append(b.scrub, tok)
				}
				b.ctx, b.cancel = g.ctx()
				defer b.cancel()
			}
			data, err := b.build()
			if err != nil {
				return err
			}
			if err := fsutil.WriteFile(out, data); err != nil {
				return fmt.Errorf("write the support bundle %s: %w", out, err)
			}
			mode := "online"
			if b.offline {
				mode = "offline"
			}
			return g.printResult(cmd, map[string]any{"file": out, "bytes": len(data), "files": len(b.files), "mode": mode},
				"support bundle %s (%s, %d files, %d bytes): read it, then send it to support", out, mode, len(b.files), len(data))
		},
	}
	f := cmd.Flags()
	f.StringVar(&out, "out", "", "bundle file (default coffer-support-<time>.tar.gz in the current directory; written 0600)")
	f.DurationVar(&since, "since", 24*time.Hour, "how far back the log tail and the backup records go")
	f.StringVar(&configPath, "config", "", "the server's configuration file, included redacted (default "+defaultConfigPath+" when present)")
	return cmd
}

// supportBundle collects the files of one support bundle.
type supportBundle struct {
	c          *client.Client
	ctx        context.Context
	cancel     context.CancelFunc
	offline    bool
	dataDir    string
	configPath string
	since      time.Duration
	now        time.Time
	scrub      []string // removed from every file (the CLI's token)
	files      []bundleFile
}

type bundleFile struct {
	name, what string
	data       []byte
}

// add records one file; every occurrence of a scrubbed string is replaced.
func (b *supportBundle) add(name, what string, data []byte) {
	for _, s := range b.scrub {
		data = bytes.ReplaceAll(data, []byte(s), []byte("[REDACTED]"))
	}
	b.files = append(b.files, bundleFile{name: name, what: what, data: data})
}

// addJSON records v as indented JSON, or the error that kept it out.
func (b *supportBundle) addJSON(name, what string, v any, err error) {
	if err != nil {
		b.add(strings.TrimSuffix(name, ".json")+".error.txt", what+" (not available)", []byte(err.Error()+"\n"))
		return
	}
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		b.add(strings.TrimSuffix(name, ".json")+".error.txt", what+" (not available)", []byte(err.Error()+"\n"))
		return
	}
	b.add(name, what, append(data, '\n'))
}

func (b *supportBundle) build() ([]byte, error) {
	bi := Build()
	b.add("version.txt", "version, commit, Go version, on-disk format versions of this coffer binary", []byte(bi.String()))
	b.addConfig()
	if b.offline {
		b.addOffline()
	} else {
		b.addOnline()
	}
	b.addLog()
	b.addDisk()
	b.addSystem()
	return b.tarball()
}

// redactedKey matches configuration keys whose values are secrets.
var redactedKey = regexp.MustCompile(`(?i)pass|secret|token|credential`)

// redactYAML replaces the values of secret-named keys in n.
func redactYAML(n *yaml.Node) {
	switch n.Kind {
	case yaml.DocumentNode, yaml.SequenceNode:
		for _, c := range n.Content {
			redactYAML(c)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			if redactedKey.MatchString(n.Content[i].Value) {
				n.Content[i+1] = &yaml.Node{Kind: yaml.ScalarNode, Value: "[REDACTED]"}
				continue
			}
			redactYAML(n.Content[i+1])
		}
	}
}

// addConfig adds the effective configuration (the file over the defaults),
// with secret-named values redacted.
func (b *supportBundle) addConfig() {
	if b.configPath == "" {
		b.add("config.txt", "configuration (not found)", []byte("no configuration file: pass --config FILE (the server's --config)\n"))
		return
	}
	cfg, err := config.Load(b.configPath)
	if err != nil {
		b.add("config.error.txt", "configuration (not loaded)", []byte(err.Error()+"\n"))
		return
	}
	var n yaml.Node
	if err := n.Encode(cfg); err != nil {
		b.add("config.error.txt", "configuration (not encoded)", []byte(err.Error()+"\n"))
		return
	}
	redactYAML(&n)
	data, err := yaml.Marshal(&n)
	if err != nil {
		b.add("config.error.txt", "configuration (not encoded)", []byte(err.Error()+"\n"))
		return
	}
	if b.dataDir == "" {
		b.dataDir = cfg.DataDir
	}
	b.add("config.yaml", "effective configuration of "+b.configPath+" (defaults filled in, secrets redacted)",
		append([]byte("# "+b.configPath+", with defaults; values of secret-named keys redacted\n"), data...))
}

func (b *supportBundle) addOnline() {
	st, err := b.c.Status(b.ctx)
	b.addJSON("status.json", "coffer status", st, err)
	if err == nil {
		b.addJSON("alerts.json", "alerts of the status", st.Alerts, nil)
	}
	cs, err := b.c.ClusterStatus(b.ctx)
	b.addJSON("cluster-status.json", "coffer cluster status", cs, err)
	segs, err := b.c.JournalSegments(b.ctx)
	b.addJSON("journal-list.json", "coffer journal list", segs, err)
	dests, err := b.c.ListDestinations(b.ctx)
	for i := range dests {
		// Never a destination secret, whatever the server returns.
		dests[i].Password, dests[i].SecretKey, dests[i].AccessKey = "", "", ""
	}
	b.addJSON("backup-destinations.json", "backup destinations (secrets blanked)", dests, err)
	scheds, err := b.c.ListSchedules(b.ctx)
	b.addJSON("backup-schedules.json", "backup schedules", scheds, err)
	b.addCatalog(dests, err)
	if m, err := b.c.Metrics(b.ctx); err != nil {
		b.add("metrics.error.txt", "metrics snapshot (not available)", []byte(err.Error()+"\n"))
	} else {
		b.add("metrics.txt", "metrics snapshot (/metrics, Prometheus text)", m)
	}
	if gr, err := b.c.Goroutines(b.ctx); err != nil {
		b.add("goroutines.error.txt", "goroutine dump (not available: needs a system administrator)", []byte(err.Error()+"\n"))
	} else {
		b.add("goroutines.txt", "goroutine dump of the server (stacks, no argument values)", gr)
	}
}

// catalogSummary is one destination's backups in the --since window.
type catalogSummary struct {
	Destination string                `json:"destination"`
	Total       int                   `json:"backups_total"`
	ByStatus    map[string]int        `json:"by_status"`
	NewestDone  *client.BackupRecord  `json:"newest_done,omitempty"`
	Recent      []client.BackupRecord `json:"recent"`
}

func (b *supportBundle) addCatalog(dests []client.Destination, err error) {
	if err != nil {
		return
	}
	cutoff := b.now.Add(-b.since)
	var sum []catalogSummary
	for _, d := range dests {
		recs, err := b.c.ListBackups(b.ctx, d.Name)
		if err != nil {
			b.add("backup-catalog-"+d.Name+".error.txt", "backup catalog of "+d.Name+" (not available)", []byte(err.Error()+"\n"))
			continue
		}
		s := catalogSummary{Destination: d.Name, Total: len(recs), ByStatus: map[string]int{}, Recent: []client.BackupRecord{}}
		for i, r := range recs {
			s.ByStatus[r.Status]++
			if r.Status == "DONE" && (s.NewestDone == nil || r.Started.After(s.NewestDone.Started)) {
				s.NewestDone = &recs[i]
			}
			if r.Started.After(cutoff) {
				s.Recent = append(s.Recent, r)
			}
		}
		sum = append(sum, s)
	}
	b.addJSON("backup-catalog.json", "backup catalog summary per destination (records of the last --since)", sum, nil)
}

func (b *supportBundle) addOffline() {
	b.add("status.txt", "status (offline)", []byte("offline bundle of the stopped data dir "+b.dataDir+
		": status, cluster status, alerts, metrics and goroutines need a running server\n"))
	var segs []string
	entries, err := os.ReadDir(datadir.JournalDir(b.dataDir))
	for _, e := range entries {
		if fi, err := e.Info(); err == nil {
			segs = append(segs, fmt.Sprintf("%s\t%d\t%s", e.Name(), fi.Size(), fi.ModTime().UTC().Format(time.RFC3339)))
		}
	}
	if err != nil {
		b.add("journal-list.error.txt", "journal segments (not readable)", []byte(err.Error()+"\n"))
	} else {
		b.add("journal-list.txt", "journal segment files: name, bytes, modified", []byte("name\tbytes\tmodified\n"+strings.Join(segs, "\n")+"\n"))
	}
	// coffer check on the stopped data dir, with the auto-open key (no
	// passphrase is asked for or stored).
	self, err := os.Executable()
	if err != nil {
		b.add("check.error.txt", "coffer check (not run)", []byte(err.Error()+"\n"))
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, self, "check", "--data-dir", b.dataDir, "--auto").CombinedOutput() // #nosec G204 -- this binary, fixed arguments
	if err != nil {
		out = append(out, []byte("\ncoffer check: "+err.Error()+"\n")...)
	}
	b.add("check.txt", "coffer check --auto on the stopped data dir", out)
}

// addLog adds the server's log of the last --since: the server logs to
// stderr, which systemd keeps in its journal.
func (b *supportBundle) addLog() {
	const what = "server log tail (journalctl -u coffer.service)"
	if _, err := exec.LookPath("journalctl"); err != nil {
		b.add("server-log.txt", what, []byte("the server logs to stderr and this machine has no systemd journal (journalctl): include the log of the process that ran coffer server yourself\n"))
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sinceArg := b.now.Add(-b.since).Format("2006-01-02 15:04:05") + " UTC"
	out, err := exec.CommandContext(ctx, "journalctl", "-u", "coffer.service", "--since", sinceArg, "--no-pager", "-o", "short-iso", "-n", "20000").CombinedOutput() // #nosec G204 -- fixed command, a time argument
	if err != nil {
		out = append(out, []byte("\njournalctl: "+err.Error()+"\n")...)
	}
	if len(bytes.TrimSpace(out)) == 0 || bytes.Contains(out, []byte("-- No entries --")) {
		out = append(out, []byte("\nno journal entries of coffer.service: the server logs to stderr; if it does not run under systemd, include its log yourself\n")...)
	}
	b.add("server-log.txt", what, out)
}

// addDisk adds the data dir's file system use and the size of each part.
func (b *supportBundle) addDisk() {
	if b.dataDir == "" {
		b.add("disk.txt", "disk use (unknown data dir)", []byte("no data dir known: pass --data-dir or --config\n"))
		return
	}
	var w bytes.Buffer
	var st syscall.Statfs_t
	if err := syscall.Statfs(b.dataDir, &st); err != nil {
		fmt.Fprintf(&w, "statfs %s: %v\n", b.dataDir, err)
	} else {
		total, free := st.Blocks*uint64(st.Bsize), st.Bavail*uint64(st.Bsize) // #nosec G115 -- block size is positive
		fmt.Fprintf(&w, "file system of %s: %d bytes, %d free (%.1f%% used), %d inodes free\n", b.dataDir, total, free,
			100*float64(total-free)/float64(max(total, 1)), st.Ffree)
	}
	entries, err := os.ReadDir(b.dataDir)
	if err != nil {
		fmt.Fprintf(&w, "read %s: %v\n", b.dataDir, err)
	}
	fmt.Fprintln(&w, "\nbytes\tfiles\tentry")
	for _, e := range entries {
		var size int64
		var n int
		_ = filepath.WalkDir(filepath.Join(b.dataDir, e.Name()), func(_ string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				if fi, err := d.Info(); err == nil {
					size += fi.Size()
					n++
				}
			}
			return nil
		})
		fmt.Fprintf(&w, "%d\t%d\t%s\n", size, n, e.Name())
	}
	b.add("disk.txt", "disk use of the data dir: file system, size of every entry", w.Bytes())
}

// addSystem adds the operating system, memory, and the limits of this
// process and of the server (its pid from the data dir's pid file).
func (b *supportBundle) addSystem() {
	var w bytes.Buffer
	fmt.Fprintf(&w, "time: %s\nplatform: %s/%s, %d CPUs\n", b.now.Format(time.RFC3339), runtime.GOOS, runtime.GOARCH, runtime.NumCPU())
	if h, err := os.Hostname(); err == nil {
		fmt.Fprintf(&w, "hostname: %s\n", h)
	}
	for _, f := range []string{"/proc/sys/kernel/osrelease", "/proc/version", "/etc/os-release", "/proc/loadavg", "/proc/meminfo", "/proc/sys/vm/swappiness", "/proc/sys/fs/file-nr"} {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if f == "/proc/meminfo" {
			var keep []string
			for _, l := range strings.Split(string(data), "\n") {
				for _, k := range []string{"MemTotal:", "MemAvailable:", "SwapTotal:", "SwapFree:", "Mlocked:"} {
					if strings.HasPrefix(l, k) {
						keep = append(keep, l)
					}
				}
			}
			data = []byte(strings.Join(keep, "\n") + "\n")
		}
		fmt.Fprintf(&w, "\n== %s\n%s", f, data)
	}
	if b.dataDir != "" {
		if pid, _, err := server.ReadPID(b.dataDir); err == nil {
			if data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/limits"); err == nil {
				fmt.Fprintf(&w, "\n== limits of the server (pid %d)\n%s", pid, data)
			}
		}
	}
	if data, err := os.ReadFile("/proc/self/limits"); err == nil {
		fmt.Fprintf(&w, "\n== limits of this command\n%s", data)
	}
	b.add("system.txt", "operating system, memory, load, process limits", w.Bytes())
}

// tarball writes manifest.txt and the files into a gzip-compressed tar.
func (b *supportBundle) tarball() ([]byte, error) {
	sort.SliceStable(b.files, func(i, j int) bool { return b.files[i].name < b.files[j].name })
	var m bytes.Buffer
	fmt.Fprintf(&m, "Coffer support bundle, %s, %s\n", b.now.Format(time.RFC3339), map[bool]string{true: "offline (stopped data dir)", false: "online (through the API)"}[b.offline])
	fmt.Fprintf(&m, "No key material, token, passphrase or destination secret is included.\n\n")
	for _, f := range b.files {
		fmt.Fprintf(&m, "%-32s %8d  %s\n", f.name, len(f.data), f.what)
	}
	files := append([]bundleFile{{name: "manifest.txt", data: m.Bytes()}}, b.files...)
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	root := "coffer-support-" + b.now.Format("20060102T150405Z") + "/"
	for _, f := range files {
		if err := tw.WriteHeader(&tar.Header{Name: root + f.name, Mode: 0o600, Size: int64(len(f.data)), ModTime: b.now, Typeflag: tar.TypeReg}); err != nil {
			return nil, fmt.Errorf("support bundle: %s: %w", f.name, err)
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, fmt.Errorf("support bundle: %s: %w", f.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("support bundle: %w", err)
	}
	if err := gz.Close(); err != nil {
		return nil, fmt.Errorf("support bundle: %w", err)
	}
	return buf.Bytes(), nil
}
