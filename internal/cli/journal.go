package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/coffer-kms/coffer/client"
	"github.com/coffer-kms/coffer/internal/datadir"
	"github.com/coffer-kms/coffer/internal/journal"
)

func newJournalCmd(g *globals) *cobra.Command {
	j := &cobra.Command{
		Use:   "journal",
		Short: "List, rotate, verify, prune and archive the recovery journal",
		Long: `The recovery journal records every applied command in segments named
<name>-<YYYYMMDDhhmmss>.recovery under <data-dir>/journal. Segments rotate by
size, by age, on SIGUSR2 and with "coffer journal rotate".`,
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List journal segments with their index ranges",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				segs, err := c.JournalSegments(ctx)
				if err != nil {
					return err
				}
				if g.format == "json" {
					return g.printJSON(cmd, segs)
				}
				w := newTable(cmd)
				fmt.Fprintln(w, "SEGMENT\tFIRST\tLAST\tRECORDS\tSIZE\tCREATED\tSTATE")
				for _, s := range segs {
					st := "open"
					if s.Closed {
						st = "closed"
					}
					fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d\t%s\t%s\n", s.Name, s.FirstIndex, s.LastIndex, s.Records, s.Size, s.Created.Format(time.RFC3339), st)
				}
				return w.Flush()
			})
		},
	}
	rotate := &cobra.Command{
		Use:   "rotate",
		Short: "Close the open journal segment and start a new one",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				seg, err := c.RotateJournal(ctx)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "closed %s (indexes %d-%d)\n", seg.Name, seg.FirstIndex, seg.LastIndex)
				return nil
			})
		},
	}
	var dir string
	verify := &cobra.Command{
		Use:   "verify",
		Short: "Verify every journal record offline (framing, checksums, index chain)",
		Long: `Read every segment of a journal directory and check headers, record
framing, CRC-32C checksums and the index chain. Reports the first bad record
by file and byte offset and exits non-zero. A last record cut off at the end
of the journal (a crash mid-write, or a live mirror read while its writer
writes) is the end of what was written, not damage: it is named, the indexes
before it are reported, and the command exits 0, as restore and the next
open take it. Needs no running server and no
keys (payload decryption is checked by "coffer check", with the keystore).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			d := dir
			if d == "" {
				if g.dataDir == "" {
					return fmt.Errorf("give --data-dir DIR or --journal-dir DIR")
				}
				d = datadir.JournalDir(g.dataDir)
			}
			rep, err := journal.Verify(d, nil)
			var ce *journal.CorruptError
			torn := errors.As(err, &ce) && ce.Torn
			if err != nil && !torn {
				return fmt.Errorf("journal %s is damaged: %w", d, err)
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "journal OK: %d segments, %d records, indexes %d-%d\n", rep.Segments, rep.Records, rep.FirstIndex, rep.LastIndex)
			if torn {
				// The end of what was written, as restore, check and the
				// next open take it: not damage.
				fmt.Fprintf(out, "it ends in a torn record (%v): a write cut off by a crash, or one still being written (a live mirror); restore stops before it and the next open removes it\n", err)
			}
			return nil
		},
	}
	verify.Flags().StringVar(&dir, "journal-dir", "", "journal directory (default <data-dir>/journal)")
	var dry bool
	prune := &cobra.Command{
		Use:   "prune",
		Short: "Remove closed journal segments no destination needs any more",
		Long: `Remove this node's oldest closed journal segments that nothing needs any
more, keeping the journal.keep_segments newest closed ones in any case. A
segment stays while an archiving destination (paused or failing too) has not
shipped it, while it holds a record after the newest full backup of any
destination (incrementals carry every record since their full), or while the
journal mirror has not copied it. The server does this every minute by
itself (journal.prune); this runs a round now on the node you reach, and
--dry-run shows the floor, what holds it, and what would go.`,
		Example: `  coffer journal prune --dry-run
  coffer journal prune`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				p, err := c.PruneJournal(ctx, dry)
				if err != nil {
					return err
				}
				if g.format == "json" {
					return g.printJSON(cmd, p)
				}
				out := cmd.OutOrStdout()
				if p.Floor == 0 {
					fmt.Fprintf(out, "floor: none (held by %s)\n", p.Holder)
				} else {
					fmt.Fprintf(out, "floor: index %d (held by %s)\n", p.Floor, p.Holder)
				}
				verb := "removed"
				if p.DryRun {
					verb = "would remove"
				}
				var bytes int64
				for _, s := range p.Removed {
					bytes += s.Size
					fmt.Fprintf(out, "%s %s (indexes %d-%d, %d bytes)\n", verb, s.Name, s.FirstIndex, s.LastIndex, s.Size)
				}
				fmt.Fprintf(out, "%s %d segments (%d bytes); %d segments stay (at least %d closed ones are always kept)\n", verb, len(p.Removed), bytes, p.Kept, p.KeepSegments)
				return nil
			})
		},
	}
	prune.Flags().BoolVar(&dry, "dry-run", false, "only show what would be removed")
	j.AddCommand(list, rotate, verify, prune, newArchiveCmd(g))
	return j
}

// archiveStatus is one archiving destination in "journal archive status".
type archiveStatus struct {
	Destination  string `json:"destination"`
	ArchivedTo   uint64 `json:"archived_to"`
	Pending      int    `json:"pending_segments"`
	Paused       bool   `json:"paused"`
	ArchiveError string `json:"archive_error,omitempty"`
}

func newArchiveCmd(g *globals) *cobra.Command {
	a := &cobra.Command{
		Use:   "archive",
		Short: "Show, pause and resume archiving of journal segments to backup destinations",
		Long: `Backup destinations added with --archiving receive every closed journal
segment, so that a restore can replay past the last backup (point in time).
Segments not shipped yet stay on the node and count as pending; a failing
destination is retried, and its last error shows here. Pause archiving to a
destination during its maintenance; resuming ships what piled up.`,
		Example: `  coffer journal archive status
  coffer journal archive pause --destination nas
  coffer journal archive resume --destination nas`,
	}
	status := &cobra.Command{
		Use:   "status",
		Short: "Show how far each archiving destination got",
		Long: `For every destination with archiving on: the last journal index archived
there, the closed segments still pending on this node, whether archiving is
paused, and the last archive error. The leader archives: it counts the
pending segments within a second of its start or election (or once a
backup running then ends: 0 until counted); a follower shows 0.`,
		Example: "  coffer journal archive status --format json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				ds, err := c.ListDestinations(ctx)
				if err != nil {
					return err
				}
				out := []archiveStatus{}
				for _, d := range ds {
					if d.Archiving {
						out = append(out, archiveStatus{Destination: d.Name, ArchivedTo: d.ArchivedTo, Pending: d.Pending, Paused: d.ArchivePaused, ArchiveError: d.ArchiveError})
					}
				}
				if len(out) == 0 && g.format != "json" {
					fmt.Fprintln(cmd.OutOrStdout(), "no destination archives the journal (coffer backup destination edit NAME --archiving)")
					return nil
				}
				return printList(g, cmd, out, "DESTINATION\tARCHIVED TO\tPENDING\tSTATE\tLAST ERROR", func(s archiveStatus) string {
					st := "on"
					if s.Paused {
						st = "paused"
					}
					return fmt.Sprintf("%s\t%d\t%d\t%s\t%s", s.Destination, s.ArchivedTo, s.Pending, st, orDash(s.ArchiveError))
				})
			})
		},
	}
	now := &cobra.Command{
		Use:   "now",
		Short: "Close the current segment and ship every closed segment now",
		Long: `Archiving ships closed segments at every backup check (backup.check_interval)
and closes the open segment after backup.archive_timeout. "now" does both at
once, e.g. right before a planned maintenance or a restore test, so that the
archive reaches the latest write.

Progress goes to standard error as each destination starts and each
segment is shipped: a bar on a terminal, a line per segment otherwise, JSON
lines ({"progress":{"destination":...,"segment":...,"done":N,"total":M}})
with --format json. Without --timeout the command waits up to 24h.
Destinations whose archiving is paused (coffer journal archive pause) get
nothing: a note on standard error names them (and "note" in the JSON
answer); the exit status stays 0. A held destination fails the command.
While writes are frozen (coffer freeze) nothing is shipped: the command
fails (the server answers 503: shipping records its progress as a write);
run it again after coffer thaw.`,
		Example: `  coffer journal archive now
  coffer journal archive now --format json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			waitLong(cmd, g) // every pending segment is shipped
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				show := newArchiveProgress(cmd, g.format == "json")
				note, err := c.ArchiveJournalNote(ctx, show.step)
				show.finish()
				if err != nil {
					return err
				}
				if note != "" {
					// Paused on purpose: a note, not a failure.
					fmt.Fprintln(cmd.ErrOrStderr(), "note: "+note)
					return g.printResult(cmd, map[string]any{"archived": true, "note": note}, "journal archived")
				}
				return g.printResult(cmd, map[string]bool{"archived": true}, "journal archived")
			})
		},
	}
	a.AddCommand(status, now, newArchivePauseCmd(g, true), newArchivePauseCmd(g, false))
	return a
}

func newArchivePauseCmd(g *globals, pause bool) *cobra.Command {
	var dest string
	name, short, long := "resume", "Resume archiving to a destination", "Resume shipping closed journal segments to the destination; those that piled up go first."
	if pause {
		name, short, long = "pause", "Pause archiving to a destination", `Stop shipping closed journal segments to the destination, e.g. during its
maintenance. They pile up on the node (see "coffer journal archive status")
until archiving resumes; backups to the destination still run.`
	}
	cmd := &cobra.Command{
		Use:     name + " --destination D",
		Short:   short,
		Long:    long,
		Example: fmt.Sprintf("  coffer journal archive %s --destination nas", name),
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireFlag(dest, "--destination D"); err != nil {
				return err
			}
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				var (
					d   client.Destination
					err error
				)
				if pause {
					d, err = c.PauseArchive(ctx, dest)
				} else {
					d, err = c.ResumeArchive(ctx, dest)
				}
				if err != nil {
					return err
				}
				return g.printResult(cmd, d, "archiving to %s %sd (archived to index %d)\n", d.Name, name, d.ArchivedTo)
			})
		},
	}
	cmd.Flags().StringVarP(&dest, "destination", "d", "", "the archiving destination")
	return cmd
}
