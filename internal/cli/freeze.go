package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/coffer-kms/coffer/client"
)

// freezeRequestTimeout bounds a freeze request: the server writes a full
// dump before it answers.
const freezeRequestTimeout = 30 * time.Minute

func newFreezeCmd(g *globals) *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "freeze [--timeout DURATION]",
		Short: "Write a full dump, then refuse writes for a storage snapshot of the data dir",
		Long: `Prepare the data dir for a storage-level snapshot (LVM, ZFS, a SAN or VM
snapshot): the server writes a consistent full dump under <data-dir>/dump,
encrypted to the recovery passphrase (skipped, with a note, when none is
set), then refuses every write until "coffer thaw" or until the freeze timeout
ends it by itself. Reads keep working: keys are still served. Take the
snapshot between freeze and thaw.

Sending SIGUSR1 to the server process does the same as "coffer freeze" (with
the configured backup.freeze_timeout), and SIGCONT the same as "coffer thaw",
for snapshot tools that run hooks on the server host.

Here --timeout is how long the freeze lasts at most (up to 24h), not a
request timeout. Without it the server uses its backup.freeze_timeout
setting (default 5m).`,
		Example: `  coffer freeze --timeout 10m && lvcreate --snapshot ... && coffer thaw
  kill -USR1 $(head -1 /var/lib/coffer/coffer.pid)   # the same from a hook`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Without --timeout none is sent: the server's
			// backup.freeze_timeout applies.
			timeout := timeout
			if !cmd.Flags().Changed("timeout") {
				timeout = 0
			} else if timeout <= 0 || timeout > 24*time.Hour {
				return fmt.Errorf("--timeout %s: use a positive duration up to 24h", timeout)
			}
			// --timeout is the freeze's here; the request waits for the dump.
			g.timeout = freezeRequestTimeout
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				st, err := c.Freeze(ctx, timeout)
				if err != nil {
					return err
				}
				if g.format == "json" {
					err = g.printJSON(cmd, st)
				} else if st.Frozen {
					printFreeze(cmd, st)
				}
				if err == nil && !st.Frozen {
					// A thaw arrived while the dump was written: nothing
					// is frozen, and a snapshot now would not be of a
					// frozen data dir.
					err = fmt.Errorf("writes were not frozen: %s", st.Note)
					if st.Dump != "" {
						err = fmt.Errorf("%w (the full dump was written: %s)", err, st.Dump)
					}
				}
				return err
			})
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "end the freeze by itself after this long, up to 24h (default: the server's backup.freeze_timeout, 5m unless configured)")
	return cmd
}

func printFreeze(cmd *cobra.Command, st client.FreezeStatus) {
	w := cmd.OutOrStdout()
	fmt.Fprintf(w, "writes frozen until %s; reads keep working\n", fmtTime(st.Until))
	if st.Dump != "" {
		fmt.Fprintf(w, "full dump: %s\n", st.Dump)
	}
	if st.Note != "" {
		fmt.Fprintf(w, "note: %s\n", st.Note)
	}
	fmt.Fprintln(w, `Take the snapshot now, then run "coffer thaw" (or send SIGCONT).`)
}

func newThawCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "thaw",
		Short: "End a freeze: writes are accepted again",
		Long: `End the freeze started by "coffer freeze" (or SIGUSR1): the server accepts
writes again. Sending SIGCONT to the server process does the same. Refused
when writes are not frozen.`,
		Example: "  coffer thaw",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				st, err := c.Thaw(ctx)
				if err != nil {
					return err
				}
				return g.printResult(cmd, st, "writes thawed\n")
			})
		},
	}
}
