package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/coffer-kms/coffer/client"
)

func newBackupCmd(g *globals) *cobra.Command {
	b := &cobra.Command{
		Use:   "backup",
		Short: "Back up the cluster: recovery passphrase, destinations, runs and schedules",
		Long: `A backup is one encrypted file holding the state of the cluster, the
master keys and the CA: a full backup has everything, an incremental one what
changed since the last full (cumulative). Backups go to destinations:

  LOCAL  built in: <data-dir>/backup/local, keeps the last full and its
         incrementals
  dir    a directory on the server host (e.g. an NFS mount)
  sftp   a directory on an SFTP server (password or a generated key)
  s3     a bucket on an S3-compatible object store

Backups are encrypted to the recovery passphrase (set at "coffer init", or
with "coffer backup recovery-passphrase set"), or to age recipients given per
destination. Keep the recovery passphrase apart from the keystore
passphrase: a backup needs the recovery passphrase that was valid when it
was taken. A destination with --archiving also receives every closed journal
segment (see "coffer journal archive"); one dir destination with --mirror
also receives every journal record as it is written (see "coffer backup
destination add --help").

Take backups with "coffer backup run", or let schedules take them; a key
change (master key rotation, recovery passphrase change) triggers a full
backup to every destination with an active schedule. System administrators
only.`,
		Example: `  coffer backup destination add nas --type dir --path /mnt/nas/coffer --keep-fulls 4
  coffer backup run --destination nas --full
  coffer backup schedule add nightly --destination nas --cron '0 2 * * *'
  coffer backup list`,
	}
	b.AddCommand(newRecoveryCmd(g), newDestinationCmd(g), newCatalogCmd(g), newBackupRunCmd(g), newBackupListCmd(g), newScheduleCmd(g), newBackupVerifyCmd(g), newBackupDrillCmd(g),
		newResumeAfterRestoreCmd(g))
	return b
}

func newResumeAfterRestoreCmd(g *globals) *cobra.Command {
	var takeOver bool
	cmd := &cobra.Command{
		Use:   "resume-after-restore [--take-over]",
		Short: "End the hold on a restored node's backups, as a copy or (--take-over) as the real recovery",
		Long: `A server started on a restored data dir writes to no backup destination
but LOCAL: its backups, schedules, journal archiving and journal mirror are
held ("coffer status" warns), because a restore may be a rehearsal while the
server it copies still writes to the same destinations. Say which it is:

  (no flag)    a rehearsal or a copy that lives on: the hold ends; its
               backups go to destinations no other timeline writes to (give
               it its own), and a destination another timeline writes to
               keeps refusing it with an error naming both timelines
  --take-over  the real recovery: the restored timeline claims every
               destination and a full backup to each starts now (older
               archives cannot continue the new timeline); the old
               timeline, should it still run somewhere, is refused from
               then on

"coffer restore --take-over" does the same at restore time. System
administrators only.`,
		Example: `  coffer backup resume-after-restore --take-over    # this node replaces the lost one
  coffer backup resume-after-restore                # a rehearsal that keeps running, with its own destinations`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				tl, err := c.ResumeAfterRestore(ctx, takeOver)
				if err != nil {
					return err
				}
				if g.format == "json" {
					return g.printJSON(cmd, tl)
				}
				w := cmd.OutOrStdout()
				if takeOver {
					fmt.Fprintf(w, "timeline %d takes over every destination: a full backup to each is starting (coffer backup list)\n", tl.ID)
				} else {
					fmt.Fprintf(w, "backups of timeline %d resumed; destinations another timeline writes to refuse it (coffer backup list shows why)\n", tl.ID)
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&takeOver, "take-over", false, "this restore is the real recovery: claim every destination and take a full backup to each now")
	return cmd
}

// Recovery passphrase lengths the server takes.
const minRecoveryLen, maxRecoveryLen = 8, 200

func checkRecoveryLength(p []byte) error {
	if len(p) < minRecoveryLen || len(p) > maxRecoveryLen {
		return fmt.Errorf("the recovery passphrase must be %d to %d bytes", minRecoveryLen, maxRecoveryLen)
	}
	return nil
}

// readRecoveryPassphrase reads a new recovery passphrase from file ("-" =
// stdin) or asks twice on the terminal; flag names the option in errors.
func readRecoveryPassphrase(cmd *cobra.Command, file, flag string) ([]byte, error) {
	p, err := readSecret(cmd, file, "New recovery passphrase", true, "recovery passphrase", flag)
	if err != nil {
		return nil, err
	}
	if err := checkRecoveryLength(p); err != nil {
		clear(p)
		return nil, err
	}
	return p, nil
}

func recoveryLine(st client.RecoveryStatus) string {
	if !st.Set {
		return "not set: backups encrypted to the recovery passphrase are refused until one is set (coffer backup recovery-passphrase set)"
	}
	return fmt.Sprintf("set (generation %d, label %s)", st.Generation, st.Label)
}

func newRecoveryCmd(g *globals) *cobra.Command {
	r := &cobra.Command{
		Use:   "recovery-passphrase",
		Short: "Set, change or check the recovery passphrase that encrypts backups",
		Long: `The recovery passphrase encrypts backups (age scrypt) for destinations
without age recipients. It is kept in the replicated state, sealed by the
keystore, so that every node can take scheduled backups; it is never shown.
Each change starts a new generation: a backup names the generation it was
encrypted with (recovery-N) and needs that passphrase to be restored, so keep
the old passphrases as long as backups taken with them are kept. Changing it
triggers a full backup to every destination with an active schedule.`,
		Example: `  coffer backup recovery-passphrase status
  coffer backup recovery-passphrase set --passphrase-file new.txt --old-passphrase-file old.txt`,
	}
	var newFile, oldFile string
	set := &cobra.Command{
		Use:   "set",
		Short: "Set the recovery passphrase, or change it (the current one is needed)",
		Long: `Set the recovery passphrase (8 to 200 bytes) from --passphrase-file
(- for stdin), or asked twice on the terminal. When one is set already, the
current one is needed too: --old-passphrase-file, or asked on the terminal.`,
		Example: `  coffer backup recovery-passphrase set
  coffer backup recovery-passphrase set --passphrase-file new.txt --old-passphrase-file old.txt`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := oneStdin(newFile, "--passphrase-file", oldFile, "--old-passphrase-file"); err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			var old []byte
			if oldFile != "" {
				if old, err = readSecret(cmd, oldFile, "", false, "old recovery passphrase", "--old-passphrase-file"); err != nil {
					return err
				}
			} else {
				ctx, cancel := g.ctx()
				st, err := c.RecoveryStatus(ctx)
				cancel()
				if err != nil {
					return err
				}
				if st.Set {
					if old, err = readSecret(cmd, "", "Current recovery passphrase", false, "current recovery passphrase", "--old-passphrase-file"); err != nil {
						return err
					}
				}
			}
			nw, err := readRecoveryPassphrase(cmd, newFile, "--passphrase-file")
			if err != nil {
				clear(old)
				return err
			}
			return useSecrets(func() error {
				ctx, cancel := g.ctx()
				defer cancel()
				st, err := c.SetRecoveryPassphrase(ctx, string(old), string(nw))
				if err != nil {
					return err
				}
				if g.format == "json" {
					return g.printJSON(cmd, st)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "recovery passphrase set: generation %d (%s)\n", st.Generation, st.Label)
				if st.Generation > 1 {
					fmt.Fprintln(cmd.OutOrStdout(), "Backups taken before need the previous passphrase: keep it as long as they are kept.")
				}
				return nil
			}, old, nw)
		},
	}
	set.Flags().StringVar(&newFile, "passphrase-file", "", "read the new recovery passphrase from this file (- for stdin)")
	set.Flags().StringVar(&oldFile, "old-passphrase-file", "", "read the current recovery passphrase from this file (- for stdin)")
	status := &cobra.Command{
		Use:     "status",
		Short:   "Show whether a recovery passphrase is set, and its generation",
		Long:    "Show whether a recovery passphrase is set and its generation (never the passphrase).",
		Example: "  coffer backup recovery-passphrase status --format json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				st, err := c.RecoveryStatus(ctx)
				if err != nil {
					return err
				}
				return g.printResult(cmd, st, "Recovery passphrase: %s\n", recoveryLine(st))
			})
		},
	}
	r.AddCommand(set, status)
	return r
}

func newCatalogCmd(g *globals) *cobra.Command {
	cat := &cobra.Command{
		Use:   "catalog",
		Short: "Maintain a destination's catalog of backups",
		Long: `Every destination keeps a catalog (catalog.json) of the backups on it,
claimed by this cluster. It is rewritten after every backup; rebuild it when
it was lost or damaged, or after backup files were copied there by hand.`,
		Example: "  coffer backup catalog rebuild --destination nas",
	}
	var dest string
	rebuild := &cobra.Command{
		Use:   "rebuild --destination D",
		Short: "Rewrite a destination's catalog from its backup files' manifests",
		Long: `Read the manifest of every backup file on the destination and write the
catalog anew. Files that are not this cluster's backups, or cannot be read,
are skipped and listed. A running backup is waited for; without --timeout
the command waits up to 24h.`,
		Example: "  coffer backup catalog rebuild --destination nas",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireFlag(dest, "--destination D"); err != nil {
				return err
			}
			waitLong(cmd, g) // every manifest is read, after a running backup ends
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				r, err := c.RebuildCatalog(ctx, dest)
				if err != nil {
					return err
				}
				if g.format == "json" {
					return g.printJSON(cmd, r)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "catalog of %s rebuilt: %d backups\n", dest, r.Backups)
				for _, s := range r.Skipped {
					fmt.Fprintf(cmd.OutOrStdout(), "skipped: %s\n", s)
				}
				return nil
			})
		},
	}
	rebuild.Flags().StringVarP(&dest, "destination", "d", "", "the destination")
	cat.AddCommand(rebuild)
	return cat
}

type backupRunOptions struct {
	destination       string
	full, incremental bool
	wait              bool
}

// mode is the backup mode the flags ask for.
func (o *backupRunOptions) mode() (string, error) {
	switch {
	case o.destination == "":
		return "", errors.New("--destination D is required (LOCAL is the built-in one under the data dir)")
	case o.full && o.incremental:
		return "", errors.New("give --full or --incremental, not both (neither: a full when the last one is 7 days old, else an incremental)")
	case o.full:
		return client.BackupModeFull, nil
	case o.incremental:
		return client.BackupModeIncremental, nil
	}
	return client.BackupModeAuto, nil
}

// pollInterval is how often "backup run" asks for the running backup.
const pollInterval = 200 * time.Millisecond

func newBackupRunCmd(g *globals) *cobra.Command {
	o := &backupRunOptions{}
	cmd := &cobra.Command{
		Use:   "run --destination D [--full|--incremental] [--wait]",
		Short: "Take a backup now and follow it to the end",
		Long: `Take a backup to destination D now: --full, --incremental (on the last
full: everything since then), or neither for automatic (a full when the last
full is 7 days old or missing, else an incremental). One backup runs at a
time; another one is refused while it runs.

The command starts the backup, shows the bytes written (a progress bar on a
terminal, a line now and then otherwise), then prints the backup's record:
status, size, journal index range and file. It exits non-zero when the
backup FAILED, with the reason. Interrupting the command does not stop the
backup: follow it with "coffer backup list".

With --wait the server answers only when the backup is done (no progress),
for scripts; --timeout then bounds the wait (default for this command: 24h).`,
		Example: `  coffer backup run --destination LOCAL
  coffer backup run --destination nas --full
  coffer backup run --destination offsite --incremental --wait --format json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			mode, err := o.mode()
			if err != nil {
				return err
			}
			if o.wait {
				waitLong(cmd, g)
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx()
			rec, err := c.RunBackup(ctx, o.destination, mode, o.wait)
			cancel()
			if err != nil {
				return err
			}
			if !o.wait {
				if g.format != "json" {
					fmt.Fprintf(cmd.OutOrStdout(), "backup %s started: %s to %s\n", rec.ID, rec.Kind, rec.Destination)
				}
				if rec, err = followBackup(cmd, g, c, rec); err != nil {
					return err
				}
			}
			if g.format == "json" {
				if err := g.printJSON(cmd, rec); err != nil {
					return err
				}
			} else {
				printBackup(cmd, rec)
			}
			if rec.Status == client.BackupFailed {
				return fmt.Errorf("backup %s FAILED: %s", rec.ID, rec.Reason)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.destination, "destination", "d", "", "destination to back up to")
	f.BoolVar(&o.full, "full", false, "take a full backup")
	f.BoolVar(&o.incremental, "incremental", false, "take an incremental backup on the last full")
	f.BoolVar(&o.wait, "wait", false, "let the server answer when the backup is done (no progress)")
	return cmd
}

// progress shows the bytes a backup wrote: a progress bar on a terminal,
// else a line when the count moved and a second passed (or every 10 s).
type progress struct {
	bar     *progressbar.ProgressBar
	w       io.Writer
	id      string
	last    int64
	lastOut time.Time
}

func newProgress(w io.Writer, id string) *progress {
	p := &progress{w: w, id: id, last: -1, lastOut: time.Now()}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.bar = progressbar.NewOptions64(-1,
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetDescription("backup "+id),
			progressbar.OptionShowBytes(true),
			progressbar.OptionShowCount(),
			progressbar.OptionShowTotalBytes(true),
			progressbar.OptionSetElapsedTime(true),
			progressbar.OptionClearOnFinish(),
			progressbar.OptionSpinnerType(14),
			progressbar.OptionThrottle(65*time.Millisecond),
			progressbar.OptionFullWidth(),
			progressbar.OptionSetRenderBlankState(true),
		)
	}
	return p
}

func (p *progress) update(written int64) {
	if p.bar != nil {
		p.bar.Set64(written)
		return
	}
	since := time.Since(p.lastOut)
	if (written != p.last && since >= time.Second) || since >= 10*time.Second {
		fmt.Fprintf(p.w, "backup %s: %s written\n", p.id, humanBytes(written))
		p.lastOut = time.Now()
	}
	p.last = written
}

func (p *progress) finish() {
	if p.bar != nil {
		p.bar.Finish()
	}
}

// followBackup polls the running backup until rec is no longer running,
// then returns its final record. An interrupt stops following, not the
// backup.
func followBackup(cmd *cobra.Command, g *globals, c *client.Client, rec client.BackupRecord) (client.BackupRecord, error) {
	sig, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	goneOn := func() error {
		return fmt.Errorf("stopped following backup %s: it goes on on the server; see \"coffer backup list --destination %s\"", rec.ID, rec.Destination)
	}
	bar := newProgress(cmd.ErrOrStderr(), rec.ID)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	var failing time.Time
	for {
		ctx, cancel := context.WithTimeout(sig, g.timeout)
		cur, err := c.CurrentBackup(ctx)
		cancel()
		switch {
		case sig.Err() != nil:
			bar.finish()
			return rec, goneOn()
		case err != nil:
			// A node restarting or a leader change: keep asking for a while.
			if failing.IsZero() {
				failing = time.Now()
			} else if time.Since(failing) > 30*time.Second {
				bar.finish()
				return rec, fmt.Errorf("following backup %s: %w", rec.ID, err)
			}
		case cur == nil || cur.ID != rec.ID:
			bar.finish()
			return finalRecord(sig, g, c, rec)
		default:
			failing = time.Time{}
			bar.update(cur.BytesWritten)
		}
		select {
		case <-sig.Done():
			bar.finish()
			return rec, goneOn()
		case <-tick.C:
		}
	}
}

// finalRecord reads a finished backup's record from the backup list (it
// may take a moment to leave RUNNING on a node that did not run it).
func finalRecord(sig context.Context, g *globals, c *client.Client, rec client.BackupRecord) (client.BackupRecord, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(sig, g.timeout)
		list, err := c.ListBackups(ctx, rec.Destination)
		cancel()
		if err != nil {
			return rec, fmt.Errorf("backup %s ended, but its record could not be read: %w", rec.ID, err)
		}
		found := false
		for _, r := range list {
			if r.ID == rec.ID {
				rec, found = r, true
				break
			}
		}
		if !found {
			return rec, fmt.Errorf("backup %s ended, but it has no record on this server", rec.ID)
		}
		if rec.Status != client.BackupRunning || time.Now().After(deadline) {
			return rec, nil
		}
		select {
		case <-sig.Done():
			return rec, nil
		case <-time.After(pollInterval):
		}
	}
}

// printBackup writes a backup record as a two-column table.
func printBackup(cmd *cobra.Command, r client.BackupRecord) {
	t := newTable(cmd)
	fmt.Fprintf(t, "Backup:\t%s\n", r.ID)
	fmt.Fprintf(t, "Status:\t%s\n", r.Status)
	if r.Status == client.BackupFailed {
		fmt.Fprintf(t, "Reason:\t%s\n", r.Reason)
	}
	fmt.Fprintf(t, "Kind:\t%s\n", r.Kind)
	if r.BaseFullID != "" {
		fmt.Fprintf(t, "Base full:\t%s\n", r.BaseFullID)
	}
	fmt.Fprintf(t, "Destination:\t%s\n", r.Destination)
	if r.Size > 0 {
		fmt.Fprintf(t, "Size:\t%s (%d bytes)\n", humanBytes(r.Size), r.Size)
	}
	fmt.Fprintf(t, "Indexes:\t%s\n", indexRange(r))
	fmt.Fprintf(t, "File:\t%s\n", orDash(r.File))
	if r.SHA256 != "" {
		fmt.Fprintf(t, "SHA-256:\t%s\n", r.SHA256)
	}
	if len(r.Recipients) > 0 {
		fmt.Fprintf(t, "Encrypted to:\t%s\n", strings.Join(r.Recipients, ", "))
	}
	fmt.Fprintf(t, "Node:\t%s\n", orDash(r.Node))
	fmt.Fprintf(t, "Started:\t%s\n", fmtTime(r.Started))
	if r.Finished != nil {
		fmt.Fprintf(t, "Finished:\t%s (took %s)\n", fmtTime(*r.Finished), r.Finished.Sub(r.Started).Round(time.Millisecond))
	}
	if r.Status != client.BackupFailed && r.Reason != "" {
		fmt.Fprintf(t, "Started by:\t%s\n", r.Reason)
	}
	t.Flush()
}

func indexRange(r client.BackupRecord) string {
	if r.FirstIndex == 0 && r.LastIndex == 0 {
		return "-"
	}
	return fmt.Sprintf("%d-%d", r.FirstIndex, r.LastIndex)
}

// humanBytes is n in B, KiB, MiB, GiB or TiB.
func humanBytes(n int64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	v, unit := float64(n)/1024, "KiB"
	for _, u := range []string{"MiB", "GiB", "TiB"} {
		if v < 1024 {
			break
		}
		v, unit = v/1024, u
	}
	return fmt.Sprintf("%.1f %s", v, unit)
}

// shorten cuts s to n runes, marking the cut.
func shorten(s string, n int) string {
	r := []rune(strings.Join(strings.Fields(s), " "))
	if len(r) <= n {
		return string(r)
	}
	return string(r[:n-1]) + "…"
}

// printRestoreEstimates prints, under a backup listing, how long restoring
// each destination's newest chain takes at the speed its last successful
// restore drill measured (destinations without one are left out).
func printRestoreEstimates(ctx context.Context, cmd *cobra.Command, c *client.Client, only string) error {
	ds, err := c.ListDestinations(ctx)
	if err != nil {
		return nil // the listing itself was printed; the estimates are extra
	}
	for _, d := range ds {
		if (only != "" && d.Name != only) || d.Drills == nil || d.Drills.LastGood == nil || d.Drills.EstimatedRestore <= 0 {
			continue
		}
		fmt.Fprintf(cmd.OutOrStdout(), "Estimated restore of the newest chain on %s (%s): %s at %s/s, measured by the drill of %s\n", d.Name,
			humanBytes(d.Drills.ChainSize), estimatedRestore(d.Drills), humanBytes(int64(d.Drills.LastGood.BytesPerSecond)), fmtTime(d.Drills.LastGood.Time))
	}
	return nil
}

func newBackupListCmd(g *globals) *cobra.Command {
	var dest string
	cmd := &cobra.Command{
		Use:   "list [--destination D]",
		Short: "List backups, newest first",
		Long: `List the cluster's backup records, newest first: when each started, its
kind (full or incremental; a backup that failed before its kind was chosen
shows the mode asked for), status, size, the journal index range it covers,
its destination and id. Archived journal segments are not listed here (see
"coffer journal archive status"). Statuses:
  RUNNING   being written now
  DONE      completed
  FAILED    did not complete (the reason says why)
  DELETED   retention removed the backup's file (--keep-fulls, --keep-days)
VERIFIED is the result and time of the backup's last verification (coffer
backup verify; "-": never verified). The table shortens why a backup FAILED;
--format json has the whole reason and the verification's.
Under the table, each destination with a successful restore drill shows the
estimated restore time of its newest chain at the speed that drill measured
(coffer backup drill).`,
		Example: `  coffer backup list
  coffer backup list --destination nas --format json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				bs, err := c.ListBackups(ctx, dest)
				if err != nil {
					return err
				}
				if err := printList(g, cmd, bs, "STARTED\tTIMELINE\tKIND\tSTATUS\tSIZE\tINDEXES\tDESTINATION\tID\tVERIFIED\tREASON", func(b client.BackupRecord) string {
					size, reason, verified := "-", "", "-"
					if b.Size > 0 {
						size = humanBytes(b.Size)
					}
					if b.Status == client.BackupFailed {
						reason = shorten(b.Reason, 50)
					}
					if v := b.Verified; v != nil {
						verified = v.Result + " " + fmtTime(v.Time)
					}
					return fmt.Sprintf("%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s", fmtTime(b.Started), max(b.Timeline, 1), b.Kind, b.Status, size, indexRange(b), b.Destination, b.ID, verified, reason)
				}); err != nil || g.format == "json" {
					return err
				}
				return printRestoreEstimates(ctx, cmd, c, dest)
			})
		},
	}
	cmd.Flags().StringVarP(&dest, "destination", "d", "", "only backups of this destination")
	return cmd
}

func newBackupVerifyCmd(g *globals) *cobra.Command {
	var destination string
	var all bool
	cmd := &cobra.Command{
		Use:   "verify ID|--all --destination D",
		Short: "Prove backups restorable: decrypt, check, replay, integrity check",
		Long: `For each backup: decrypt it (an incremental with its full), check every
checksum and authentication tag and the index chain, replay it into a
temporary directory on the server, run the integrity check (bbolt
consistency, every data key and secret decrypts), and compare the object
count and state digest with those recorded when it was taken. An archived
segment is decrypted and its journal checked, and it must continue an
earlier backup without a gap. The result, OK or FAILED with the reason, is
recorded in the destination's catalog (see coffer restore --list) and
printed. Exit status 1 if any backup FAILED. Progress goes to standard
error as each backup starts and ends: a bar on a terminal, a line per
backup otherwise, JSON lines ({"progress":{...}}) with --format json.

A schedule runs it after each backup with --verify (coffer backup schedule
add/edit). The server uses its current recovery passphrase: backups
encrypted with an older one are reported SKIPPED (they do not count as
failed); verify those offline with coffer restore into a scratch directory.
A backup that retention removes while it is verified (a newer full
finished meanwhile) is reported PRUNED, not FAILED, and nothing is
recorded for it.`,
		Example: `  coffer backup verify 20261121T020000Z-1a2b3c4d --destination nas
  coffer backup verify --all --destination nas --format json`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireFlag(destination, "--destination D"); err != nil {
				return err
			}
			id := ""
			if len(args) == 1 {
				id = args[0]
			}
			if all == (id != "") {
				return errors.New("give a backup ID or --all")
			}
			waitLong(cmd, g) // a verification takes as long as its backups
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				show := newVerifyProgress(cmd, g.format == "json")
				res, err := c.VerifyBackupsProgress(ctx, destination, id, all, show.step)
				show.finish()
				if err != nil {
					return err
				}
				failed, skipped, pruned := 0, 0, 0
				for _, r := range res {
					switch r.Result {
					case "OK":
					case "SKIPPED":
						skipped++ // not damaged: taken under an earlier recovery passphrase
					case "PRUNED":
						pruned++ // retention removed it meanwhile: nothing left to verify
					default:
						failed++
					}
				}
				if err := printList(g, cmd, res, "KIND\tID\tFILE\tRESULT\tREASON", func(r client.VerifyResult) string {
					return fmt.Sprintf("%s\t%s\t%s\t%s\t%s", r.Kind, r.ID, r.File, r.Result, orDash(r.Reason))
				}); err != nil {
					return err
				}
				if skipped > 0 {
					fmt.Fprintf(cmd.ErrOrStderr(), "%d of %d backups SKIPPED: taken under an earlier recovery passphrase, which the server no longer holds; verify them offline (coffer restore with that passphrase into a scratch dir)\n", skipped, len(res))
				}
				if pruned > 0 {
					fmt.Fprintf(cmd.ErrOrStderr(), "%d of %d backups PRUNED: retention removed them from the destination while they were verified; they are no longer part of any restore\n", pruned, len(res))
				}
				if failed > 0 {
					return fmt.Errorf("%d of %d backups FAILED verification", failed, len(res))
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVarP(&destination, "destination", "d", "", "the destination holding the backups")
	cmd.Flags().BoolVar(&all, "all", false, "verify every backup and archived segment on the destination")
	return cmd
}

// verifyProgress shows a verification as it goes, on standard error: a
// progress bar on a terminal, a line per backup otherwise, and with
// --format json one JSON object a line ({"progress":{...}}).
type verifyProgress struct {
	w    io.Writer
	json bool
	bar  *progressbar.ProgressBar
}

func newVerifyProgress(cmd *cobra.Command, asJSON bool) *verifyProgress {
	p := &verifyProgress{w: cmd.ErrOrStderr(), json: asJSON}
	if f, ok := p.w.(*os.File); ok && !asJSON && term.IsTerminal(int(f.Fd())) {
		p.bar = progressbar.NewOptions(-1, progressbar.OptionSetWriter(p.w), progressbar.OptionShowCount(),
			progressbar.OptionSetElapsedTime(true), progressbar.OptionClearOnFinish(), progressbar.OptionFullWidth(),
			progressbar.OptionThrottle(65*time.Millisecond), progressbar.OptionSetRenderBlankState(true))
	}
	return p
}

func (p *verifyProgress) step(s client.VerifyProgress) {
	switch {
	case p.json:
		b, _ := json.Marshal(map[string]client.VerifyProgress{"progress": s})
		fmt.Fprintf(p.w, "%s\n", b)
	case p.bar != nil:
		p.bar.ChangeMax(s.Total)
		p.bar.Describe("verify " + path.Base(s.File))
		p.bar.Set(s.Done)
	case s.Result == "":
		fmt.Fprintf(p.w, "verifying %s (%d of %d)\n", s.File, s.Done+1, s.Total)
	}
}

func (p *verifyProgress) finish() {
	if p.bar != nil {
		p.bar.Finish()
	}
}

// archiveProgress shows "journal archive now" as it goes, on standard
// error: a progress bar on a terminal, a line per shipped segment
// otherwise, and with --format json one JSON object a line
// ({"progress":{...}}).
type archiveProgress struct {
	w    io.Writer
	json bool
	bar  *progressbar.ProgressBar
}

func newArchiveProgress(cmd *cobra.Command, asJSON bool) *archiveProgress {
	p := &archiveProgress{w: cmd.ErrOrStderr(), json: asJSON}
	if f, ok := p.w.(*os.File); ok && !asJSON && term.IsTerminal(int(f.Fd())) {
		p.bar = progressbar.NewOptions(-1, progressbar.OptionSetWriter(p.w), progressbar.OptionShowCount(),
			progressbar.OptionSetElapsedTime(true), progressbar.OptionClearOnFinish(), progressbar.OptionFullWidth(),
			progressbar.OptionThrottle(65*time.Millisecond), progressbar.OptionSetRenderBlankState(true))
	}
	return p
}

func (p *archiveProgress) step(s client.ArchiveProgress) {
	switch {
	case p.json:
		b, _ := json.Marshal(map[string]client.ArchiveProgress{"progress": s})
		fmt.Fprintf(p.w, "%s\n", b)
	case p.bar != nil:
		p.bar.ChangeMax(s.Total)
		p.bar.Describe("archive to " + s.Destination)
		p.bar.Set(s.Done)
	case s.Segment == "":
		fmt.Fprintf(p.w, "archiving %d segments to %s\n", s.Total, s.Destination)
	default:
		fmt.Fprintf(p.w, "archived %s to %s (%d of %d)\n", s.Segment, s.Destination, s.Done, s.Total)
	}
}

func (p *archiveProgress) finish() {
	if p.bar != nil {
		p.bar.Finish()
	}
}
