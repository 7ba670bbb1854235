package cli

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/coffer-kms/coffer/client"
)

// TestBackupLocalValidation: backup flag mistakes are refused before any
// server is contacted.
func TestBackupLocalValidation(t *testing.T) {
	dead := "https://127.0.0.1:1"
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.txt")
	os.WriteFile(notPEM, []byte("hello"), 0o600)
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o600)
	short := filepath.Join(dir, "short")
	os.WriteFile(short, []byte("7 bytes\n"), 0o600)
	pass := filepath.Join(dir, "pass")
	os.WriteFile(pass, []byte("a long enough passphrase\n"), 0o600)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"backup", "run", "--address", dead}, "--destination D is required"},
		{[]string{"backup", "run", "-d", "LOCAL", "--full", "--incremental", "--address", dead}, "--full or --incremental, not both"},
		{[]string{"backup", "catalog", "rebuild", "--address", dead}, "--destination D is required"},
		{[]string{"backup", "schedule", "add", "s", "--destination", "LOCAL", "--address", dead}, "exactly one of --at TIME, --now, --every DURATION or --cron EXPR"},
		{[]string{"backup", "schedule", "add", "s", "--destination", "LOCAL", "--now", "--every", "1h", "--address", dead}, "exactly one of"},
		{[]string{"backup", "schedule", "add", "s", "--destination", "LOCAL", "--at", "02:00", "--cron", "@daily", "--address", dead}, "exactly one of"},
		{[]string{"backup", "schedule", "add", "s", "--every", "1h", "--address", dead}, "--destination D is required"},
		{[]string{"backup", "schedule", "add", "s", "-d", "LOCAL", "--every", "30s", "--address", dead}, "at least 1m"},
		{[]string{"backup", "schedule", "add", "s", "-d", "LOCAL", "--every", "daily", "--address", dead}, "at least 1m"},
		{[]string{"backup", "schedule", "add", "s", "-d", "LOCAL", "--at", "tomorrow", "--address", dead}, `--at "tomorrow"`},
		{[]string{"backup", "schedule", "add", "s", "-d", "LOCAL", "--now", "--mode", "differential", "--address", dead}, "use auto, full or incremental"},
		{[]string{"backup", "schedule", "add", "s", "-d", "LOCAL", "--cron", " ", "--address", dead}, "--cron needs an expression"},
		{[]string{"backup", "schedule", "edit", "s", "--address", dead}, "nothing to change"},
		{[]string{"backup", "schedule", "edit", "s", "--now", "--every", "1h", "--address", dead}, "exactly one of"},
		{[]string{"backup", "destination", "add", "d", "--address", dead}, "--type is required"},
		{[]string{"backup", "destination", "add", "d", "--type", "nfs", "--address", dead}, `--type "nfs": use dir, sftp or s3`},
		{[]string{"backup", "destination", "add", "d", "--type", "dir", "--path", "/b", "--bucket", "b", "--host", "h", "--address", dead}, "--bucket, --host: not for dir destinations"},
		{[]string{"backup", "destination", "add", "d", "--type", "s3", "--path", "/b", "--address", dead}, "--path: not for s3 destinations"},
		{[]string{"backup", "destination", "add", "d", "--type", "sftp", "--host", "h", "--port", "70000", "--address", dead}, "--port 70000"},
		{[]string{"backup", "destination", "add", "d", "--type", "dir", "--path", "/b", "--keep-fulls", "-1", "--address", dead}, "--keep-fulls must not be negative"},
		{[]string{"backup", "destination", "add", "d", "--type", "dir", "--path", "/b", "--recipient", "ssh-ed25519 AAAA", "--address", dead}, "not an age X25519 public key"},
		{[]string{"backup", "destination", "add", "d", "--type", "s3", "--s3-ca-cert", notPEM, "--address", dead}, "no PEM certificate"},
		{[]string{"backup", "destination", "add", "d", "--type", "sftp", "--password-file", empty, "--address", dead}, "password file is empty"},
		{[]string{"backup", "destination", "add", "d", "--type", "s3", "--endpoint", "e", "--address", dead}, "no terminal to prompt for the secret key: use --secret-key-file"},
		{[]string{"backup", "destination", "edit", "d", "--address", dead}, "nothing to change"},
		{[]string{"backup", "recovery-passphrase", "set", "--passphrase-file", "-", "--old-passphrase-file", "-", "--address", dead}, "only one of"},
		{[]string{"journal", "archive", "pause", "--address", dead}, "--destination D is required"},
		{[]string{"journal", "archive", "resume", "--address", dead}, "--destination D is required"},
		{[]string{"freeze", "--timeout", "25h", "--address", dead}, "up to 24h"},
		{[]string{"freeze", "--timeout", "0", "--address", dead}, "use a positive duration"},
		{[]string{"backup", "destination", "add", "d", "--type", "s3", "--endpoint", "e", "--mirror", "--address", dead}, "--mirror: not for s3 destinations"},
		{[]string{"backup", "destination", "add", "d", "--type", "sftp", "--host", "h", "--mirror", "--address", dead}, "--mirror: not for sftp destinations"},
		{[]string{"init", "--no-recovery-passphrase", "--recovery-passphrase-file", pass, "--address", dead}, "not both"},
		{[]string{"init", "--passphrase-file", "-", "--recovery-passphrase-file", "-", "--address", dead}, "only one of"},
		{[]string{"init", "--passphrase-file", pass, "--address", dead}, "use --recovery-passphrase-file FILE (or - for stdin), or --no-recovery-passphrase"},
		{[]string{"init", "--passphrase-file", pass, "--recovery-passphrase-file", short, "--address", dead}, "recovery passphrase must be 8 to 200 bytes"},
	} {
		code, _, stderr := run(tc.args...)
		if code == 0 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: code %d, stderr %q, want %q", tc.args, code, stderr, tc.want)
		}
	}
}

func TestParseAt(t *testing.T) {
	loc := time.FixedZone("X", 2*3600)
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, loc)
	for _, tc := range []struct{ in, want string }{
		{"2025-06-02T02:00:00Z", "2025-06-02T02:00:00Z"},
		{"2025-06-02T02:00:00+02:00", "2025-06-02T00:00:00Z"},
		{"2025-06-02 02:00", "2025-06-02T00:00:00Z"},
		{"2025-06-02T02:00:30", "2025-06-02T00:00:30Z"},
		{"13:30", "2025-06-01T11:30:00Z"}, // later today
		{"02:00", "2025-06-02T00:00:00Z"}, // passed today: tomorrow
		{"12:00:00", "2025-06-02T10:00:00Z"},
	} {
		got, err := parseAt(tc.in, now)
		if err != nil || got.Format(time.RFC3339) != tc.want {
			t.Errorf("parseAt(%q) = %s, %v; want %s", tc.in, got.Format(time.RFC3339), err, tc.want)
		}
	}
	for _, bad := range []string{"", "noon", "25:00", "2025-13-01 00:00"} {
		if _, err := parseAt(bad, now); err == nil {
			t.Errorf("parseAt(%q) accepted", bad)
		}
	}
}

// TestScheduleWhen: the timing flags set the schedule type; edit without
// timing flags keeps the old timing.
func TestScheduleWhen(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	mk := func(args ...string) (*cobra.Command, *scheduleOptions) {
		o := &scheduleOptions{}
		cmd := &cobra.Command{Use: "x"}
		o.addFlags(cmd)
		if err := cmd.ParseFlags(args); err != nil {
			t.Fatal(err)
		}
		return cmd, o
	}
	for _, tc := range []struct {
		args             []string
		typ, every, cron string
		at               bool
	}{
		{[]string{"--now"}, client.ScheduleOnce, "", "", false},
		{[]string{"--at", "13:00"}, client.ScheduleOnce, "", "", true},
		{[]string{"--every", "24h"}, client.SchedulePeriodic, "24h", "", false},
		{[]string{"--cron", "0 2 * * *"}, client.ScheduleCron, "", "0 2 * * *", false},
	} {
		cmd, o := mk(tc.args...)
		old := now
		cfg := client.ScheduleConfig{Type: client.ScheduleOnce, At: &old, Every: "1h", Cron: "@daily"}
		if err := o.when(cmd, &cfg, true, now); err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if cfg.Type != tc.typ || cfg.Every != tc.every || cfg.Cron != tc.cron || (cfg.At != nil) != tc.at {
			t.Errorf("%v: %+v", tc.args, cfg)
		}
	}
	cmd, o := mk("--mode", "full")
	cfg := client.ScheduleConfig{Type: client.ScheduleCron, Cron: "@daily"}
	if err := o.when(cmd, &cfg, false, now); err != nil || cfg.Type != client.ScheduleCron || cfg.Cron != "@daily" {
		t.Fatalf("edit without timing flags: %+v %v", cfg, err)
	}
}

// TestDestinationApply: only the flags given change a destination.
func TestDestinationApply(t *testing.T) {
	o := &destinationOptions{}
	cmd := &cobra.Command{Use: "x"}
	o.addFlags(cmd)
	if err := cmd.ParseFlags([]string{"--keep-fulls", "8", "--archiving=false", "--recipient", ""}); err != nil {
		t.Fatal(err)
	}
	cfg := client.DestinationConfig{Name: "n", Kind: client.DestinationS3, Endpoint: "e:9000", Bucket: "b", AccessKey: "a", PathStyle: true,
		Archiving: true, KeepFulls: 2, KeepDays: 30, Recipients: []string{"age1x"}}
	if err := o.apply(cmd, &cfg); err != nil {
		t.Fatal(err)
	}
	want := client.DestinationConfig{Name: "n", Kind: client.DestinationS3, Endpoint: "e:9000", Bucket: "b", AccessKey: "a", PathStyle: true, KeepFulls: 8, KeepDays: 30}
	if cfg.Endpoint != want.Endpoint || cfg.Bucket != want.Bucket || !cfg.PathStyle || cfg.Archiving || cfg.KeepFulls != 8 || cfg.KeepDays != 30 ||
		cfg.Recipients != nil || cfg.SecretKey != "" {
		t.Fatalf("%+v", cfg)
	}
}

// TestDestinationApplyMirror: --mirror turns the journal mirror on or off on
// a dir destination; without the flag an edit keeps it.
func TestDestinationApplyMirror(t *testing.T) {
	for _, tc := range []struct {
		args      []string
		old, want bool
	}{
		{nil, true, true},
		{[]string{"--keep-days", "3"}, true, true},
		{[]string{"--mirror"}, false, true},
		{[]string{"--mirror=false"}, true, false},
	} {
		o := &destinationOptions{}
		cmd := &cobra.Command{Use: "x"}
		o.addFlags(cmd)
		if err := cmd.ParseFlags(tc.args); err != nil {
			t.Fatal(err)
		}
		cfg := client.DestinationConfig{Name: "n", Kind: client.DestinationDir, Path: "/b", Mirror: tc.old}
		if err := o.apply(cmd, &cfg); err != nil || cfg.Mirror != tc.want {
			t.Errorf("%v on mirror=%v: mirror=%v, %v", tc.args, tc.old, cfg.Mirror, err)
		}
	}
}

func TestHumanBytesAndShorten(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 5 << 20: "5.0 MiB", 3 << 30: "3.0 GiB", 2 << 40: "2.0 TiB"} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
	if got := shorten("disk   full\nwhile writing", 9); got != "disk ful…" {
		t.Errorf("shorten: %q", got)
	}
	if got := shorten("ok", 9); got != "ok" {
		t.Errorf("shorten: %q", got)
	}
}

// fakeBackupServer answers backup run with a RUNNING record, reports it
// running (with growing bytes) for polls polls, then lists it as final.
func fakeBackupServer(t *testing.T, polls int, final string) (*httptest.Server, *[]string) {
	var mu sync.Mutex
	var seen []string
	n := 0
	rec := `"id":"20250102T030405Z-ab12cd34","destination":"nas","kind":"full","node":"n1","started":"2025-01-02T03:04:05Z"`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		body, _ := io.ReadAll(r.Body)
		seen = append(seen, r.Method+" "+r.URL.Path+" "+r.URL.RawQuery+" "+strings.TrimSpace(string(body)))
		switch r.URL.Path {
		case "/api/v1/backup/run":
			w.WriteHeader(202)
			io.WriteString(w, `{`+rec+`,"status":"RUNNING"}`)
		case "/api/v1/backup/current":
			if n++; n > polls {
				io.WriteString(w, `{}`)
				return
			}
			fmt.Fprintf(w, `{"running":{%s,"status":"RUNNING","bytes_written":%d}}`, rec, n*4096)
		case "/api/v1/backup/backups":
			io.WriteString(w, `{"backups":[{"id":"other","destination":"nas","kind":"full","status":"DONE","started":"2025-01-01T00:00:00Z"},{`+rec+`,`+final+`}]}`)
		default:
			w.WriteHeader(404)
		}
	}))
	t.Cleanup(srv.Close)
	return srv, &seen
}

func TestBackupRunFollowsProgress(t *testing.T) {
	srv, seen := fakeBackupServer(t, 7, `"status":"DONE","size":28672,"first_index":1,"last_index":57,"file":"backups/x-full.cbk","finished":"2025-01-02T03:04:07Z"`)
	code, out, stderr := run("backup", "run", "--destination", "nas", "--full", "--address", srv.URL)
	if code != 0 {
		t.Fatalf("code %d: %s", code, stderr)
	}
	for _, want := range []string{"backup 20250102T030405Z-ab12cd34 started: full to nas", "Status:       DONE", "Size:         28.0 KiB (28672 bytes)",
		"Indexes:      1-57", "File:         backups/x-full.cbk", "took 2s"} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(stderr, "backup 20250102T030405Z-ab12cd34: ") || !strings.Contains(stderr, "KiB written") {
		t.Errorf("no progress lines on stderr: %q", stderr)
	}
	if (*seen)[0] != `POST /api/v1/backup/run  {"destination":"nas","mode":"full"}` || (*seen)[len(*seen)-1] != "GET /api/v1/backup/backups destination=nas " {
		t.Errorf("requests: %q", *seen)
	}
}

func TestBackupRunFailedExitsNonZero(t *testing.T) {
	srv, _ := fakeBackupServer(t, 1, `"status":"FAILED","reason":"write backups/x: no space left on device","finished":"2025-01-02T03:04:06Z"`)
	code, out, stderr := run("backup", "run", "--destination", "nas", "--address", srv.URL, "--format", "json")
	if code == 0 || !strings.Contains(stderr, "backup 20250102T030405Z-ab12cd34 FAILED: write backups/x: no space left on device") {
		t.Fatalf("code %d, stderr %q", code, stderr)
	}
	if !strings.Contains(out, `"status": "FAILED"`) || !strings.Contains(out, `"reason": "write backups/x: no space left on device"`) {
		t.Fatalf("json: %s", out)
	}
}

// fakeArchiveServer streams the given lines as the answer to archive now.
func fakeArchiveServer(t *testing.T, lines ...string) (*httptest.Server, *[]string) {
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.Path+" "+r.URL.RawQuery)
		mu.Unlock()
		if r.URL.Path != "/api/v1/sys/journal/archive" {
			w.WriteHeader(404)
			return
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		for _, l := range lines {
			io.WriteString(w, l+"\n")
			w.(http.Flusher).Flush()
		}
	}))
	t.Cleanup(srv.Close)
	return srv, &seen
}

// TestJournalArchiveNowProgress: archive now asks for streamed progress and
// shows it on standard error: a line per segment, JSON lines with
// --format json; a failure streamed at the end fails the command.
func TestJournalArchiveNowProgress(t *testing.T) {
	steps := []string{
		`{"progress":{"destination":"nas","done":0,"total":2}}`,
		`{"progress":{"destination":"nas","segment":"coffer-1.recovery","done":1,"total":2}}`,
		`{"progress":{"destination":"nas","segment":"coffer-2.recovery","done":2,"total":2}}`,
	}
	srv, seen := fakeArchiveServer(t, append(steps, `{"archived":true}`)...)
	code, out, stderr := run("journal", "archive", "now", "--address", srv.URL)
	if code != 0 || strings.TrimSpace(out) != "journal archived" {
		t.Fatalf("code %d, stdout %q, stderr %q", code, out, stderr)
	}
	want := "archiving 2 segments to nas\narchived coffer-1.recovery to nas (1 of 2)\narchived coffer-2.recovery to nas (2 of 2)\n"
	if stderr != want {
		t.Errorf("stderr %q, want %q", stderr, want)
	}
	if (*seen)[0] != "POST /api/v1/sys/journal/archive progress=ndjson" {
		t.Errorf("requests %q", *seen)
	}

	code, out, stderr = run("journal", "archive", "now", "--address", srv.URL, "--format", "json")
	if code != 0 || !strings.Contains(out, `"archived": true`) {
		t.Fatalf("json: code %d, stdout %q, stderr %q", code, out, stderr)
	}
	if got := strings.Split(strings.TrimSpace(stderr), "\n"); len(got) != 3 || got[1] != steps[1] {
		t.Errorf("json progress lines %q, want %q", got, steps)
	}

	srv, _ = fakeArchiveServer(t, steps[0], `{"error":{"status":409,"code":"conflict","message":"archive coffer-1.recovery to nas: no space left"}}`)
	code, _, stderr = run("journal", "archive", "now", "--address", srv.URL)
	if code == 0 || !strings.Contains(stderr, "no space left") {
		t.Fatalf("a streamed failure: code %d, stderr %q", code, stderr)
	}
}

// A freeze a thaw cancelled while its dump was written froze nothing: the
// command says so and fails (a snapshot hook "coffer freeze && snapshot"
// must not go on), rather than "writes frozen until 0001-01-01".
func TestFreezeCancelledByAThawFails(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/sys/freeze" {
			w.WriteHeader(404)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"frozen":false,"dump":"/var/lib/coffer/dump/backups/x-dump.cbk","note":"thaw requested during the dump: writes were not frozen"}`)
	}))
	t.Cleanup(srv.Close)
	code, out, stderr := run("freeze", "--address", srv.URL)
	if code == 0 || strings.Contains(out, "writes frozen until") || !strings.Contains(stderr, "not frozen") {
		t.Fatalf("code %d, stdout %q, stderr %q", code, out, stderr)
	}
}

// "backup drill" without --destination drills every destination in turn:
// one that cannot be drilled (its catalog corrupt, unreachable) is a row
// with its error and the others are still drilled and shown; one whose
// backups are encrypted to age recipients (the server cannot read them) is
// skipped with a note. The exit status is 1.
func TestDrillEveryDestinationGoesOnPastAnError(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.Path)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch r.Method + " " + r.URL.Path {
		case "GET /api/v1/backup/destinations":
			io.WriteString(w, `{"destinations":[{"name":"LOCAL","kind":"local"},{"name":"nas","kind":"dir","path":"/mnt/nas"},{"name":"offsite","kind":"s3","recipients":["age1qqq"]},{"name":"zz","kind":"dir","path":"/mnt/zz"}]}`)
		case "POST /api/v1/backup/destinations/nas/drill":
			w.WriteHeader(409)
			io.WriteString(w, `{"error":{"code":"conflict","message":"catalog is corrupt: dir:/mnt/nas/catalog.json"}}`)
		case "POST /api/v1/backup/destinations/LOCAL/drill", "POST /api/v1/backup/destinations/zz/drill":
			io.WriteString(w, `{"time":"2025-01-02T03:04:05Z","result":"OK","full_backup":"f1","index":9,"files":1,"duration_seconds":1.5}`)
		default:
			w.WriteHeader(404)
			io.WriteString(w, `{"error":{"code":"not_found","message":"no"}}`)
		}
	}))
	t.Cleanup(srv.Close)
	code, out, stderr := run("backup", "drill", "--address", srv.URL)
	if code == 0 {
		t.Fatalf("exit status 0 with a destination that could not be drilled: %s", out)
	}
	for _, want := range []string{"LOCAL", "zz", "nas", "catalog is corrupt"} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, r := range seen {
		if strings.Contains(r, "offsite") {
			t.Errorf("the age-encrypted destination was drilled: %q", seen)
		}
	}
	if !strings.Contains(stderr, "offsite") {
		t.Errorf("no note on the skipped age-encrypted destination: %q", stderr)
	}
}

// "restore object" (and its dry run) reads a backup chain on the server, as
// long as a drill does: without --timeout it waits as long as a drill, not
// the default request timeout (which cancelled the restore on the server).
func TestRestoreObjectWaitsForTheRestore(t *testing.T) {
	defer func(d time.Duration) { defaultTimeout = d }(defaultTimeout)
	defaultTimeout = 100 * time.Millisecond
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/api/v1/objects/0c3f2a4e-1111-4222-8333-444455556666/restore") {
			w.WriteHeader(404)
			return
		}
		select { // the chain takes a while to read
		case <-time.After(500 * time.Millisecond):
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if strings.HasSuffix(r.URL.Path, "/preview") {
			io.WriteString(w, `{"object":{"id":"0c3f2a4e-1111-4222-8333-444455556666","name":"k","wallet":"default"},"restored_versions":[1],"from":"nas as of index 9"}`)
			return
		}
		io.WriteString(w, `{"id":"0c3f2a4e-1111-4222-8333-444455556666","name":"k","wallet":"default"}`)
	}))
	t.Cleanup(srv.Close)
	for _, extra := range [][]string{nil, {"--dry-run"}} {
		args := append([]string{"restore", "object", "0c3f2a4e-1111-4222-8333-444455556666", "--from", "nas", "--to-index", "9", "--address", srv.URL}, extra...)
		if code, _, stderr := run(args...); code != 0 {
			t.Fatalf("%v: code %d: %s", extra, code, stderr)
		}
	}
}

// "journal archive now" ships every pending segment and "backup catalog
// rebuild" reads every manifest (after a running backup ends): without
// --timeout they wait for the server as long as it takes, not the default
// request timeout, which cut them off midway.
func TestLongBackupTasksOutwaitTheDefaultTimeout(t *testing.T) {
	defer func(d time.Duration) { defaultTimeout = d }(defaultTimeout)
	defaultTimeout = 100 * time.Millisecond
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select { // many segments to ship, many manifests to read
		case <-time.After(500 * time.Millisecond):
		case <-r.Context().Done():
			return
		}
		switch r.URL.Path {
		case "/api/v1/sys/journal/archive":
			w.Header().Set("Content-Type", "application/x-ndjson")
			io.WriteString(w, `{"archived":true}`+"\n")
		case "/api/v1/backup/destinations/nas/catalog/rebuild":
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"backups":3}`)
		default:
			w.WriteHeader(404)
		}
	}))
	t.Cleanup(srv.Close)
	for _, args := range [][]string{{"journal", "archive", "now"}, {"backup", "catalog", "rebuild", "--destination", "nas"}} {
		if code, _, stderr := run(append(args, "--address", srv.URL)...); code != 0 {
			t.Errorf("%v: code %d: %s", args, code, stderr)
		}
	}
}

// A backup the server cannot verify because it was taken under an earlier
// recovery passphrase is SKIPPED, not FAILED: "backup verify" does not
// count it as a failed verification (exit status 0 when nothing FAILED)
// and says how to verify it.
func TestVerifySkippedIsNotFailed(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/backup/destinations/nas/verify" {
			w.WriteHeader(404)
			return
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		io.WriteString(w, `{"results":[{"id":"a","kind":"full","file":"backups/a-full.cbk","result":"OK","time":"2025-01-02T03:04:05Z"},`+
			`{"id":"b","kind":"full","file":"backups/b-full.cbk","result":"SKIPPED","reason":"encrypted to [passphrase:recovery-1]; the server holds passphrase:recovery-2 only: verify it offline","time":"2025-01-02T03:04:05Z"}]}`+"\n")
	}))
	t.Cleanup(srv.Close)
	code, out, stderr := run("backup", "verify", "--all", "--destination", "nas", "--address", srv.URL)
	if code != 0 || strings.Contains(stderr, "FAILED") || !strings.Contains(out, "SKIPPED") || !strings.Contains(stderr, "offline") {
		t.Fatalf("code %d, stdout %q, stderr %q", code, out, stderr)
	}
}

// archive now names the destinations skipped because their archiving is
// paused, on standard error, and still succeeds.
func TestJournalArchiveNowNotesPausedDestinations(t *testing.T) {
	srv, _ := fakeArchiveServer(t, `{"archived":true,"note":"archiving to off is paused: 2 segments not shipped there (coffer journal archive resume --destination off)"}`)
	code, out, stderr := run("journal", "archive", "now", "--address", srv.URL)
	if code != 0 || strings.TrimSpace(out) != "journal archived" || !strings.Contains(stderr, "note: archiving to off is paused") {
		t.Fatalf("code %d, stdout %q, stderr %q", code, out, stderr)
	}
}
