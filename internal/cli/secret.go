package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"unicode"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"golang.org/x/term"

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
	var outFile string
	get := &cobra.Command{
		Use:   "get NAME",
		Short: "Print a secret's value (latest, or --version N), or write it to --out FILE",
		Long: `Print the value of the secret NAME in --wallet. A text value gets a
newline at the end when it has none; a binary value (not UTF-8 text) is
written exactly as stored, never with a newline added, and is refused on a
terminal: use --out FILE (created 0600, never overwritten) or redirect.
With --format json the value is base64, with its version and id.`,
		Example: `  coffer secret get db1/password
  coffer secret get db1/password --version 1
  coffer secret get db1/tde-master --out tde-master.bin`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				sec, err := c.GetSecret(ctx, wallet, args[0], version)
				if err != nil {
					return err
				}
				if outFile != "" {
					if err := writeNewPrivateFile(outFile, sec.Value); err != nil {
						return err
					}
					return g.printResult(cmd, map[string]any{"id": sec.ID, "version": sec.Version, "file": outFile, "bytes": len(sec.Value)},
						"%s version %d: %d bytes written to %s", args[0], sec.Version, len(sec.Value), outFile)
				}
				if g.format == "json" {
					return g.printJSON(cmd, sec)
				}
				return writeValue(cmd.OutOrStdout(), sec.Value)
			})
		},
	}
	addWalletFlag(get, &wallet)
	get.Flags().Uint64Var(&version, "version", 0, "version to read (default latest)")
	get.Flags().StringVar(&outFile, "out", "", "write the value to this new file (0600) instead of standard output")
	s.AddCommand(put, get)
	return s
}

// isText: valid UTF-8 without control characters other than tab, newline
// and carriage return.
func isText(b []byte) bool {
	if !utf8.Valid(b) {
		return false
	}
	for _, r := range string(b) {
		if unicode.IsControl(r) && r != '\t' && r != '\n' && r != '\r' {
			return false
		}
	}
	return true
}

// writeValue prints a secret's value: text ends with a newline, binary is
// written as is and refused on a terminal.
func writeValue(w io.Writer, v []byte) error {
	if !isText(v) {
		if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			return errors.New("the value is binary: write it with --out FILE, redirect the output, or use --format json (base64)")
		}
		_, err := w.Write(v)
		return err
	}
	if len(v) == 0 || v[len(v)-1] != '\n' {
		v = append(v[:len(v):len(v)], '\n')
	}
	_, err := w.Write(v)
	return err
}

// writeNewPrivateFile creates path (0600; an existing file is never
// overwritten) with data, synced before it is closed.
func writeNewPrivateFile(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("--out %s: the file exists; choose a new name (a secret is never written over a file)", path)
		}
		return fmt.Errorf("--out: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close() // #nosec G104 -- closing after the failed write, which is the one returned
		return removeAfter(path, "partial file", fmt.Errorf("--out %s: %w", path, err))
	}
	if err := f.Sync(); err != nil {
		f.Close() // #nosec G104 -- closing after the failed fsync, which is the one returned
		return removeAfter(path, "partial file", fmt.Errorf("--out %s: %w", path, err))
	}
	if err := f.Close(); err != nil {
		return removeAfter(path, "partial file", fmt.Errorf("--out %s: %w", path, err))
	}
	return nil
}

// removeAfter removes the file at path (a secret, or part of one) that the
// failure err left unused. A file that stays is named in the returned
// error, for the user to remove.
func removeAfter(path, what string, err error) error {
	if rerr := os.Remove(path); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
		return fmt.Errorf("%w (the %s %s could not be removed: remove it: %v)", err, what, path, rerr)
	}
	return err
}
