// Package cli is the coffer command: the server, dev mode and the admin
// commands. Every admin command talks to a server through the public client
// package; offline commands (journal verify) read a data dir directly.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/coffer-kms/coffer/client"
	"github.com/coffer-kms/coffer/internal/datadir"
)

// globals are the connection flags shared by admin commands.
type globals struct {
	address   string
	token     string
	caCert    string
	dataDir   string
	clientDir string
	format    string
	timeout   time.Duration
	// retryTimeout: how long a request goes round the addresses (0: the
	// client's default, or $COFFER_RETRY_TIMEOUT).
	retryTimeout time.Duration
	// tokenFile: --token-file, a file holding the token.
	tokenFile string
	// errOut is the running command's standard error (for warnings).
	errOut io.Writer
	// warned: warnings already written (resolve may run more than once).
	warned map[string]bool
}

// NewRootCommand builds the coffer command tree.
func NewRootCommand() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "coffer",
		Short: "Coffer key management server and admin CLI",
		Long: `Coffer keeps encryption keys for databases and applications.

Start a development server:   coffer dev
Start a production server:    coffer server --config /etc/coffer/coffer.yaml

Admin commands reach a server at $COFFER_ADDR (https://host:port) with
$COFFER_TOKEN and $COFFER_CACERT, or, with --data-dir, through the server's
local control socket <data-dir>/coffer.sock (no token needed: access is
guarded by the data dir's permissions).

Credentials, first match wins:
  --data-dir DIR           the local control socket (all roles)
  --client-dir DIR         an enrolled endpoint's directory (see "coffer
                           endpoint enroll"); also $COFFER_CLIENT_DIR
  --token / $COFFER_TOKEN  a root, session or endpoint token
  ~/.coffer-token          the session stored by "coffer login"
                           ($COFFER_TOKEN_FILE overrides the path)
Mutual TLS outside a client dir: $COFFER_CLIENT_CERT and $COFFER_CLIENT_KEY.

A cluster: list every node, $COFFER_ADDR=https://kms1:8200,https://kms2:8200,...
Commands go round the nodes for up to --retry-timeout ($COFFER_RETRY_TIMEOUT,
default 10s) while none can take a request (a node down, a leader election).
A write that reached a node whose answer was lost is never sent again: it
fails with "outcome unknown" and exit status 3; check (read the object)
before sending it again.

Shell completion: see "coffer completion --help".`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			g.errOut = cmd.ErrOrStderr()
			return g.checkFormat()
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.address, "address", "", "server address, https://host:port or unix:///path (default $COFFER_ADDR)")
	pf.StringVar(&g.token, "token", "", "access token (visible in the process list: prefer $COFFER_TOKEN or --token-file)")
	pf.StringVar(&g.tokenFile, "token-file", "", "read the access token from this file")
	pf.StringVar(&g.caCert, "ca-cert", "", "CA certificate file for TLS (default $COFFER_CACERT)")
	pf.StringVar(&g.dataDir, "data-dir", "", "use the local control socket of the server on this data dir (default $COFFER_DATA_DIR)")
	pf.StringVar(&g.clientDir, "client-dir", "", "talk as the endpoint enrolled in this directory (default $COFFER_CLIENT_DIR)")
	pf.StringVar(&g.format, "format", "table", "output format: table or json")
	pf.DurationVar(&g.timeout, "timeout", defaultTimeout, "request timeout")
	pf.DurationVar(&g.retryTimeout, "retry-timeout", 0, "how long a request keeps trying the addresses while none can take it, e.g. during a leader election (default $COFFER_RETRY_TIMEOUT, else 10s)")

	root.AddCommand(
		newServerCmd(),
		newDevCmd(g),
		newInitCmd(g),
		newStatusCmd(g),
		newStopCmd(g),
		newKeystoreCmd(g),
		newTokenCmd(g),
		newJournalCmd(g),
		newBackupCmd(g),
		newFreezeCmd(g),
		newThawCmd(g),
		newRestorePointCmd(g),
		newCheckCmd(g),
		newRestoreCmd(g),
		newClusterCmd(g),
		newSecretCmd(g),
		newKeyCmd(g),
		newWalletCmd(g),
		newEndpointCmd(g),
		newUserCmd(g),
		newLoginCmd(g),
		newLogoutCmd(g),
		newWhoamiCmd(g),
		newAuditCmd(g),
		newBenchCmd(g),
		newVersionCmd(g),
		newGenDocsCmd(),
		newGenManCmd(),
		newDebugCmd(g),
	)
	root.RegisterFlagCompletionFunc("format", fixedCompletion("table", "json"))
	addCompletionCmd(root)
	refuseUnknownSubcommands(root)
	return root
}

// groupAnnotation marks a command that only holds subcommands.
const groupAnnotation = "coffer-group"

// defaultTimeout is --timeout's default: the longest a request may take
// (commands that wait for a restore or a backup raise it when --timeout is
// not given).
var defaultTimeout = 60 * time.Second

// longTaskTimeout is the request timeout of a command that waits for work
// lasting as long as the data (a backup, a restore, a drill, shipping
// segments), unless --timeout is given.
const longTaskTimeout = 24 * time.Hour

// waitLong raises the request timeout to longTaskTimeout when --timeout
// was not given.
func waitLong(cmd *cobra.Command, g *globals) {
	if !cmd.Flags().Changed("timeout") {
		g.timeout = longTaskTimeout
	}
}

// refuseUnknownSubcommands makes every command group (a command that only
// holds subcommands) fail on an argument that names no subcommand, as the
// root does: "coffer key bogus" exits non-zero with "unknown command"
// instead of printing the group's help and succeeding. A group run without
// arguments still prints its help.
func refuseUnknownSubcommands(c *cobra.Command) {
	for _, sub := range c.Commands() {
		refuseUnknownSubcommands(sub)
	}
	if !c.HasSubCommands() || c.Runnable() || !c.HasParent() {
		return
	}
	if c.Annotations == nil {
		c.Annotations = map[string]string{}
	}
	c.Annotations[groupAnnotation] = "true"
	c.Args = cobra.ArbitraryArgs
	c.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return cmd.Help()
		}
		msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
		if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
			msg += "\n\nDid you mean this?\n\t" + strings.Join(s, "\n\t")
		}
		return fmt.Errorf("%s\nRun '%s --help' for usage", msg, cmd.CommandPath())
	}
}

// fixedCompletion completes a flag from a fixed list.
func fixedCompletion(values ...string) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return values, cobra.ShellCompDirectiveNoFileComp
	}
}

// addCompletionCmd adds cobra's completion command now (not only at
// Execute), with how to install it.
func addCompletionCmd(root *cobra.Command) {
	root.InitDefaultCompletionCmd()
	for _, c := range root.Commands() {
		if c.Name() != "completion" {
			continue
		}
		c.Short = "Generate the shell completion script (bash, zsh, fish, powershell)"
		c.Long = `Print a completion script for commands, flags and fixed flag values
(--format, --type, --state, --permission, --role, --encoding).

  bash   source <(coffer completion bash)
         permanently: coffer completion bash > /etc/bash_completion.d/coffer
         (needs the bash-completion package)
  zsh    coffer completion zsh > "${fpath[1]}/_coffer"
         (needs "autoload -U compinit; compinit" in ~/.zshrc)
  fish   coffer completion fish > ~/.config/fish/completions/coffer.fish

Start a new shell afterwards. "coffer completion SHELL --help" has details.`
		c.Example = "  source <(coffer completion bash)"
		// cobra's scripts go to the output the root had when the command was
		// made; write to the command's output at run time instead.
		for _, sh := range c.Commands() {
			sh.RunE = func(cmd *cobra.Command, _ []string) error {
				noDesc, _ := cmd.Flags().GetBool("no-descriptions")
				out, r := cmd.OutOrStdout(), cmd.Root()
				switch cmd.Name() {
				case "bash":
					return r.GenBashCompletionV2(out, !noDesc)
				case "zsh":
					if noDesc {
						return r.GenZshCompletionNoDesc(out)
					}
					return r.GenZshCompletion(out)
				case "fish":
					return r.GenFishCompletion(out, !noDesc)
				case "powershell":
					if noDesc {
						return r.GenPowerShellCompletion(out)
					}
					return r.GenPowerShellCompletionWithDesc(out)
				}
				return fmt.Errorf("no completion for %s", cmd.Name())
			}
		}
	}
}

// ExitOutcomeUnknown is the exit status of a command whose write may or
// may not have been applied (client.ErrOutcomeUnknown); other failures exit 1.
const ExitOutcomeUnknown = 3

// Main runs the command line and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	cmd := NewRootCommand()
	cmd.SetArgs(args)
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(stderr, "Error:", err)
		switch {
		case client.IsCode(err, "unauthenticated"):
			fmt.Fprintln(stderr, "Hint: log in with \"coffer login\", or give --token, --client-dir DIR or (on the server host) --data-dir DIR")
		case client.IsCode(err, "sealed"):
			fmt.Fprintln(stderr, "Hint: open the keystore with \"coffer keystore open\"")
		case client.IsOutcomeUnknown(err):
			fmt.Fprintln(stderr, "The write may or may not have been applied (the server handling it failed before answering).\nCheck its result (read the object) before running the command again.")
			return ExitOutcomeUnknown
		}
		return 1
	}
	return 0
}

// Environment variables of the CLI (the client package reads COFFER_ADDR,
// COFFER_TOKEN, COFFER_CACERT, COFFER_CLIENT_CERT and COFFER_CLIENT_KEY).
const (
	envDataDir   = "COFFER_DATA_DIR"
	envClientDir = "COFFER_CLIENT_DIR"
	envTokenFile = "COFFER_TOKEN_FILE" // #nosec G101 -- the name of an environment variable, not a credential
	tokenFile    = ".coffer-token"
)

// conn is how the CLI reaches a server.
type conn struct {
	cfg client.Config
	// socketDir is the data dir when talking through its control socket.
	socketDir string
	// tokenFromFile is set when the token came from the login token file.
	tokenFromFile string
	// source says where the credentials come from (for whoami and
	// warnings): the control socket, a client dir, --token, --token-file,
	// $COFFER_TOKEN, the login token file, or none.
	source string
}

// tokenFilePath is where `coffer login` keeps the session token:
// $COFFER_TOKEN_FILE, else $HOME/.coffer-token ("" if there is no home).
func tokenFilePath() string {
	if p := os.Getenv(envTokenFile); p != "" {
		return p
	}
	home, err := os.UserHomeDir()
	if err != nil || home == "" {
		return ""
	}
	return filepath.Join(home, tokenFile)
}

// resolve works out the connection. In order: --data-dir (the local control
// socket), --client-dir / $COFFER_CLIENT_DIR (an enrolled endpoint), then
// --address / $COFFER_ADDR / $COFFER_DATA_DIR / https://127.0.0.1:8200.
// --token, --ca-cert and --address override what a client dir says. Without
// a token from --token or $COFFER_TOKEN, the login token file is used.
func (g *globals) resolve() (conn, error) {
	var c conn
	clientDir := g.clientDir
	if clientDir == "" && g.dataDir == "" {
		clientDir = os.Getenv(envClientDir)
	}
	switch {
	case g.dataDir != "":
		c.cfg = client.FromEnv()
		c.socketDir = g.dataDir
	case clientDir != "":
		cfg, err := client.LoadEnrollment(clientDir)
		if err != nil {
			return c, err
		}
		c.cfg = cfg
	default:
		c.cfg = client.FromEnv()
		if g.address == "" && len(c.cfg.Addresses) == 0 {
			c.socketDir = os.Getenv(envDataDir)
		}
	}
	switch {
	case g.dataDir != "" || (clientDir == "" && c.socketDir != "" && g.address == ""):
		c.source = "the local control socket"
	case clientDir != "":
		c.source = "the enrolled endpoint in " + clientDir
	case os.Getenv(client.EnvToken) != "":
		c.source = "$" + client.EnvToken
	}
	if g.token != "" && g.tokenFile != "" {
		return c, errors.New("give --token or --token-file, not both")
	}
	if g.token != "" {
		c.cfg.Token = g.token
		c.source = "--token"
		g.warn("warning: --token shows the token to anyone who can list processes; use $COFFER_TOKEN or --token-file FILE")
	}
	if g.tokenFile != "" {
		b, err := os.ReadFile(g.tokenFile)
		if err != nil {
			return c, fmt.Errorf("--token-file: %w", err)
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return c, fmt.Errorf("--token-file %s is empty", g.tokenFile)
		}
		c.cfg.Token = tok
		c.source = "--token-file " + g.tokenFile
	}
	if g.caCert != "" {
		c.cfg.CACert = g.caCert
	}
	switch {
	case g.address != "" && g.dataDir == "":
		c.cfg.Addresses = []string{g.address}
		c.socketDir = ""
	case c.socketDir != "":
		abs, err := filepath.Abs(c.socketDir)
		if err != nil {
			return c, err
		}
		c.socketDir = abs
		c.cfg.Addresses = []string{"unix://" + datadir.SocketPath(abs)}
	case len(c.cfg.Addresses) == 0:
		c.cfg.Addresses = []string{"https://127.0.0.1:8200"}
	}
	if c.cfg.Token == "" && clientDir == "" && c.socketDir == "" {
		if p := tokenFilePath(); p != "" {
			if b, err := os.ReadFile(p); err == nil {
				c.cfg.Token = strings.TrimSpace(string(b))
				c.tokenFromFile = p
				c.source = "the login session in " + p
			}
		}
	}
	c.cfg.Timeout = g.timeout
	switch {
	case g.retryTimeout < 0:
		return c, fmt.Errorf("--retry-timeout %s: must be more than 0", g.retryTimeout)
	case g.retryTimeout > 0:
		c.cfg.RetryTimeout = g.retryTimeout
	default: // also for a client dir, which FromEnv did not read
		d, err := client.RetryTimeoutFromEnv()
		if err != nil {
			return c, err
		}
		c.cfg.RetryTimeout = d
	}
	return c, nil
}

// warn writes a warning to the command's standard error.
func (g *globals) warn(msg string) {
	if g.errOut == nil || g.warned[msg] {
		return
	}
	if g.warned == nil {
		g.warned = map[string]bool{}
	}
	g.warned[msg] = true
	fmt.Fprintln(g.errOut, msg)
}

func (g *globals) client() (*client.Client, error) {
	c, err := g.resolve()
	if err != nil {
		return nil, err
	}
	return client.New(c.cfg)
}

// requireLocal refuses commands that only the local control socket may run.
func (g *globals) requireLocal(cmd string) error {
	if g.dataDir == "" && os.Getenv(envDataDir) == "" {
		return fmt.Errorf("%s works only through the local control socket: give --data-dir DIR", cmd)
	}
	return nil
}

// connect builds a client and a request context bounded by --timeout.
func (g *globals) connect() (*client.Client, context.Context, context.CancelFunc, error) {
	c, err := g.client()
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := g.ctx()
	return c, ctx, cancel, nil
}

// withClient connects like connect and runs fn with the client and the
// request context, cancelled when fn returns.
func (g *globals) withClient(fn func(ctx context.Context, c *client.Client) error) error {
	c, ctx, cancel, err := g.connect()
	if err != nil {
		return err
	}
	defer cancel()
	return fn(ctx, c)
}

// withObject is withClient for commands on one object: REF (an id, or a
// name in wallet) is resolved to the object id first.
func (g *globals) withObject(wallet, ref string, fn func(ctx context.Context, c *client.Client, id string) error) error {
	return g.withClient(func(ctx context.Context, c *client.Client) error {
		id, err := resolveRef(ctx, c, wallet, ref)
		if err != nil {
			return err
		}
		return fn(ctx, c, id)
	})
}

func (g *globals) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), g.timeout)
}

func (g *globals) printJSON(cmd *cobra.Command, v any) error {
	enc := json.NewEncoder(cmd.OutOrStdout())
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printResult prints v as JSON with --format json, else the message
// format (with its newline) filled in with args.
func (g *globals) printResult(cmd *cobra.Command, v any, format string, args ...any) error {
	if g.format == "json" {
		return g.printJSON(cmd, v)
	}
	if !strings.HasSuffix(format, "\n") {
		format += "\n"
	}
	fmt.Fprintf(cmd.OutOrStdout(), format, args...)
	return nil
}

// printList prints items as a JSON array with --format json (an empty or
// nil list is []), else as a table: the header line, then row(item) for
// every item (tab-separated columns, no newline).
func printList[T any](g *globals, cmd *cobra.Command, items []T, header string, row func(T) string) error {
	if g.format == "json" {
		if items == nil {
			items = []T{}
		}
		return g.printJSON(cmd, items)
	}
	t := newTable(cmd)
	fmt.Fprintln(t, header)
	for _, it := range items {
		fmt.Fprintln(t, row(it))
	}
	return t.Flush()
}

// deletedJSON is what a delete command prints with --format json.
func deletedJSON(name string) map[string]any {
	return map[string]any{"deleted": name}
}
