package cli

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
)

func newSecretCmd(g *globals) *cobra.Command {
	s := &cobra.Command{
		Use:   "secret",
		Short: "Store and read versioned secret values",
	}
	var value, valueFile string
	put := &cobra.Command{
		Use:   "put NAME",
		Short: "Store a new version of a secret (--value, --value-file, or stdin)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var v []byte
			switch {
			case value != "" && valueFile != "":
				return errors.New("give either --value or --value-file, not both")
			case value != "":
				v = []byte(value)
			case valueFile != "":
				var err error
				if valueFile == "-" {
					v, err = io.ReadAll(io.LimitReader(cmd.InOrStdin(), 1<<20))
				} else {
					v, err = os.ReadFile(valueFile)
				}
				if err != nil {
					return fmt.Errorf("read value: %w", err)
				}
			default:
				return errors.New("give --value or --value-file (- for stdin)")
			}
			c, ctx, cancel, err := g.connect()
			if err != nil {
				return err
			}
			defer cancel()
			ver, err := c.PutSecret(ctx, args[0], v)
			if err != nil {
				return err
			}
			if g.format == "json" {
				return g.printJSON(cmd, map[string]any{"name": args[0], "version": ver})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: version %d\n", args[0], ver)
			return nil
		},
	}
	put.Flags().StringVar(&value, "value", "", "the value (visible in shell history: prefer --value-file)")
	put.Flags().StringVar(&valueFile, "value-file", "", "read the value from this file (- for stdin)")
	var version uint64
	get := &cobra.Command{
		Use:   "get NAME",
		Short: "Print a secret's value (latest, or --version N)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, cancel, err := g.connect()
			if err != nil {
				return err
			}
			defer cancel()
			sec, err := c.GetSecret(ctx, args[0], version)
			if err != nil {
				return err
			}
			if g.format == "json" {
				return g.printJSON(cmd, sec)
			}
			_, err = cmd.OutOrStdout().Write(append(sec.Value, '\n'))
			return err
		},
	}
	get.Flags().Uint64Var(&version, "version", 0, "version to read (default latest)")
	s.AddCommand(put, get)
	return s
}
