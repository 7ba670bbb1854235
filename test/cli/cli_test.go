// Package cli tests the coffer command line with testscript scripts
// (testdata/*.txtar): each script starts a real server in the background and
// drives it with the CLI, as an operator would.
package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/coffer-kms/coffer/client"
	"github.com/coffer-kms/coffer/internal/cli"
	"github.com/coffer-kms/coffer/internal/testutil"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"coffer": func() { os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr)) },
	})
}

func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: "testdata",
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			// waitstate DATADIR STATE: poll the server's health through its
			// control socket until it reports STATE (30 s at most).
			"waitstate": func(ts *testscript.TestScript, neg bool, args []string) {
				if len(args) != 2 {
					ts.Fatalf("usage: waitstate DATADIR STATE")
				}
				dir := ts.MkAbs(args[0])
				c, err := client.New(client.Config{Addresses: []string{"unix://" + filepath.Join(dir, "coffer.sock")}, Timeout: time.Second})
				ts.Check(err)
				if err := testutil.Poll(30*time.Second, func() error {
					h, err := c.Health(context.Background())
					if err != nil {
						return err
					}
					if h.State != args[1] {
						return fmt.Errorf("state %s", h.State)
					}
					return nil
				}); err != nil {
					ts.Fatalf("server in %s not %s: %v", dir, args[1], err)
				}
			},
			// serverurl DATADIR: set $URL to the HTTPS address of the server
			// running on DATADIR (from its coffer.pid) and $CACERT to its
			// generated CA certificate.
			"serverurl": func(ts *testscript.TestScript, neg bool, args []string) {
				if len(args) != 1 || neg {
					ts.Fatalf("usage: serverurl DATADIR")
				}
				dir := ts.MkAbs(args[0])
				b, err := os.ReadFile(filepath.Join(dir, "coffer.pid"))
				ts.Check(err)
				lines := strings.Split(strings.TrimSpace(string(b)), "\n")
				if len(lines) < 2 || !strings.HasPrefix(lines[1], "https://") {
					ts.Fatalf("no https URL in %s/coffer.pid: %q", dir, b)
				}
				ts.Setenv("URL", lines[1])
				ts.Setenv("CACERT", filepath.Join(dir, "tls", "ca.crt"))
			},
			// eventually REGEXP PROG ARGS...: run PROG until it succeeds
			// with stdout matching REGEXP (30 s at most), for what the
			// server does in the background (e.g. the full backup after a
			// restore). stdout and stderr are the last run's.
			"eventually": func(ts *testscript.TestScript, neg bool, args []string) {
				if len(args) < 2 || neg {
					ts.Fatalf("usage: eventually REGEXP PROG ARGS...")
				}
				re, err := regexp.Compile(args[0])
				ts.Check(err)
				if err := testutil.Poll(30*time.Second, func() error {
					if err := ts.Exec(args[1], args[2:]...); err != nil {
						return err
					}
					if !re.MatchString(ts.ReadFile("stdout")) {
						return fmt.Errorf("stdout does not match %s", args[0])
					}
					return nil
				}); err != nil {
					ts.Fatalf("eventually %s: %v", args[0], err)
				}
			},
			// grab VAR REGEXP: set $VAR to the first submatch of REGEXP in the
			// previous command's stdout.
			"grab": func(ts *testscript.TestScript, neg bool, args []string) {
				if len(args) != 2 || neg {
					ts.Fatalf("usage: grab VAR REGEXP")
				}
				re, err := regexp.Compile(args[1])
				ts.Check(err)
				m := re.FindStringSubmatch(ts.ReadFile("stdout"))
				if len(m) < 2 {
					ts.Fatalf("grab: no match for %s in stdout", args[1])
				}
				ts.Setenv(args[0], m[1])
			},
		},
		Setup: func(env *testscript.Env) error {
			env.Setenv("COFFER_MACHINE_ID_FILE", filepath.Join(env.WorkDir, "machine-id"))
			return os.WriteFile(filepath.Join(env.WorkDir, "machine-id"), []byte(fmt.Sprintf("test-%d\n", time.Now().UnixNano())), 0o600)
		},
	})
}
