// Package cli is the coffer command: the server, dev mode and the admin
// commands. Every admin command talks to a server through the public client
// package; offline commands (journal verify) read a data dir directly.
package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/coffer-kms/coffer/client"
)

// globals are the connection flags shared by admin commands.
type globals struct {
	address string
	token   string
	caCert  string
	dataDir string
	format  string
	timeout time.Duration
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
guarded by the data dir's permissions).`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.address, "address", "", "server address, https://host:port or unix:///path (default $COFFER_ADDR)")
	pf.StringVar(&g.token, "token", "", "access token (default $COFFER_TOKEN)")
	pf.StringVar(&g.caCert, "ca-cert", "", "CA certificate file for TLS (default $COFFER_CACERT)")
	pf.StringVar(&g.dataDir, "data-dir", "", "use the local control socket of the server on this data dir (default $COFFER_DATA_DIR)")
	pf.StringVar(&g.format, "format", "table", "output format: table or json")
	pf.DurationVar(&g.timeout, "timeout", 60*time.Second, "request timeout")

	root.AddCommand(
		newServerCmd(),
		newDevCmd(g),
		newInitCmd(g),
		newStatusCmd(g),
		newStopCmd(g),
		newKeystoreCmd(g),
		newTokenCmd(g),
		newJournalCmd(g),
		newSecretCmd(g),
		newBenchCmd(g),
		newVersionCmd(),
	)
	return root
}

// Main runs the command line and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	cmd := NewRootCommand()
	cmd.SetArgs(args)
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(stderr, "Error:", err)
		return 1
	}
	return 0
}

func (g *globals) client() (*client.Client, error) {
	cfg := client.FromEnv()
	if g.token != "" {
		cfg.Token = g.token
	}
	if g.caCert != "" {
		cfg.CACert = g.caCert
	}
	dataDir := g.dataDir
	if dataDir == "" && g.address == "" && len(cfg.Addresses) == 0 {
		dataDir = os.Getenv("COFFER_DATA_DIR")
	}
	switch {
	case g.address != "":
		cfg.Addresses = []string{g.address}
	case dataDir != "":
		abs, err := filepath.Abs(dataDir)
		if err != nil {
			return nil, err
		}
		cfg.Addresses = []string{"unix://" + filepath.Join(abs, "coffer.sock")}
	case len(cfg.Addresses) == 0:
		cfg.Addresses = []string{"https://127.0.0.1:8200"}
	}
	cfg.Timeout = g.timeout
	return client.New(cfg)
}

// requireLocal refuses commands that only the local control socket may run.
func (g *globals) requireLocal(cmd string) error {
	if g.dataDir == "" && os.Getenv("COFFER_DATA_DIR") == "" {
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

func (g *globals) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), g.timeout)
}

func (g *globals) printJSON(cmd *cobra.Command, v any) error {
	enc := json.NewEncoder(cmd.OutOrStdout())
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(cmd.OutOrStdout(), "coffer", version())
			return nil
		},
	}
}
