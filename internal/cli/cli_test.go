package cli

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// TestEveryCommandHasHelp walks the tree: every command has a short help,
// its usage shows the full path, and no flag is defined twice on a path.
func TestEveryCommandHasHelp(t *testing.T) {
	root := NewRootCommand()
	var walk func(c *cobra.Command)
	count := 0
	walk = func(c *cobra.Command) {
		count++
		if c.Short == "" {
			t.Errorf("%q has no short help", c.CommandPath())
		}
		var out bytes.Buffer
		c.SetOut(&out)
		if err := c.Help(); err != nil {
			t.Errorf("%s: help: %v", c.CommandPath(), err)
		}
		if c.Runnable() && !strings.Contains(out.String(), c.CommandPath()) {
			t.Errorf("%s: usage does not show the full command path:\n%s", c.CommandPath(), out.String())
		}
		seen := map[string]bool{}
		c.Flags().VisitAll(func(f *pflag.Flag) {
			if seen[f.Name] {
				t.Errorf("%s: flag --%s defined twice", c.CommandPath(), f.Name)
			}
			seen[f.Name] = true
		})
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	if count < 20 {
		t.Fatalf("only %d commands found", count)
	}
}

// TestCommandTree: every command the CLI documents exists, takes --format
// (inherited), and the commands of the domain groups explain themselves with
// a long help or examples.
func TestCommandTree(t *testing.T) {
	root := NewRootCommand()
	want := []string{
		"key create", "key get", "key list", "key rotate", "key activate", "key deactivate", "key revoke", "key destroy", "key versions", "key set-attr",
		"secret put", "secret get",
		"wallet create", "wallet list", "wallet show", "wallet delete",
		"endpoint enroll", "endpoint list", "endpoint show", "endpoint revoke", "endpoint grant",
		"user create", "user list", "user show", "user delete", "user set-roles", "user passwd", "user disable", "user enable",
		"login", "logout", "whoami",
		"audit list", "audit verify",
		"completion bash", "completion zsh", "completion fish",
		"bench", "status", "init", "keystore open", "journal verify", "token create-root", "version", "debug bundle",
		"backup recovery-passphrase set", "backup recovery-passphrase status",
		"backup destination add", "backup destination edit", "backup destination list", "backup destination rm", "backup destination test",
		"backup catalog rebuild", "backup run", "backup list",
		"backup schedule add", "backup schedule edit", "backup schedule list", "backup schedule pause", "backup schedule resume", "backup schedule rm",
		"journal archive status", "journal archive pause", "journal archive resume",
		"freeze", "thaw", "restore-point create", "restore-point list", "check", "restore", "restore object", "backup verify", "cluster init", "cluster status", "cluster token create", "cluster join", "cluster switchover", "cluster remove", "cluster promote", "cluster recover", "journal archive now",
	}
	documented := map[string]bool{"key": true, "secret": true, "wallet": true, "endpoint": true, "user": true, "login": true, "logout": true, "audit": true, "bench": true, "completion": true,
		"backup": true, "freeze": true, "thaw": true, "init": true}
	// The backup commands, freeze and thaw have all three: short, long and examples.
	for _, path := range want {
		if f := strings.Fields(path); f[0] != "backup" && f[0] != "freeze" && f[0] != "thaw" && (len(f) < 2 || f[1] != "archive") {
			continue
		}
		if c, _, err := root.Find(strings.Fields(path)); err == nil && (c.Long == "" || c.Example == "") {
			t.Errorf("%s: needs a long help and examples", path)
		}
	}
	for _, path := range want {
		c, rest, err := root.Find(strings.Fields(path))
		if err != nil || len(rest) > 0 || c.CommandPath() != "coffer "+path {
			t.Errorf("command %q not found (got %v, %v)", path, c.CommandPath(), err)
			continue
		}
		if c.Flag("format") == nil || c.Flag("client-dir") == nil {
			t.Errorf("%s: no --format or --client-dir", path)
		}
		if documented[strings.Fields(path)[0]] && c.Long == "" && c.Example == "" && !strings.HasPrefix(path, "completion ") {
			if c.Name() != "list" && c.Name() != "show" && c.Name() != "enable" && c.Name() != "disable" && c.Name() != "delete" {
				t.Errorf("%s: neither a long help nor examples", path)
			}
		}
	}
	for _, flags := range []struct{ path, flags string }{
		{"key create", "wallet type algorithm length value-file attr pre-active"},
		{"key get", "wallet version metadata-only out encoding"},
		{"key list", "wallet name type state attr limit"},
		{"key destroy", "wallet reason yes"},
		{"key set-attr", "wallet delete"},
		{"endpoint enroll", "out description wallet permission endpoint-address no-cert"},
		{"endpoint grant", "wallet permission remove"},
		{"user create", "role password-file"},
		{"user passwd", "password-file old-password-file"},
		{"login", "username password-file"},
		{"audit list", "from limit"},
		{"audit verify", "offline audit-dir"},
		{"bench", "op concurrency duration wallet keys mount peer-fixed kmip-address"},
		{"init", "passphrase-file recovery-passphrase-file no-recovery-passphrase"},
		{"backup recovery-passphrase set", "passphrase-file old-passphrase-file"},
		{"backup destination add", "type path host port user password-file endpoint bucket prefix region access-key secret-key-file path-style insecure s3-ca-cert recipient archiving keep-fulls keep-days"},
		{"backup destination edit", "type path host port user password-file endpoint bucket prefix region access-key secret-key-file path-style insecure s3-ca-cert recipient archiving keep-fulls keep-days"},
		{"backup catalog rebuild", "destination"},
		{"backup run", "destination full incremental wait"},
		{"backup list", "destination"},
		{"backup schedule add", "destination at now every cron mode"},
		{"backup schedule edit", "destination at now every cron mode"},
		{"journal archive pause", "destination"},
		{"journal archive resume", "destination"},
		{"freeze", "timeout"},
	} {
		c, _, _ := root.Find(strings.Fields(flags.path))
		for _, f := range strings.Fields(flags.flags) {
			if c.Flags().Lookup(f) == nil {
				t.Errorf("%s: no --%s", flags.path, f)
			}
		}
	}
}

func run(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = Main(args, &out, &errb)
	return code, out.String(), errb.String()
}

// TestLocalValidation: mistakes caught before any server is contacted.
func TestLocalValidation(t *testing.T) {
	dead := "https://127.0.0.1:1"
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"key", "get", "x", "--encoding", "raw", "--address", dead}, "--encoding raw needs --out"},
		{[]string{"key", "get", "x", "--encoding", "b32", "--address", dead}, "use base64, hex or raw"},
		{[]string{"key", "get", "x", "--metadata-only", "--version", "2", "--address", dead}, "--metadata-only"},
		{[]string{"key", "create", "x", "--address", dead}, "--type is required"},
		{[]string{"key", "create", "x", "--type", "symmetric_key", "--attr", "novalue", "--address", dead}, "use key=value"},
		{[]string{"key", "set-attr", "x", "--address", dead}, "nothing to change"},
		{[]string{"key", "destroy", "1b4e28ba-2fa1-4d3b-a3f5-ef1f5b2c9d10", "--address", "unix:///nonexistent/sock"}, "1b4e28ba"},
		{[]string{"secret", "put", "x", "--address", dead}, "give --value or --value-file"},
		{[]string{"secret", "put", "x", "--value", "a", "--value-file", "f", "--address", dead}, "not both"},
		{[]string{"endpoint", "enroll", "db1", "--address", dead}, "--out DIR is required"},
		{[]string{"endpoint", "grant", "db1", "--address", dead}, "--wallet W is required"},
		{[]string{"endpoint", "grant", "db1", "--wallet", "w", "--address", dead}, "--permission"},
		{[]string{"user", "create", "bob", "--address", dead}, "--role"},
		{[]string{"audit", "verify", "--offline"}, "--offline needs --data-dir"},
		{[]string{"status", "--format", "yaml"}, "use table or json"},
		{[]string{"bench", "--op", "delete", "--address", dead}, "use put, get, create, get-by-name, vault-read"},
		{[]string{"bench", "--op", "get", "--peer-fixed", "--address", dead}, "--peer-fixed goes with --op vault-read"},
		{[]string{"--client-dir", "/nonexistent", "whoami"}, "/nonexistent/config.json"},
	} {
		code, _, stderr := run(tc.args...)
		if code == 0 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: code %d, stderr %q, want %q", tc.args, code, stderr, tc.want)
		}
	}
}

func TestDestroyNeedsConfirmation(t *testing.T) {
	// Without a terminal and without --yes, destroy refuses before its request.
	t.Setenv("COFFER_DATA_DIR", "")
	code, _, stderr := run("key", "destroy", "1b4e28ba-2fa1-4d3b-a3f5-ef1f5b2c9d10", "--address", "https://127.0.0.1:1")
	if code == 0 || !strings.Contains(stderr, "--yes") {
		t.Fatalf("code %d, stderr %q", code, stderr)
	}
}

func TestEnrollRefusesNonEmptyDir(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "something"), []byte("x"), 0o600)
	code, _, stderr := run("endpoint", "enroll", "db1", "--out", dir, "--address", "https://127.0.0.1:1")
	if code == 0 || !strings.Contains(stderr, "is not empty") {
		t.Fatalf("code %d, stderr %q", code, stderr)
	}
}

func TestCompletionScripts(t *testing.T) {
	for _, sh := range []string{"bash", "zsh", "fish"} {
		code, out, stderr := run("completion", sh)
		if code != 0 || !strings.Contains(out, "coffer") {
			t.Errorf("completion %s: code %d, %s", sh, code, stderr)
		}
	}
}

func TestTokenFileResolution(t *testing.T) {
	dir := t.TempDir()
	tf := filepath.Join(dir, "tok")
	os.WriteFile(tf, []byte("cof_from_file\n"), 0o600)
	t.Setenv("COFFER_TOKEN_FILE", tf)
	t.Setenv("COFFER_TOKEN", "")
	t.Setenv("COFFER_ADDR", "")
	t.Setenv("COFFER_DATA_DIR", "")
	t.Setenv("COFFER_CLIENT_DIR", "")
	g := &globals{address: "https://kms:8200"}
	cn, err := g.resolve()
	if err != nil || cn.cfg.Token != "cof_from_file" || cn.tokenFromFile != tf {
		t.Fatalf("token file not used: %+v %v", cn, err)
	}
	g.token = "cof_flag"
	if cn, _ = g.resolve(); cn.cfg.Token != "cof_flag" {
		t.Fatalf("--token must win over the token file: %q", cn.cfg.Token)
	}
	g = &globals{dataDir: dir}
	if cn, _ = g.resolve(); cn.cfg.Token != "" || cn.cfg.Addresses[0] != "unix://"+filepath.Join(dir, "coffer.sock") {
		t.Fatalf("control socket: %+v", cn.cfg)
	}
	// A client dir: its addresses and token; --address overrides the addresses.
	cd := filepath.Join(dir, "ep")
	os.Mkdir(cd, 0o700)
	os.WriteFile(filepath.Join(cd, "token"), []byte("cof_endpoint\n"), 0o600)
	os.WriteFile(filepath.Join(cd, "config.json"), []byte(`{"endpoint":"db1","addresses":["https://a:1"],"token_file":"token"}`), 0o600)
	t.Setenv("COFFER_CLIENT_DIR", cd)
	g = &globals{}
	if cn, _ = g.resolve(); cn.cfg.Token != "cof_endpoint" || cn.cfg.Addresses[0] != "https://a:1" {
		t.Fatalf("client dir: %+v", cn.cfg)
	}
	g = &globals{address: "https://b:2"}
	if cn, _ = g.resolve(); cn.cfg.Token != "cof_endpoint" || cn.cfg.Addresses[0] != "https://b:2" {
		t.Fatalf("client dir with --address: %+v", cn.cfg)
	}
}

func TestUnknownStopModeRefused(t *testing.T) {
	var out, errb bytes.Buffer
	code := Main([]string{"stop", "-m", "sideways", "--data-dir", t.TempDir()}, &out, &errb)
	if code == 0 || !strings.Contains(errb.String(), "smart, fast or immediate") {
		t.Fatalf("code %d, stderr %q", code, errb.String())
	}
}

func TestJournalVerifyNeedsDir(t *testing.T) {
	var out, errb bytes.Buffer
	if code := Main([]string{"journal", "verify"}, &out, &errb); code == 0 {
		t.Fatal("verify without a directory succeeded")
	}
}

// TestUnknownSubcommandFails: an argument that names no subcommand of a
// command group is an error at every level ("coffer key bogus" once printed
// the help of "key" and exited 0).
func TestUnknownSubcommandFails(t *testing.T) {
	root := NewRootCommand()
	var groups []*cobra.Command
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.HasSubCommands() {
			groups = append(groups, c)
		}
		if c.HasSubCommands() && c.HasParent() && c.Runnable() && c.Annotations[groupAnnotation] == "" {
			// A runnable command with subcommands (restore) checks its
			// own arguments.
			groups = groups[:len(groups)-1]
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	if len(groups) < 10 {
		t.Fatalf("only %d command groups found", len(groups))
	}
	for _, g := range groups {
		path := strings.Fields(g.CommandPath())[1:]
		r := NewRootCommand()
		var out bytes.Buffer
		r.SetOut(&out)
		r.SetErr(&out)
		r.SetArgs(append(path, "bogus"))
		err := r.Execute()
		if err == nil || !strings.Contains(err.Error(), `unknown command "bogus"`) {
			t.Errorf("%s bogus: err = %v, want unknown command", g.CommandPath(), err)
		}
		// Without an argument the group still prints its help.
		r = NewRootCommand()
		out.Reset()
		r.SetOut(&out)
		r.SetErr(&out)
		r.SetArgs(path)
		if err := r.Execute(); err != nil || !strings.Contains(out.String(), "Available Commands") {
			t.Errorf("%s: err = %v, help:\n%s", g.CommandPath(), err, out.String())
		}
	}
	// A near miss gets a suggestion.
	r := NewRootCommand()
	r.SetOut(new(bytes.Buffer))
	r.SetErr(new(bytes.Buffer))
	r.SetArgs([]string{"key", "rotat"})
	if err := r.Execute(); err == nil || !strings.Contains(err.Error(), "rotate") {
		t.Errorf("key rotat: %v, want a suggestion of rotate", err)
	}
}

// TestPrintResultEndsWithNewline: a one-line result ends its line (restore
// point create once left the shell prompt on the same line).
func TestPrintResultEndsWithNewline(t *testing.T) {
	g := &globals{format: "table"}
	cmd := &cobra.Command{}
	var out bytes.Buffer
	cmd.SetOut(&out)
	g.printResult(cmd, nil, "restore point %s created", "rp1")
	g.printResult(cmd, nil, "two\nlines\n")
	if got := out.String(); got != "restore point rp1 created\ntwo\nlines\n" {
		t.Fatalf("output %q", got)
	}
}

// TestWriteValue: text gets one newline at the end, binary is written
// exactly (a newline once corrupted binary output), and --out files are new
// and private.
func TestWriteValue(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"hunter22", "hunter22\n"},
		{"line\n", "line\n"},
		{"", "\n"},
		{"\x00\x01\xffbinary", "\x00\x01\xffbinary"},
		{"ends in newline but binary \xfe\n", "ends in newline but binary \xfe\n"},
	} {
		var out bytes.Buffer
		if err := writeValue(&out, []byte(c.in)); err != nil || out.String() != c.want {
			t.Errorf("writeValue(%q) = %q, %v; want %q", c.in, out.String(), err, c.want)
		}
	}
	p := filepath.Join(t.TempDir(), "v.bin")
	if err := writeNewPrivateFile(p, []byte{0, 1, 2}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); !bytes.Equal(b, []byte{0, 1, 2}) {
		t.Fatalf("file holds %x", b)
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", st.Mode())
	}
	if err := writeNewPrivateFile(p, []byte("other")); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("overwrote an existing file: %v", err)
	}
	if b, _ := os.ReadFile(p); !bytes.Equal(b, []byte{0, 1, 2}) {
		t.Fatalf("existing file changed: %x", b)
	}
}

// TestHelpNamesRealCommands: a "coffer ..." command quoted in any help text
// exists (restore's help once sent operators to "coffer keystore auto-open
// enable", which does not).
func TestHelpNamesRealCommands(t *testing.T) {
	root := NewRootCommand()
	var walk func(c *cobra.Command)
	quoted := regexp.MustCompile(`coffer((?:\s+[a-z][a-z0-9-]*)+)`)
	walk = func(c *cobra.Command) {
		for _, m := range quoted.FindAllStringSubmatch(strings.Join(strings.Fields(c.Long+" "+c.Short), " "), -1) {
			words := strings.Fields(m[1])
			cur, used := root, 0
			for _, w := range words {
				next, _, err := cur.Find([]string{w})
				if err != nil || next == cur {
					break
				}
				cur, used = next, used+1
			}
			// A quote that stops at a command group with a word left over
			// names a subcommand that does not exist.
			if used < len(words) && cur.Annotations[groupAnnotation] != "" {
				t.Errorf("%s's help quotes %q: %s has no command %q", c.CommandPath(), "coffer"+m[1], cur.CommandPath(), words[used])
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}

// A secret file that cannot be removed after a failure is named in the
// error: silently left, it would keep the secret (or part of it) on disk.
func TestRemoveAfterReportsAFileLeftBehind(t *testing.T) {
	dir := t.TempDir()
	gone := filepath.Join(dir, "gone")
	if err := os.WriteFile(gone, []byte("s"), 0o600); err != nil {
		t.Fatal(err)
	}
	cause := errors.New("write failed")
	if err := removeAfter(gone, "partial file", cause); err != cause {
		t.Fatalf("removed file: error %v, want the cause alone", err)
	}
	if _, err := os.Stat(gone); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("file not removed: %v", err)
	}
	// A non-empty directory cannot be removed, even by root.
	stuck := filepath.Join(dir, "stuck")
	if err := os.MkdirAll(filepath.Join(stuck, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	err := removeAfter(stuck, "new private key", cause)
	if !errors.Is(err, cause) || !strings.Contains(err.Error(), stuck) || !strings.Contains(err.Error(), "could not be removed") {
		t.Fatalf("file left behind: error %v does not name it", err)
	}
}
