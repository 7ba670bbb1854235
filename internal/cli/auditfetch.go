package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/coffer-kms/coffer/internal/audit"
	"github.com/coffer-kms/coffer/internal/backup"
	"github.com/coffer-kms/coffer/internal/fsutil"
)

// auditFetchReport is what "audit fetch" prints with --format json.
type auditFetchReport struct {
	Node    string       `json:"node"`
	To      string       `json:"to"`
	Fetched []string     `json:"fetched"`
	Chain   audit.Report `json:"chain"`
}

func newAuditFetchCmd(g *globals) *cobra.Command {
	var (
		from     fromOptions
		node, to string
	)
	cmd := &cobra.Command{
		Use:   "fetch --from LOCATION --to DIR [--node ID]",
		Short: "Copy a node's shipped audit files back from a backup destination, offline",
		Long: `Every node copies its closed audit files to the backup destinations (under
audit/<node-id>/, encrypted like the backups); with audit.retention set the
node then removes the old ones. coffer audit fetch reads them back from
--from (a directory, sftp://... or s3://..., as for coffer restore),
decrypts them with the recovery passphrase (or --identity), writes them to
--to as the original audit-NNNNNNNN.log files (mode 0600), and checks the
hash chain through them. Compare the last seq and hash it prints with
audit.anchor on the node (the last pruned record): they must be equal.

--node picks the node when the destination holds several (a restored
timeline's files are under <node-id>.tl<N>). No server is needed.`,
		Example: `  coffer audit fetch --from /mnt/backup --to /tmp/audit-copy
  coffer audit fetch --from s3://minio:9000/coffer --s3-access-key K --s3-secret-key-file sk --node n-1a2b --to ./audit-n1`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if to == "" {
				return errors.New("--to DIR is required")
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			d, err := from.open(ctx, cmd)
			if err != nil {
				return err
			}
			defer d.Close()
			byNode, err := backup.ListAudit(ctx, d)
			if err != nil {
				return err
			}
			var nodes []string
			for n := range byNode {
				nodes = append(nodes, n)
			}
			slices.Sort(nodes)
			switch {
			case len(nodes) == 0:
				return fmt.Errorf("no audit files on %s", d.Location())
			case node == "" && len(nodes) > 1:
				return fmt.Errorf("%s holds the audit files of several nodes: pick one with --node (%s)", d.Location(), strings.Join(nodes, ", "))
			case node == "":
				node = nodes[0]
			case byNode[node] == nil:
				return fmt.Errorf("no audit files of node %q on %s (there are: %s)", node, d.Location(), strings.Join(nodes, ", "))
			}
			keys, err := from.keys(cmd)
			if err != nil {
				return err
			}
			defer func() {
				for _, k := range keys {
					clear(k.Passphrase)
				}
			}()
			if err := fsutil.EnsureDir(to); err != nil {
				return err
			}
			rep := auditFetchReport{Node: node, To: to}
			for _, name := range byNode[node] {
				base := strings.TrimSuffix(path.Base(name), backup.FileSuffix)
				err := fsutil.WriteFileFrom(filepath.Join(to, base), func(w io.Writer) error {
					m, err := backup.FetchAudit(ctx, d, name, keys, to, w)
					if err == nil && m.Extra[backup.ExtraAuditFile] != base {
						err = fmt.Errorf("%s holds %s", name, m.Extra[backup.ExtraAuditFile])
					}
					return err
				})
				if err != nil {
					return err
				}
				rep.Fetched = append(rep.Fetched, base)
			}
			rep.Chain, err = audit.VerifyFiles(to)
			if g.format == "json" {
				if perr := g.printJSON(cmd, rep); perr != nil {
					return perr
				}
			}
			if err != nil {
				return fmt.Errorf("the fetched audit files in %s do not verify: %w", to, err)
			}
			if g.format != "json" {
				fmt.Fprintf(cmd.OutOrStdout(), "fetched %d audit files of node %s to %s: %d records, seq %d-%d, chain intact, last hash %s\n",
					len(rep.Fetched), node, to, rep.Chain.Records, rep.Chain.FirstSeq, rep.Chain.LastSeq, rep.Chain.LastHash)
			}
			return nil
		},
	}
	from.addFlags(cmd)
	cmd.Flags().StringVar(&node, "node", "", "the node whose files to fetch (needed when the destination holds several)")
	cmd.Flags().StringVar(&to, "to", "", "directory to write the audit files to (created 0700)")
	return cmd
}
