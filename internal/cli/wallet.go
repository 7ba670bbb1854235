package cli

import (
	"context"
	"fmt"
	"slices"

	"github.com/spf13/cobra"

	"github.com/coffer-kms/coffer/client"
)

func newWalletCmd(g *globals) *cobra.Command {
	wc := &cobra.Command{
		Use:   "wallet",
		Short: "Create, list, show and delete wallets (groups of objects with endpoint grants)",
		Long: `A wallet groups security objects; endpoints get read, read_modify or
manage on a wallet ("coffer endpoint grant"). The wallet "default" exists
after init. Wallets are managed by key administrators (key_admin role).`,
	}
	var desc string
	create := &cobra.Command{
		Use:     "create NAME",
		Short:   "Create a wallet",
		Long:    "Create a wallet. NAME: 1-64 characters from A-Z a-z 0-9 _ . -, starting with a letter or digit.",
		Example: `  coffer wallet create db-prod --description "TDE keys of the production databases"`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				w, err := c.CreateWallet(ctx, args[0], desc)
				if err != nil {
					return err
				}
				return g.printResult(cmd, w, "wallet %s created\n", w.Name)
			})
		},
	}
	create.Flags().StringVarP(&desc, "description", "d", "", "what the wallet is for")
	list := &cobra.Command{
		Use:   "list",
		Short: "List wallets (an endpoint sees those granted to it)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				ws, err := collect(c.Wallets(ctx))
				if err != nil {
					return err
				}
				return printList(g, cmd, ws, "NAME\tGRANTS\tCREATED\tDESCRIPTION", func(w client.Wallet) string {
					return fmt.Sprintf("%s\t%d\t%s\t%s", w.Name, len(w.Grants), fmtTime(w.Created), orDash(w.Description))
				})
			})
		},
	}
	show := &cobra.Command{
		Use:     "show NAME",
		Short:   "Show a wallet and the endpoints' grants on it",
		Example: `  coffer wallet show default`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				w, err := c.GetWallet(ctx, args[0])
				if err != nil {
					return err
				}
				if g.format == "json" {
					return g.printJSON(cmd, w)
				}
				t := newTable(cmd)
				fmt.Fprintf(t, "Name:\t%s\n", w.Name)
				fmt.Fprintf(t, "Description:\t%s\n", orDash(w.Description))
				fmt.Fprintf(t, "Created:\t%s by %s\n", fmtTime(w.Created), orDash(w.CreatedBy))
				if len(w.Grants) == 0 {
					fmt.Fprintf(t, "Grants:\tnone\n")
					return t.Flush()
				}
				t.Flush()
				fmt.Fprintln(cmd.OutOrStdout())
				t = newTable(cmd)
				fmt.Fprintln(t, "ENDPOINT\tPERMISSION")
				names := make([]string, 0, len(w.Grants))
				for n := range w.Grants {
					names = append(names, n)
				}
				slices.Sort(names)
				for _, n := range names {
					fmt.Fprintf(t, "%s\t%s\n", n, w.Grants[n])
				}
				return t.Flush()
			})
		},
	}
	del := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete an empty wallet",
		Long:  "Delete a wallet. The server refuses while the wallet still holds objects.",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				if err := c.DeleteWallet(ctx, args[0]); err != nil {
					return err
				}
				return g.printResult(cmd, deletedJSON(args[0]), "wallet %s deleted\n", args[0])
			})
		},
	}
	wc.AddCommand(create, list, show, del)
	return wc
}
