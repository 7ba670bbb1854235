package cli

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/coffer-kms/coffer/internal/config"
	"github.com/coffer-kms/coffer/internal/fsutil"
	"github.com/coffer-kms/coffer/internal/server"
	"github.com/coffer-kms/coffer/internal/service"
)

type devOptions struct {
	listen   string
	logLevel string
	passFile string
}

// Dev files kept in the dev data dir (0600), so a restarted dev server can be
// used again. Dev mode only: a production keystore passphrase lives with the
// operator, never next to the data.
const (
	devPassphraseFile = "dev-passphrase"
	devTokenFile      = "dev-root-token" // #nosec G101 -- a file name, not a credential
	devRecoveryFile   = "dev-recovery-passphrase"
	devAdminFile      = "dev-admin-password" // #nosec G101 -- a file name, not a credential
	devAdminUser      = "admin"
)

func newDevCmd(g *globals) *cobra.Command {
	o := &devOptions{}
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a single-node development server with an auto-opened keystore",
		Long: `Run a development server: single node, data in a local directory
(./coffer-dev unless --data-dir is given; kept between runs), keystore created with a random
passphrase and opened automatically on this machine, TLS with a generated CA.
It prints the URL, the web console's URL with a first administrator's user
name and password (kept in the data dir), the CA file, the root token and
the environment to export.
A recovery passphrase for backups is generated too (kept in the data dir
next to the keystore passphrase), so "coffer backup run --destination LOCAL"
works at once.
A data dir made by "coffer restore" opens too: over a dev data dir (with
--force) the restore keeps the dev files, the new keystore passphrase
included; into a new dir, give that passphrase once with --passphrase-file
(it is kept in the data dir from then on). Its backups to destinations
other than LOCAL are held after the restore ("coffer status" says how to
resume them).
Not for production: the passphrases and root token are kept in the data dir.`,
		Example: `  coffer dev
  coffer dev --data-dir /tmp/coffer-dev --listen 127.0.0.1:8300
  coffer dev --data-dir /tmp/restored --passphrase-file ks.txt   # a restored data dir, first run`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := config.Default()
			dir := g.dataDir
			if dir == "" {
				dir = "coffer-dev"
			}
			abs, err := filepath.Abs(dir)
			if err != nil {
				return err
			}
			cfg.DataDir, cfg.Listen = abs, o.listen
			cfg.Log.Format, cfg.Log.Level = "text", o.logLevel
			cfg.Storage.MinFreeBytes = 16 << 20
			cfg.Memory.Lock = false // a developer's shell rarely has the limit for it
			out := cmd.OutOrStdout()
			var pass []byte
			if o.passFile != "" {
				if pass, err = readPassphrase(cmd, o.passFile, "", false); err != nil {
					return err
				}
				defer clear(pass)
			}
			return server.Run(server.Options{Config: cfg, LogOutput: cmd.ErrOrStderr(), OnReady: func(s *server.Server) error {
				tok, err := devPrepare(s, pass)
				if err != nil {
					return err
				}
				recovery := "set elsewhere (not stored in the data dir)"
				if p, err := devRecovery(s); err != nil {
					recovery = "not set: " + err.Error()
				} else if p != "" {
					recovery = "in " + p
				}
				console := "no administrator"
				if pw, err := devAdmin(s); errors.Is(err, service.ErrConflict) {
					console = "user " + devAdminUser + " from the restored state, with the password it had then"
				} else if err != nil {
					console += ": " + err.Error()
				} else {
					console = "user " + devAdminUser + ", password " + pw
				}
				keystore := "auto-opens on this machine"
				if !s.Service.AutoOpenEnabled() {
					keystore = "auto-open off (not restored); coffer dev opens it"
				}
				fmt.Fprintf(out, `
Coffer dev server is running: single node, NOT for production.

  URL:             %s
  Console:         %s/ui/ (%s)
  CA certificate:  %s
  Root token:      %s
  Data dir:        %s
  Keystore:        open; %s (passphrase in %s)
  Recovery:        passphrase for backups %s
  Control socket:  %s

  export COFFER_ADDR=%s
  export COFFER_CACERT=%s
  export COFFER_TOKEN=%s

Try: coffer status; coffer secret put demo --value hello; coffer secret get demo
     coffer key create demo-key --type symmetric_key; coffer key list; coffer whoami
     coffer backup run --destination LOCAL; coffer backup list
Stop with Ctrl-C (fast stop) or: coffer stop --data-dir %s
`, s.URL, s.URL, console, s.CAFile, tok, abs, keystore, filepath.Join(abs, devPassphraseFile), recovery, s.Socket, s.URL, s.CAFile, tok, abs)
				return nil
			}})
		},
	}
	cmd.Flags().StringVar(&o.listen, "listen", "127.0.0.1:8200", "address to listen on")
	cmd.Flags().StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	cmd.Flags().StringVar(&o.passFile, "passphrase-file", "", "open a sealed data dir that has no dev passphrase file (one made by coffer restore) with the keystore passphrase in this file; it is kept in the data dir afterwards")
	return cmd
}

// devPrepare initialises the keystore on first run and opens it afterwards.
// pass, if given, opens a sealed keystore that has no dev passphrase file
// (a data dir made by coffer restore), and is kept as that file.
func devPrepare(s *server.Server, pass []byte) (string, error) {
	svc := s.Service
	dir := s.Service.Status().DataDir
	// Dev mode prepares the server in-process, as the local root would
	// through the control socket.
	ctx := service.WithIdentity(context.Background(), service.LocalRoot())
	passFile, tokFile := filepath.Join(dir, devPassphraseFile), filepath.Join(dir, devTokenFile)
	switch svc.State() {
	case service.StateUninitialized:
		pass := devSecret()
		if err := fsutil.WriteFile(passFile, []byte(pass+"\n")); err != nil {
			return "", err
		}
		tok, err := svc.Init(ctx, service.LocalRoot(), []byte(pass))
		if err != nil {
			return "", err
		}
		if err := fsutil.WriteFile(tokFile, []byte(tok+"\n")); err != nil {
			return "", err
		}
		if err := svc.EnableAutoOpen(ctx); err != nil {
			return "", err
		}
		return tok, nil
	case service.StateSealed:
		stored, err := os.ReadFile(passFile)
		switch {
		case err == nil:
			if err := svc.Open(ctx, []byte(strings.TrimSpace(string(stored)))); err != nil && !errors.Is(err, service.ErrAlreadyOpen) {
				return "", err
			}
		case errors.Is(err, os.ErrNotExist) && len(pass) > 0:
			if err := svc.Open(ctx, pass); err != nil && !errors.Is(err, service.ErrAlreadyOpen) {
				return "", fmt.Errorf("open the keystore with --passphrase-file: %w", err)
			}
			if err := fsutil.WriteFile(passFile, append(append([]byte(nil), pass...), '\n')); err != nil {
				return "", err
			}
		case errors.Is(err, os.ErrNotExist):
			return "", fmt.Errorf("dev keystore is sealed and %s is missing (a data dir made by coffer restore?): run coffer dev --passphrase-file FILE once, FILE holding the keystore passphrase given to the restore", passFile)
		default:
			return "", fmt.Errorf("read %s: %w", passFile, err)
		}
	}
	tok, err := os.ReadFile(tokFile)
	if errors.Is(err, os.ErrNotExist) {
		// A restored data dir has the backed-up state, not the dev files:
		// make a root token for it and keep it as dev mode does.
		t, err := svc.CreateRootToken(ctx, service.LocalRoot(), 0)
		if err != nil {
			return "", fmt.Errorf("create a dev root token: %w", err)
		}
		return t, fsutil.WriteFile(tokFile, []byte(t+"\n"))
	}
	if err != nil {
		return "", fmt.Errorf("read dev root token: %w", err)
	}
	return strings.TrimSpace(string(tok)), nil
}

// devAdmin creates the first administrator of the console (every role) on
// first run and keeps its password (0600) in the data dir; later runs find
// the file.
func devAdmin(s *server.Server) (string, error) {
	path := filepath.Join(s.Service.Status().DataDir, devAdminFile)
	if b, err := os.ReadFile(path); err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	ctx := service.WithIdentity(context.Background(), service.LocalRoot())
	pass := devSecret()
	if _, err := s.Service.Access.CreateUser(ctx, devAdminUser, pass, service.AllRoles); err != nil {
		return "", fmt.Errorf("create the console administrator: %w", err)
	}
	return pass, fsutil.WriteFile(path, []byte(pass+"\n"))
}

// devSecret is a random passphrase for dev mode.
func devSecret() string {
	b := make([]byte, 24)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// devRecovery sets a generated recovery passphrase when none is set and
// keeps it (0600) next to the dev keystore passphrase. It returns the file,
// or "" when a passphrase was set some other way.
func devRecovery(s *server.Server) (string, error) {
	svc := s.Service
	ctx := service.WithIdentity(context.Background(), service.LocalRoot())
	path := filepath.Join(svc.Status().DataDir, devRecoveryFile)
	st, err := svc.Recovery(ctx)
	if err != nil {
		return "", err
	}
	if st.Set {
		if _, err := os.Stat(path); err != nil {
			return "", nil
		}
		return path, nil
	}
	pass := devSecret()
	if err := fsutil.WriteFile(path, []byte(pass+"\n")); err != nil {
		return "", err
	}
	if _, err := svc.SetRecoveryPassphrase(ctx, nil, []byte(pass)); err != nil {
		return "", err
	}
	return path, nil
}
