package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/coffer-kms/coffer/client"
	"github.com/coffer-kms/coffer/internal/audit"
	"github.com/coffer-kms/coffer/internal/datadir"
	"github.com/coffer-kms/coffer/internal/server"
)

func newAuditCmd(g *globals) *cobra.Command {
	a := &cobra.Command{
		Use:   "audit",
		Short: "Read and verify the tamper-evident audit log",
		Long: `Every API request is one audit record: who (actor and roles), from where,
the operation, the objects touched and the result. Records are chained by
SHA-256 and the end of the chain is kept in audit.head, so edited, removed,
reordered and truncated records are detected by "coffer audit verify".
Reading and verifying through the API needs the audit_manager role; offline
verification needs read access to <data-dir>/audit.`,
	}
	var from, before uint64
	var limit int
	var reverse bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List audit records, newest first (--reverse: oldest first from --from)",
		Long: `List audit records of this node, newest first, at most --limit (default
100); the last line says how to get the next page (--before N). With
--reverse, or --from N, records are listed oldest first from sequence number
--from.`,
		Example: `  coffer audit list --limit 20
  coffer audit list --before 5000
  coffer audit list --reverse --from 1000 --format json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			oldest := reverse || from > 0
			if oldest && before > 0 {
				return errors.New("--before pages newest first; with --reverse or --from use --from")
			}
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				var p client.AuditPage
				var err error
				if oldest {
					p, err = c.AuditRecords(ctx, from, limit)
				} else {
					p, err = c.AuditRecordsNewest(ctx, before, limit)
				}
				if err != nil {
					return err
				}
				if g.format == "json" {
					return g.printJSON(cmd, p)
				}
				t := newTable(cmd)
				fmt.Fprintln(t, "SEQ\tTIME\tACTOR\tSOURCE\tOPERATION\tRESULT\tOBJECTS")
				for _, r := range p.Records {
					res := r.Result
					if r.Status != 0 && r.Result != "ok" {
						res = fmt.Sprintf("%s (%d)", r.Result, r.Status)
					}
					fmt.Fprintf(t, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Seq, fmtTime(r.Time), r.Actor, orDash(r.Source), r.Operation, res, orDash(strings.Join(r.Objects, ",")))
				}
				if err := t.Flush(); err != nil {
					return err
				}
				switch {
				case p.NextFrom > 0:
					fmt.Fprintf(cmd.OutOrStdout(), "more: coffer audit list --reverse --from %d\n", p.NextFrom)
				case p.NextBefore > 0:
					fmt.Fprintf(cmd.OutOrStdout(), "more: coffer audit list --before %d\n", p.NextBefore)
				}
				return nil
			})
		},
	}
	list.Flags().BoolVar(&reverse, "reverse", false, "oldest first, from --from")
	list.Flags().Uint64Var(&from, "from", 0, "oldest first from this sequence number (default 1; implies --reverse)")
	list.Flags().Uint64Var(&before, "before", 0, "newest first below this sequence number (the next page)")
	list.Flags().IntVar(&limit, "limit", 0, "at most this many records, 1 to 1000 (default 100)")

	var offline bool
	var dir string
	verify := &cobra.Command{
		Use:   "verify",
		Short: "Verify the audit hash chain (through the server, or --offline on a data dir)",
		Long: `Verify every audit record's place in the hash chain and the end of the
log against audit.head. Through the API this checks the node you talk to
(audit_manager role). With --offline it reads <data-dir>/audit (or
--audit-dir) directly, with no server and no credentials: use it on a stopped
node, on a copy, or on an archived log. --data-dir DIR without a server
running on DIR verifies offline too.

After audit.retention pruned old files, the chain is verified from the
anchor (audit.anchor: the seq and hash of the last pruned record); the
pruned files are on the backup destinations under audit/<node>/.

On damage it names the file, line and sequence number and the kind (edited,
removed, reordered, truncated, head, anchor) and exits with status 1.`,
		Example: `  coffer audit verify
  coffer audit verify --offline --data-dir /var/lib/coffer`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir != "" && !offline {
				return errors.New("--audit-dir goes with --offline")
			}
			if !offline && g.dataDir != "" && !server.Locked(g.dataDir) {
				// No server on this data dir (e.g. it refused to start on a
				// damaged log): verify the files.
				fmt.Fprintf(cmd.ErrOrStderr(), "no server is running on %s: verifying its audit log offline\n", g.dataDir)
				offline = true
			}
			if offline {
				d := dir
				if d == "" {
					dd := g.dataDir
					if dd == "" {
						dd = os.Getenv(envDataDir)
					}
					if dd == "" {
						return errors.New("--offline needs --data-dir DIR (or --audit-dir DIR)")
					}
					d = datadir.AuditDir(dd)
				}
				rep, err := audit.Verify(d)
				if err != nil {
					var te *audit.TamperError
					if errors.As(err, &te) {
						return fmt.Errorf("audit log %s is damaged: %w", d, err)
					}
					return err
				}
				return printAuditReport(g, cmd, client.AuditReport{Files: rep.Files, Records: rep.Records, FirstSeq: rep.FirstSeq,
					LastSeq: rep.LastSeq, LastHash: rep.LastHash, HeadSeq: rep.HeadSeq, PrunedThrough: rep.PrunedThrough}, d)
			}
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				rep, err := c.VerifyAudit(ctx)
				if err != nil {
					if client.IsCode(err, "audit_tampered") {
						return fmt.Errorf("audit log is damaged: %w", err)
					}
					return err
				}
				return printAuditReport(g, cmd, rep, "")
			})
		},
	}
	verify.Flags().BoolVar(&offline, "offline", false, "verify the files directly, without a server")
	verify.Flags().StringVar(&dir, "audit-dir", "", "with --offline: the audit directory (default <data-dir>/audit)")
	a.AddCommand(list, verify, newAuditFetchCmd(g))
	return a
}

func printAuditReport(g *globals, cmd *cobra.Command, rep client.AuditReport, dir string) error {
	if g.format == "json" {
		return g.printJSON(cmd, rep)
	}
	where := ""
	if dir != "" {
		where = " (" + dir + ")"
	}
	fmt.Fprintf(cmd.OutOrStdout(), "audit log OK%s: %d records in %d files, seq %d-%d, last hash %s\n",
		where, rep.Records, rep.Files, rep.FirstSeq, rep.LastSeq, rep.LastHash)
	if rep.PrunedThrough > 0 {
		fmt.Fprintf(cmd.OutOrStdout(), "records 1-%d were pruned after shipping (audit.retention); verified from the anchor in audit.anchor\n", rep.PrunedThrough)
	}
	if rep.HeadSeq != rep.LastSeq {
		fmt.Fprintf(cmd.OutOrStdout(), "note: audit.head is at seq %d (one record behind after a crash is normal)\n", rep.HeadSeq)
	}
	return nil
}
