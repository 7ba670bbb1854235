package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/coffer-kms/coffer/client"
)

func newBackupDrillCmd(g *globals) *cobra.Command {
	var destination string
	cmd := &cobra.Command{
		Use:   "drill [--destination D]",
		Short: "Restore drill: restore the newest backup chain into a scratch dir and check it",
		Long: `A restore drill proves that a destination's backups restore, and measures how
fast. The server takes the destination's newest backup chain (its newest
full, the incrementals on it and the archived journal segments after it),
restores it offline into a scratch directory under its data dir
(restore-tmp, mode 0700, removed after), opens the result as a server
would (a keystore under the recovery passphrase, the data keys, the state),
checks that it replayed to the newest archived record and that the state
digest read back from disk is the one the restore computed (a full's own
digest is checked as it is loaded), and runs the integrity check on every
object and secret.

The result (OK or FAILED with the reason), its duration and the measured
restore speed (records/s, bytes/s) are recorded in the destination's catalog
(the only thing a drill writes there: it reserves no timeline, unlike
coffer restore) and shown by coffer status, coffer backup destination list (with the
restore time that speed predicts for the newest chain) and the metric
coffer_backup_last_drill_success_timestamp_seconds. An alert is raised when
no drill of a destination holding backups succeeded within
backup.drill_max_age (default 7d). A schedule of kind verify runs drills
regularly (coffer backup schedule add NAME --kind verify ...). A chain that
retention removes while it is drilled (a newer full finished meanwhile) is
no failure: the drill runs again on the newest chain, or ends "drill not
run" with nothing recorded.

Without --destination every destination holding backups is drilled in turn
(one that cannot be drilled shows as ERROR with the reason, and the others
are still drilled; one encrypted to age recipients is skipped: drill it
offline). Exit status 1 if any drill FAILED or could not run.`,
		Example: `  coffer backup drill --destination nas
  coffer backup drill --format json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			waitLong(cmd, g) // a drill takes as long as a restore
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				names := []string{destination}
				if destination == "" {
					ds, err := c.ListDestinations(ctx)
					if err != nil {
						return err
					}
					names = names[:0]
					for _, d := range ds {
						if len(d.Recipients) > 0 {
							// The server holds no age identity to read them.
							fmt.Fprintf(cmd.ErrOrStderr(), "%s skipped: its backups are encrypted to age recipients; drill them offline (coffer restore --identity into a scratch dir)\n", d.Name)
							continue
						}
						names = append(names, d.Name)
					}
				}
				type row struct {
					Destination string `json:"destination"`
					client.Drill
				}
				var rows []row
				failed := 0
				for _, n := range names {
					res, err := c.RunDrill(ctx, n)
					var ae *client.Error
					if destination == "" && errors.As(err, &ae) && ae.Status == 404 {
						continue // no full backup there to drill on
					}
					if err != nil && (destination != "" || ctx.Err() != nil) {
						return fmt.Errorf("drill of %s: %w", n, err)
					}
					if err != nil {
						// One destination that cannot be drilled does not
						// keep the others from it: its row says why.
						res = client.Drill{Result: "ERROR", Reason: err.Error()}
					}
					if res.Result != "OK" {
						failed++
					}
					rows = append(rows, row{n, res})
				}
				if err := printList(g, cmd, rows, "DESTINATION\tRESULT\tFULL\tINDEX\tFILES\tDURATION\tRECORDS/S\tBYTES/S\tREASON", func(r row) string {
					return fmt.Sprintf("%s\t%s\t%s\t%d\t%d\t%s\t%.0f\t%s/s\t%s", r.Destination, r.Result, orDash(r.Full), r.Index, r.Files,
						fmtSeconds(r.Duration), r.RecordsPerSecond, humanBytes(int64(r.BytesPerSecond)), orDash(r.Reason))
				}); err != nil {
					return err
				}
				if failed > 0 {
					return fmt.Errorf("%d of %d restore drills FAILED or could not run", failed, len(rows))
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVarP(&destination, "destination", "d", "", "the destination to drill (default: every destination holding backups)")
	return cmd
}

// fmtSeconds shows a duration in seconds rounded for a table.
func fmtSeconds(s float64) string {
	d := time.Duration(s * float64(time.Second))
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	default:
		return d.Round(100 * time.Millisecond).String()
	}
}

// lastDrillOK is when a restore drill last succeeded ("-": never, or not known).
func lastDrillOK(v *client.DrillView) string {
	if v == nil || v.LastGood == nil {
		return "-"
	}
	return fmtTime(v.LastGood.Time)
}

// estimatedRestore is the restore time of the newest chain at the last
// successful drill's speed ("-": no drill yet).
func estimatedRestore(v *client.DrillView) string {
	if v == nil || v.EstimatedRestore <= 0 {
		return "-"
	}
	return "~" + fmtSeconds(v.EstimatedRestore)
}
