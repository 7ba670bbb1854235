package cli

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/coffer-kms/coffer/client"
	"github.com/coffer-kms/coffer/internal/backup"
	"github.com/coffer-kms/coffer/internal/backup/bundle"
	"github.com/coffer-kms/coffer/internal/backup/dest"
	"github.com/coffer-kms/coffer/internal/config"
	"github.com/coffer-kms/coffer/internal/fsutil"
	"github.com/coffer-kms/coffer/internal/keystore"
	"github.com/coffer-kms/coffer/internal/restore"
	"github.com/coffer-kms/coffer/internal/server"
)

// envRecoveryPassphrase gives the recovery passphrase to scripts (one; use
// --recovery-passphrase-file for more).
const envRecoveryPassphrase = "COFFER_RECOVERY_PASSPHRASE"

// fromOptions say where backups are read from without a server: a
// directory, sftp://user@host[:port]/path or s3://host:port/bucket[/prefix].
type fromOptions struct {
	from                      string
	sftpPasswordFile, sftpKey string
	sftpHostKey               string
	s3AccessKey, s3SecretFile string
	s3Region, s3CACert        string
	s3Insecure                bool
	recoveryFiles, identities []string
}

func (o *fromOptions) addFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&o.from, "from", "", "where the backups are: a directory, sftp://user@host[:port]/path or s3://host:port/bucket[/prefix]")
	f.StringVar(&o.sftpPasswordFile, "sftp-password-file", "", "sftp: read the password from this file")
	f.StringVar(&o.sftpKey, "sftp-key-file", "", "sftp: private key file (unencrypted OpenSSH or PEM)")
	f.StringVar(&o.sftpHostKey, "sftp-host-key", "", `sftp: the server's host key as an authorized_keys line ("ssh-ed25519 AAAA..."); without it the key shown is trusted`)
	f.StringVar(&o.s3AccessKey, "s3-access-key", "", "s3: access key")
	f.StringVar(&o.s3SecretFile, "s3-secret-key-file", "", "s3: read the secret key from this file")
	f.StringVar(&o.s3Region, "s3-region", "", "s3: region (default us-east-1)")
	f.StringVar(&o.s3CACert, "s3-ca-cert", "", "s3: extra CA certificate (PEM) to trust")
	f.BoolVar(&o.s3Insecure, "s3-insecure", false, "s3: plain HTTP (tests only)")
	f.StringArrayVar(&o.recoveryFiles, "recovery-passphrase-file", nil, "read a recovery passphrase from this file (- for stdin); repeat for a chain that spans a passphrase change")
	f.StringArrayVar(&o.identities, "identity", nil, "age identity file (AGE-SECRET-KEY-1...) for backups encrypted to age recipients; repeatable")
}

// open opens the backup location for reading.
func (o *fromOptions) open(ctx context.Context, cmd *cobra.Command) (dest.Destination, error) {
	if o.from == "" {
		return nil, errors.New("--from is required: a directory, sftp://user@host/path or s3://host:port/bucket")
	}
	switch {
	case strings.HasPrefix(o.from, "sftp://"):
		u, err := url.Parse(o.from)
		if err != nil || u.Host == "" || u.User == nil {
			return nil, fmt.Errorf("--from %q: want sftp://user@host[:port]/path", o.from)
		}
		port := 22
		if p := u.Port(); p != "" {
			if port, err = strconv.Atoi(p); err != nil {
				return nil, fmt.Errorf("--from: bad port %q", p)
			}
		}
		cfg := dest.SFTPConfig{Host: u.Hostname(), Port: port, User: u.User.Username(), Path: u.Path, KnownHostKey: o.sftpHostKey}
		if o.sftpPasswordFile != "" {
			pw, err := readSecret(cmd, o.sftpPasswordFile, "", false, "sftp password", "--sftp-password-file")
			if err != nil {
				return nil, err
			}
			cfg.Password = string(pw)
			clear(pw)
		}
		if o.sftpKey != "" {
			if cfg.PrivateKeyPEM, err = os.ReadFile(o.sftpKey); err != nil {
				return nil, fmt.Errorf("read --sftp-key-file: %w", err)
			}
		}
		if cfg.Password == "" && cfg.PrivateKeyPEM == nil {
			return nil, errors.New("sftp: give --sftp-password-file or --sftp-key-file")
		}
		if cfg.KnownHostKey == "" {
			cfg.OnHostKey = func(line string) {
				fmt.Fprintf(cmd.ErrOrStderr(), "sftp host key of %s (not pinned; pass --sftp-host-key to check it): %s\n", u.Host, line)
			}
		}
		return dest.NewSFTP(ctx, cfg)
	case strings.HasPrefix(o.from, "s3://"):
		rest := strings.TrimPrefix(o.from, "s3://")
		host, bp, ok := strings.Cut(rest, "/")
		if !ok || host == "" || bp == "" {
			return nil, fmt.Errorf("--from %q: want s3://host:port/bucket[/prefix]", o.from)
		}
		bucket, prefix, _ := strings.Cut(bp, "/")
		cfg := dest.S3Config{Endpoint: host, Bucket: bucket, Prefix: prefix, Region: o.s3Region, AccessKey: o.s3AccessKey,
			PathStyle: true, Insecure: o.s3Insecure}
		if o.s3SecretFile != "" {
			sk, err := readSecret(cmd, o.s3SecretFile, "", false, "s3 secret key", "--s3-secret-key-file")
			if err != nil {
				return nil, err
			}
			cfg.SecretKey = string(sk)
			clear(sk)
		}
		if o.s3CACert != "" {
			b, err := os.ReadFile(o.s3CACert)
			if err != nil {
				return nil, fmt.Errorf("read --s3-ca-cert: %w", err)
			}
			cfg.CACertPEM = b
		}
		return dest.NewS3(ctx, cfg)
	}
	p, err := filepath.Abs(o.from)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(p); err != nil {
		return nil, fmt.Errorf("--from %s: %w", o.from, err)
	}
	return dest.NewDir(p)
}

// keys gathers the recovery passphrases and age identities; with none
// given it prompts for one passphrase.
func (o *fromOptions) keys(cmd *cobra.Command) (keys []bundle.Decryption, err error) {
	var out []bundle.Decryption
	defer func() {
		if err != nil {
			for _, k := range out {
				clear(k.Passphrase)
			}
		}
	}()
	for _, f := range o.recoveryFiles {
		p, err := readSecret(cmd, f, "", false, "recovery passphrase", "--recovery-passphrase-file")
		if err != nil {
			return nil, err
		}
		out = append(out, bundle.Decryption{Passphrase: p})
	}
	if v := os.Getenv(envRecoveryPassphrase); v != "" {
		out = append(out, bundle.Decryption{Passphrase: []byte(v)})
	}
	for _, f := range o.identities {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("read --identity: %w", err)
		}
		var ids []string
		for _, line := range strings.Split(string(b), "\n") {
			if line = strings.TrimSpace(line); strings.HasPrefix(line, "AGE-SECRET-KEY-") {
				ids = append(ids, line)
			}
		}
		if len(ids) == 0 {
			return nil, fmt.Errorf("--identity %s: no AGE-SECRET-KEY-1... line", f)
		}
		out = append(out, bundle.Decryption{Identities: ids})
	}
	if len(out) == 0 {
		p, err := readSecret(cmd, "", "Recovery passphrase", false, "recovery passphrase", "--recovery-passphrase-file (or $"+envRecoveryPassphrase+")")
		if err != nil {
			return nil, err
		}
		out = append(out, bundle.Decryption{Passphrase: p})
	}
	return out, nil
}

func newRestoreCmd(g *globals) *cobra.Command {
	var (
		from                         fromOptions
		to, toTime, toPoint, backup_ string
		toIndex                      uint64
		timeline                     uint32
		journals                     []string
		force, list, takeOver        bool
		passFile, configPath         string
	)
	cmd := &cobra.Command{
		Use:   "restore",
		Short: "Restore a data dir from backups, offline: to the latest point, a time, a restore point or an index",
		Long: `coffer restore builds a new data dir from the backups at --from, without a
running server and without any file of the lost node: the newest full backup
before the target, then its incrementals and the archived journal segments,
replayed record by record up to the target:

  --to latest                 everything the backups hold (the default)
  --to-time T                 the state as it was at T (RFC 3339, e.g.
                              2026-11-21T09:30:00Z): every record up to T
  --to-restore-point NAME     up to and including the restore point
  --to-index N                up to raft index N

Missing records (a gap between backups, a deleted segment) stop the restore
with the missing range and the last point that can be reached; restoring to
that point is then an explicit --to-index. --journal DIR adds a raw journal,
e.g. the synchronous mirror (<path>/mirror/<cluster-id>, or that of one
node, <cluster-id>.<node-id>, in a cluster), so that every write
acknowledged before a data disk failure is restored.

Backups open with the recovery passphrase that was valid when each was taken:
--recovery-passphrase-file (repeat it for a chain spanning a change),
$COFFER_RECOVERY_PASSPHRASE, or a prompt; --identity for age recipients. The
master key generations come from the backups; the restored node's keystore is
sealed under a new passphrase (--passphrase-file, or prompted twice).
Auto-open is never restored: enable it again with coffer keystore
enable-auto-open.

The data dir must be new or empty; --force moves a non-empty one aside
(DIR.before-restore-<time>). A dir with a running server is always refused.

The restored node is a standalone single-node cluster on a new timeline: the
old history's segments after the restore point are never replayed into it.

A restore may be a rehearsal while the server it copies still writes to the
same destinations, so the restored node starts with its backups, schedules,
journal archiving and mirror HELD: it writes to no destination but LOCAL
until "coffer backup resume-after-restore" (a copy: only destinations no
other timeline writes to) or "... --take-over" (the real recovery). With
--take-over here, the restore is the real recovery from the start: the first
start claims every destination for the new timeline and takes a full backup
to each. One live timeline writes to a destination; another is refused.

Without --timeline the restore follows the timeline written to most
recently; when two timelines both hold records after the point where they
forked, it refuses and lists them: choose with --timeline N.
--list shows the timelines (with their last write) and the backups at
--from, and restores nothing.`,
		Example: `  coffer restore --list --from /mnt/backup
  coffer restore --from /mnt/backup --data-dir /srv/rehearsal            # a rehearsal: backups held
  coffer restore --from /mnt/backup --data-dir /var/lib/coffer --take-over   # the real recovery
  coffer restore --from /mnt/backup --data-dir /var/lib/coffer --force \
      --to-time 2026-11-21T09:30:00Z --recovery-passphrase-file rp.txt --passphrase-file ks.txt
  coffer restore --from sftp://backup@vault2/srv/coffer --sftp-key-file id_ed25519 \
      --data-dir /var/lib/coffer --to-restore-point before-upgrade
  coffer restore --from /mnt/backup --journal /mnt/backup/mirror/cl-0123abcd --data-dir /var/lib/coffer`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			d, err := from.open(ctx, cmd)
			if err != nil {
				return err
			}
			defer d.Close()
			if list {
				return listBackups(ctx, cmd, g, d)
			}
			var t restore.Target
			n := 0
			if to != "" && to != "latest" {
				return fmt.Errorf("--to %q: only \"latest\"; use --to-time, --to-restore-point or --to-index", to)
			}
			if toTime != "" {
				n++
				if t.Time, err = parseWhen(toTime); err != nil {
					return err
				}
			}
			if toPoint != "" {
				n++
				t.Point = toPoint
			}
			if toIndex != 0 {
				n++
				t.Index = toIndex
			}
			if n > 1 || n == 1 && to != "" {
				return errors.New("give one target: --to latest, --to-time, --to-restore-point or --to-index")
			}
			dir := g.dataDir
			if dir == "" {
				dir = os.Getenv(envDataDir)
			}
			if dir == "" {
				return errors.New("coffer restore needs --data-dir DIR (new or empty)")
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
			// Everything the restore writes (including raft's snapshot files)
			// is private to its owner, as the server makes its files.
			syscall.Umask(0o077)
			pass, err := readPassphrase(cmd, passFile, "Keystore passphrase for the restored node", true)
			if err != nil {
				return err
			}
			defer clear(pass)
			opts := restore.Options{From: d, Journals: journals, Keys: keys, DataDir: dir, Force: force,
				Lock: func(dir string) (io.Closer, error) {
					if server.Locked(dir) {
						return nil, fmt.Errorf("a server is running on %s: stop it first", dir)
					}
					return server.LockDataDir(dir)
				},
				Target: t, Timeline: timeline, BackupID: backup_, Passphrase: pass, TakeOver: takeOver}
			gcCfg := config.Default()
			if configPath != "" {
				cfg, err := config.Load(configPath)
				if err != nil {
					return err
				}
				opts.KDF = keystore.KDFParams{Time: cfg.Keystore.KDF.Time, MemoryKiB: cfg.Keystore.KDF.MemoryKiB, Threads: cfg.Keystore.KDF.Threads}
				opts.JournalName = cfg.Name
				gcCfg = cfg
			}
			// The server's collector settings: a restore's heap is small
			// (the state is written through bbolt's memory map) and turns
			// over batch after batch of decoded records; at Go's default
			// target a journal replay spent a fifth of its CPU collecting.
			server.ApplyGC(gcCfg, os.LookupEnv)
			opts.Progress = progressPrinter(cmd)
			sum, err := restore.Run(ctx, opts)
			opts.Progress(restore.Event{Phase: "done"})
			if err != nil {
				if sum.MovedAside != "" {
					fmt.Fprintf(cmd.ErrOrStderr(), "the old data dir was moved to %s\n", sum.MovedAside)
				}
				return err
			}
			devNote, err := keepDevFiles(sum.MovedAside, dir, pass)
			if err != nil {
				return err
			}
			if g.format == "json" {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(sum)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "Restored cluster %s into %s\n", sum.ClusterID, dir)
			fmt.Fprintf(w, "  target          %s\n", t)
			fmt.Fprintf(w, "  reached index   %d\n", sum.Index)
			fmt.Fprintf(w, "  time            %s\n", fmtTime(sum.Time))
			fmt.Fprintf(w, "  objects         %d\n", sum.Objects)
			fmt.Fprintf(w, "  full backup     %s\n", sum.Full)
			fmt.Fprintf(w, "  files read      %d (%d journal records replayed)\n", len(sum.Files), sum.Records)
			for _, j := range sum.Journals {
				fmt.Fprintf(w, "  journal         %s\n", j)
			}
			fmt.Fprintf(w, "  timeline        %d (new; restored from timeline %d)\n", sum.Timeline.ID, sum.FromTL)
			fmt.Fprintf(w, "  master keys     generations %v\n", sum.Generations)
			fmt.Fprintf(w, "  state digest    %s\n", sum.Digest)
			if sum.Rebuilt {
				fmt.Fprintf(w, "  catalog         missing or damaged: read every backup's manifest instead\n")
			}
			for _, s := range sum.Skipped {
				fmt.Fprintf(w, "  skipped         %s\n", s)
			}
			if sum.MovedAside != "" {
				fmt.Fprintf(w, "  old data dir    moved to %s\n", sum.MovedAside)
			}
			if devNote != "" {
				fmt.Fprintf(w, "  dev data dir    %s\n", devNote)
			}
			fmt.Fprintf(w, "\nNext: start the server on %s and open the keystore with the new passphrase.\n", dir)
			if takeOver {
				fmt.Fprintf(w, "Its first start takes over every destination: a full backup to each (timeline %d).\n", sum.Timeline.ID)
			} else {
				fmt.Fprintf(w, "Its backups to every destination but LOCAL are HELD: a rehearsal never writes into the chain it copies.\n")
				fmt.Fprintf(w, "If this is the real recovery: coffer backup resume-after-restore --take-over (or restore with --take-over).\n")
			}
			fmt.Fprintf(w, "Auto-open was not restored: coffer keystore enable-auto-open, if you use it.\n")
			return nil
		},
	}
	from.addFlags(cmd)
	f := cmd.Flags()
	f.StringVar(&to, "to", "", `"latest" (the default)`)
	f.StringVar(&toTime, "to-time", "", "restore the state as it was at this time (RFC 3339)")
	f.StringVar(&toPoint, "to-restore-point", "", "restore up to and including this restore point")
	f.Uint64Var(&toIndex, "to-index", 0, "restore up to this raft index")
	f.StringVar(&backup_, "backup", "", "start from this full backup id (default: the newest before the target)")
	f.Uint32Var(&timeline, "timeline", 0, "restore this timeline's history (default: the one written to most recently; refused when two have diverged)")
	f.BoolVar(&takeOver, "take-over", false, "this restore is the real recovery: its first start claims every destination and takes a full backup to each (default: backups held)")
	f.StringArrayVar(&journals, "journal", nil, "also replay this raw journal directory (the synchronous mirror); repeatable")
	f.BoolVar(&force, "force", false, "move a non-empty data dir aside first")
	f.BoolVarP(&list, "list", "l", false, "list the backups and timelines at --from, restore nothing")
	f.StringVar(&passFile, "passphrase-file", "", "read the restored node's new keystore passphrase from this file (- for stdin)")
	f.StringVarP(&configPath, "config", "c", "", "the restored server's configuration (for its keystore KDF and journal name)")
	cmd.AddCommand(newRestoreObjectCmd(g))
	return cmd
}

// keepDevFiles: a restore over a coffer dev data dir (moved aside to old)
// keeps it usable by coffer dev: the new keystore passphrase goes where dev
// mode keeps its passphrase, and the root token, recovery passphrase and
// console administrator's password files come along (the restored state
// has all three). Dev mode only: a data dir without dev files gets nothing.
func keepDevFiles(old, dir string, pass []byte) (string, error) {
	if old == "" {
		return "", nil
	}
	if _, err := os.Stat(filepath.Join(old, devPassphraseFile)); err != nil {
		return "", nil
	}
	if err := fsutil.WriteFile(filepath.Join(dir, devPassphraseFile), append(append([]byte(nil), pass...), '\n')); err != nil {
		return "", err
	}
	for _, f := range []string{devTokenFile, devRecoveryFile, devAdminFile} {
		b, err := os.ReadFile(filepath.Join(old, f))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", err
		}
		err = fsutil.WriteFile(filepath.Join(dir, f), b)
		clear(b)
		if err != nil {
			return "", err
		}
	}
	return fmt.Sprintf("the dev files were kept (%s now holds the new keystore passphrase): coffer dev runs on it", devPassphraseFile), nil
}

// parseWhen reads an RFC 3339 time, or "YYYY-MM-DD HH:MM:SS" in UTC.
func parseWhen(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02 15:04:05", "2006-01-02T15:04:05"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("time %q: use RFC 3339, e.g. 2026-11-21T09:30:00Z", s)
}

// progressPrinter draws a bar per downloaded file on a terminal, and one
// line per file otherwise.
func progressPrinter(cmd *cobra.Command) func(restore.Event) {
	w := cmd.ErrOrStderr()
	tty := stdinIsTerminal()
	var bar *progressbar.ProgressBar
	var file string
	return func(e restore.Event) {
		switch e.Phase {
		case "download":
			if e.File != file {
				if bar != nil {
					bar.Finish()
					fmt.Fprintln(w)
				}
				file = e.File
				if tty {
					bar = progressbar.NewOptions64(e.Total, progressbar.OptionSetWriter(w), progressbar.OptionShowBytes(true),
						progressbar.OptionSetDescription(filepath.Base(e.File)), progressbar.OptionThrottle(100*time.Millisecond))
				} else {
					fmt.Fprintf(w, "reading %s (%d bytes)\n", e.File, e.Total)
				}
			}
			if bar != nil {
				bar.Set64(e.Bytes)
			}
		case "done":
			if bar != nil {
				bar.Finish()
				fmt.Fprintln(w)
				bar = nil
			}
		default:
			if e.Note != "" {
				if bar != nil {
					bar.Finish()
					fmt.Fprintln(w)
					bar, file = nil, ""
				}
				fmt.Fprintf(w, "%s: %s\n", e.Phase, e.Note)
			}
		}
	}
}

// listBackups prints what --from holds, by timeline.
func listBackups(ctx context.Context, cmd *cobra.Command, g *globals, d dest.Destination) error {
	cat, err := backup.LoadCatalog(ctx, d)
	rebuilt := false
	if err != nil || cat.ClusterID == "" {
		if cat, _, err = backup.Scan(ctx, d); err != nil {
			return err
		}
		rebuilt = true
	}
	slices.SortFunc(cat.Entries, func(a, b backup.Entry) int {
		if a.TimelineID() != b.TimelineID() {
			return int(a.TimelineID()) - int(b.TimelineID())
		}
		if a.FirstIndex != b.FirstIndex {
			return cmp.Compare(a.FirstIndex, b.FirstIndex)
		}
		return a.Created.Compare(b.Created)
	})
	tls := restore.Timelines(cat)
	if g.format == "json" {
		enc := json.NewEncoder(cmd.OutOrStdout())
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			backup.Catalog
			Timelines []restore.TimelineInfo `json:"timelines"`
		}{cat, tls})
	}
	w := cmd.OutOrStdout()
	fmt.Fprintf(w, "cluster %s at %s", cat.ClusterID, d.Location())
	if rebuilt {
		fmt.Fprint(w, " (no usable catalog: read from the files' manifests)")
	}
	fmt.Fprintln(w)
	tw := newTableTo(w)
	fmt.Fprintln(tw, "TIMELINE\tFROM\tREACHES\tLAST WRITE\tFILES\tWRITER")
	for _, t := range tls {
		from := "-"
		if n := len(t.History); n > 0 {
			from = fmt.Sprintf("%d at %d", t.History[n-1].ID, t.History[n-1].Upto)
		}
		wr := ""
		if t.Writer {
			wr = "yes"
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%d\t%s\n", t.ID, from, t.Reach, fmtTime(t.LastWrite), t.Files, wr)
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = newTableTo(w)
	fmt.Fprintln(tw, "TIMELINE\tKIND\tID\tINDEXES\tTAKEN\tSIZE\tVERIFIED")
	for _, e := range cat.Entries {
		v := "-"
		if e.Verified != nil {
			v = e.Verified.Result
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d-%d\t%s\t%d\t%s\n", e.TimelineID(), e.Kind, e.ID, e.FirstIndex, e.LastIndex, fmtTime(e.LastTime), e.Size, v)
	}
	return tw.Flush()
}

func newRestoreObjectCmd(g *globals) *cobra.Command {
	var wallet, dest, toTime, as string
	var toIndex uint64
	var dry bool
	cmd := &cobra.Command{
		Use:   "object ID|NAME --from DESTINATION --to-time T",
		Short: "Put one object back into the running server as it was at a past time",
		Long: `Reads the backups on a destination configured on the server (--from is its
name, e.g. nas) as of --to-time (or --to-index), and puts one object back
through the normal, audited command path:

  without --as   into the object itself: every version it has lost since
                 (e.g. after a mistaken destroy) gets its material back, and
                 a destroyed object returns to the state it had then;
                 versions made later are kept
  --as NAME      as a new object NAME in the same wallet, with the versions
                 it had then

--dry-run reads the same backups and shows the object as the restore would
leave it, marking the versions whose material would come back; nothing
changes (the preview is audited as previewObjectRestore).

Reading the backups takes as long as a restore of them: without --timeout
the command waits up to 24h.

The server needs the recovery passphrase the backups were encrypted with (its
current one); backups encrypted to age recipients are restored offline only.
Key administrators and endpoints with manage on the wallet.`,
		Example: `  coffer restore object tde/master --wallet db-prod --from nas --to-time 2026-11-21T09:00:00Z --dry-run
  coffer restore object tde/master --wallet db-prod --from nas --to-time 2026-11-21T09:00:00Z
  coffer restore object 0c3f... --from nas --to-time 2026-11-21T09:00:00Z --as tde/master-recovered`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireFlag(dest, "--from DESTINATION"); err != nil {
				return err
			}
			req := client.RestoreObjectRequest{Destination: dest, Index: toIndex, As: as}
			if toTime != "" {
				t, err := parseWhen(toTime)
				if err != nil {
					return err
				}
				req.Time = t
			}
			if req.Time.IsZero() == (toIndex == 0) {
				return errors.New("give one of --to-time and --to-index")
			}
			waitLong(cmd, g) // the server restores the chain first, as a drill does
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				id, err := resolveRef(ctx, c, wallet, args[0])
				if err != nil {
					return err
				}
				if dry {
					p, err := c.PreviewObjectRestore(ctx, id, req)
					if err != nil {
						return err
					}
					if g.format == "json" {
						return g.printJSON(cmd, p)
					}
					printPreview(cmd.OutOrStdout(), p)
					return nil
				}
				o, err := c.RestoreObject(ctx, id, req)
				if err != nil {
					return err
				}
				if g.format == "json" {
					return g.printJSON(cmd, o)
				}
				w := newTable(cmd)
				printObject(w, o)
				return w.Flush()
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&wallet, "wallet", "default", "wallet of a NAME")
	f.StringVar(&dest, "from", "", "the backup destination to read (its name on the server)")
	f.StringVar(&toTime, "to-time", "", "the object as it was at this time (RFC 3339)")
	f.Uint64Var(&toIndex, "to-index", 0, "or as it was at this raft index")
	f.StringVar(&as, "as", "", "restore as a new object with this name instead of into the object itself")
	f.BoolVar(&dry, "dry-run", false, "show what the restore would bring back, change nothing")
	return cmd
}

// printPreview shows an object restore's preview: the object as it would
// be left and, per version, whether its material comes back.
func printPreview(w io.Writer, p client.RestorePreview) {
	fmt.Fprintf(w, "Dry run: nothing was changed. From %s the restore would leave:\n", p.From)
	tw := newTableTo(w)
	printObject(tw, p.Object)
	tw.Flush()
	fmt.Fprintln(w)
	tw = newTableTo(w)
	fmt.Fprintln(tw, "VERSION\tCREATED\tAFTER THE RESTORE")
	for _, v := range p.Object.Versions {
		st := "kept as it is"
		switch {
		case slices.Contains(p.Restored, v.Version):
			st = "comes back"
		case v.Destroyed:
			st = "stays destroyed"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\n", v.Version, fmtTime(v.Created), st)
	}
	tw.Flush()
}
