package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/coffer-kms/coffer/client"
)

func newRestorePointCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "restore-point",
		Short: "Create and list named restore points",
		Long: `A restore point is a named marker written into the history (the raft log
and the recovery journal) at the moment it is created. Take one before a
risky change (a bulk rotation, a migration, a cleanup): a restore can then
return exactly to it. Names are unique.`,
	}
	cmd.AddCommand(&cobra.Command{
		Use:     "create NAME",
		Short:   "Write a named restore point into the history",
		Example: "  coffer restore-point create before-migration",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				rp, err := c.CreateRestorePoint(ctx, args[0])
				if err != nil {
					return err
				}
				return g.printResult(cmd, rp, "restore point %s created at index %d (%s)", rp.Name, rp.Index, rp.Time.Format(time.RFC3339))
			})
		},
	}, &cobra.Command{
		Use:   "list",
		Short: "List restore points: name, index, time and who created it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				rps, err := c.RestorePoints(ctx)
				if err != nil {
					return err
				}
				return printList(g, cmd, rps, "NAME\tINDEX\tTIME\tCREATED BY", func(rp client.RestorePoint) string {
					return fmt.Sprintf("%s\t%d\t%s\t%s", rp.Name, rp.Index, rp.Time.Format(time.RFC3339), rp.CreatedBy)
				})
			})
		},
	})
	return cmd
}
