package cli

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/coffer-kms/coffer/client"
)

func newSecretCmd(g *globals) *cobra.Command {
	s := &cobra.Command{
		Use:   "secret",
		Short: "Store and read versioned secret values (secret-data objects)",
		Long: `A key/value view of secret-data objects: "secret put" creates the object
NAME in --wallet (default "default") or adds a version to it, "secret get"
prints a version's value. Use "coffer key" for lifecycle, attributes and
versions of the same objects.`,
	}
	var wallet, value, valueFile string
	put := &cobra.Command{
		Use:   "put NAME",
		Short: "Store a new version of a secret (--value, --value-file, or stdin)",
		Long: `Store VALUE (1 byte to 64 KiB) as the next version of the secret NAME,
creating it if it does not exist. --value is visible in shell history and
process lists: prefer --value-file FILE, or --value-file - for stdin.`,
		Example: `  coffer secret put db1/password --value-file pw.txt
  printf 'hunter22' | coffer secret put app/token --value-file - --wallet apps`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := readValue(cmd, value, valueFile, true)
			if err != nil {
				return err
			}
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				o, err := c.PutSecret(ctx, wallet, args[0], v)
				if err != nil {
					return err
				}
				return g.printResult(cmd, map[string]any{"id": o.ID, "wallet": o.Wallet, "name": o.Name, "version": o.Latest}, "%s: version %d\n", args[0], o.Latest)
			})
		},
	}
	addWalletFlag(put, &wallet)
	put.Flags().StringVar(&value, "value", "", "the value (visible in shell history: prefer --value-file)")
	put.Flags().StringVar(&valueFile, "value-file", "", "read the value from this file (- for stdin)")
	var version uint64
	get := &cobra.Command{
		Use:   "get NAME",
		Short: "Print a secret's value (latest, or --version N)",
		Long: `Print the value of the secret NAME in --wallet, followed by a newline.
With --format json the value is base64, with its version and id.`,
		Example: `  coffer secret get db1/password
  coffer secret get db1/password --version 1`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				sec, err := c.GetSecret(ctx, wallet, args[0], version)
				if err != nil {
					return err
				}
				if g.format == "json" {
					return g.printJSON(cmd, sec)
				}
				_, err = cmd.OutOrStdout().Write(append(sec.Value, '\n'))
				return err
			})
		},
	}
	addWalletFlag(get, &wallet)
	get.Flags().Uint64Var(&version, "version", 0, "version to read (default latest)")
	s.AddCommand(put, get)
	return s
}
