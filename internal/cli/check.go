package cli

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/coffer-kms/coffer/internal/check"
	"github.com/coffer-kms/coffer/internal/datadir"
	"github.com/coffer-kms/coffer/internal/keystore"
	"github.com/coffer-kms/coffer/internal/server"
)

func newCheckCmd(g *globals) *cobra.Command {
	var passFile string
	var auto bool
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Check a stopped server's data dir offline: state, keys, secrets, journal, raft log",
		Long: `coffer check reads a data dir without a server (stop it first: a dir with a
running server is refused) and checks, in order:

  state database  bbolt's page-level consistency check
  data keys       every data key unwraps under the keystore's master keys
  secrets         every object version's material, the recovery passphrase and
                  destination secrets decrypt and authenticate
  journal         every segment verifies (framing, checksums, encryption) and
                  no record is missing between the first and the last
  raft log        the applied index and the journal are within the raft log

It needs the keystore passphrase (prompted, --passphrase-file) or --auto for
keystore.aks. It prints one line per check, naming the first bad item of a
failing one, and exits with status 1 when any check fails.`,
		Example: `  systemctl stop coffer
  coffer check --data-dir /var/lib/coffer
  coffer check --data-dir /var/lib/coffer --auto --format json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir := g.dataDir
			if dir == "" {
				dir = os.Getenv(envDataDir)
			}
			if dir == "" {
				return errors.New("coffer check needs --data-dir DIR")
			}
			if _, err := os.Stat(datadir.StatePath(dir)); err != nil { // #nosec G703 -- the data dir the operator named with --data-dir
				return fmt.Errorf("%s is not a Coffer data dir: %w", dir, err)
			}
			lock, err := server.LockDataDir(dir)
			if err != nil {
				return fmt.Errorf("%w (stop the server first: coffer check works on a stopped data dir)", err)
			}
			defer lock.Close()
			ks := keystore.New(datadir.KeystoreDir(dir), keystore.Options{})
			var ring *keystore.Keyring
			if auto {
				ring, err = ks.OpenAuto()
			} else {
				var pass []byte
				if pass, err = readPassphrase(cmd, passFile, "Keystore passphrase", false); err != nil {
					return err
				}
				ring, err = ks.Open(pass)
				clear(pass)
			}
			if err != nil {
				return fmt.Errorf("open the keystore: %w", err)
			}
			defer ring.Wipe()
			rep := check.Run(check.Paths{State: datadir.StatePath(dir), Raft: datadir.RaftDir(dir), Journal: datadir.JournalDir(dir)}, ring)
			if g.format == "json" {
				if err := g.printJSON(cmd, rep); err != nil {
					return err
				}
			} else {
				t := newTable(cmd)
				for _, r := range rep.Results {
					mark := "ok"
					if !r.OK {
						mark = "FAILED"
					}
					fmt.Fprintf(t, "%s\t%s\t%s\n", r.Name, mark, r.Detail)
				}
				t.Flush()
			}
			if !rep.OK {
				return errors.New("data dir check failed")
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&passFile, "passphrase-file", "", "read the keystore passphrase from FILE (- for stdin)")
	cmd.Flags().BoolVar(&auto, "auto", false, "open the keystore with keystore.aks instead of a passphrase")
	return cmd
}
