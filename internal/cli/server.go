package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/coffer-kms/coffer/internal/config"
	"github.com/coffer-kms/coffer/internal/server"
)

type serverOptions struct{ configPath string }

func newServerCmd() *cobra.Command {
	o := &serverOptions{}
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run a Coffer server from a configuration file",
		Long: `Run a Coffer server. The configuration reference is docs/reference/config.md.

On first start with an empty data dir the server generates a CA and a server
certificate (unless tls.cert_file is set) and waits uninitialised: run
"coffer init". After a restart the keystore is sealed until "coffer keystore
open", unless auto-open is enabled.

Signals: SIGTERM smart stop (wait for requests), SIGINT fast stop (cancel
them), SIGQUIT immediate stop (exit now; the next start recovers), SIGHUP
reload TLS certificate and log level, SIGUSR2 rotate the journal.

Under systemd (Type=notify, the unit of the Debian package) the server sends
READY=1 once it listens and the keystore state is known, STOPPING=1 when it
stops, and WATCHDOG=1 when the unit sets WatchdogSec
(docs/operations/systemd.md).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.configPath == "" {
				return fmt.Errorf("--config is required (see docs/reference/config.md)")
			}
			cfg, err := config.Load(o.configPath)
			if err != nil {
				return err
			}
			return server.Run(server.Options{Config: cfg, ConfigPath: o.configPath, LogOutput: cmd.ErrOrStderr()})
		},
	}
	cmd.Flags().StringVarP(&o.configPath, "config", "c", "", "configuration file (YAML)")
	return cmd
}
