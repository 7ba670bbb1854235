package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/coffer-kms/coffer/client"
	"github.com/coffer-kms/coffer/internal/server"
)

type initOptions struct {
	passFile     string
	recoveryFile string
	noRecovery   bool
}

// check refuses contradictory init flags before anything is read or sent.
func (o *initOptions) check() error {
	if o.noRecovery && o.recoveryFile != "" {
		return errors.New("give --recovery-passphrase-file or --no-recovery-passphrase, not both")
	}
	return oneStdin(o.passFile, "--passphrase-file", o.recoveryFile, "--recovery-passphrase-file")
}

func newInitCmd(g *globals) *cobra.Command {
	o := &initOptions{}
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Initialise a new server: create the keystore and its first master key",
		Long: `Create keystore.ks with the first master encryption key, sealed by a
passphrase of 8 to 200 bytes, open it, and print the root token once.
Run it on the server host with --data-dir DIR: a server accepts init only
through its local control socket, never from the network.
Keep the passphrase safe: without it (or auto-open on this machine) the
keystore cannot be opened and nothing in it can be read.

Then the recovery passphrase (8 to 200 bytes), which encrypts backups, is
set: from --recovery-passphrase-file, or asked twice on the terminal. Keep it
apart from the keystore passphrase: restoring a backup needs it. With
--no-recovery-passphrase none is set, and backups encrypted to it are refused
until one is set with "coffer backup recovery-passphrase set".`,
		Example: `  coffer init --data-dir /var/lib/coffer
  coffer init --data-dir /var/lib/coffer --passphrase-file ks.pass --recovery-passphrase-file recovery.pass`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.check(); err != nil {
				return err
			}
			pass, err := readPassphrase(cmd, o.passFile, "New keystore passphrase", true)
			if err != nil {
				return err
			}
			var recovery []byte
			if !o.noRecovery {
				if recovery, err = readRecoveryPassphrase(cmd, o.recoveryFile, "--recovery-passphrase-file"); err != nil {
					clear(pass)
					if o.recoveryFile == "" && !stdinIsTerminal() {
						return fmt.Errorf("%w, or --no-recovery-passphrase to set none now", err)
					}
					return err
				}
				if bytes.Equal(recovery, pass) {
					fmt.Fprintln(cmd.ErrOrStderr(), "Warning: the recovery passphrase is the keystore passphrase; whoever has a backup and this passphrase has the keys")
				}
			}
			return useSecrets(func() error {
				return g.withClient(func(ctx context.Context, c *client.Client) error {
					tok, err := c.Init(ctx, string(pass))
					if err != nil {
						return err
					}
					// The same connection (the control socket) sets the recovery
					// passphrase; the root token is shown whatever happens next.
					var st client.RecoveryStatus
					var recErr error
					if recovery != nil {
						st, recErr = c.SetRecoveryPassphrase(ctx, "", string(recovery))
					}
					if g.format == "json" {
						if err := g.printJSON(cmd, map[string]any{"root_token": tok, "recovery_passphrase": st}); err != nil {
							return err
						}
					} else {
						fmt.Fprintf(cmd.OutOrStdout(), "Keystore initialised and open.\nRoot token (shown once): %s\n", tok)
						if recErr == nil && st.Set {
							fmt.Fprintf(cmd.OutOrStdout(), "Recovery passphrase set (%s).\n", st.Label)
						}
					}
					switch {
					case recErr != nil:
						return fmt.Errorf("the keystore is initialised, but the recovery passphrase was not set: %w\n(set it with \"coffer backup recovery-passphrase set\")", recErr)
					case o.noRecovery:
						fmt.Fprintln(cmd.ErrOrStderr(), `Warning: no recovery passphrase: backups encrypted to it are refused until one is set with "coffer backup recovery-passphrase set"`)
					}
					return nil
				})
			}, pass, recovery)
		},
	}
	cmd.Flags().StringVar(&o.passFile, "passphrase-file", "", "read the passphrase from this file (- for stdin)")
	cmd.Flags().StringVar(&o.recoveryFile, "recovery-passphrase-file", "", "read the recovery passphrase for backups from this file (- for stdin)")
	cmd.Flags().BoolVar(&o.noRecovery, "no-recovery-passphrase", false, "set no recovery passphrase now (backups to it are refused until one is set)")
	return cmd
}

func newTokenCmd(g *globals) *cobra.Command {
	t := &cobra.Command{
		Use:   "token",
		Short: "Create, list and revoke root tokens",
		Long: `Root tokens hold every role. The one printed at init, and every one made
with create-root, stays valid until revoked (or until its --ttl runs out).
Tokens are never stored, only their SHA-256: lists show an accessor, the
first 16 hex digits of it, which names a token for revoke and cannot be used
to authenticate. Prefer administrator accounts (coffer user) for daily work
and keep root tokens for recovery.`,
	}
	var ttl time.Duration
	create := &cobra.Command{
		Use:   "create-root",
		Short: "Create a new root token (on the server host, through the control socket)",
		Long: `Create a new root token, e.g. after the one printed at init was lost, or
when init was interrupted before it could store one, or a short-lived one for
a task (--ttl). Allowed only through the local control socket (--data-dir),
with the keystore open. Revoke a lost one with coffer token revoke.`,
		Example: `  coffer token create-root --data-dir /var/lib/coffer --ttl 1h`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := g.requireLocal("create-root"); err != nil {
				return err
			}
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				tok, err := c.CreateRootTokenTTL(ctx, ttl)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "Root token (shown once): %s\n", tok)
				if ttl > 0 {
					fmt.Fprintf(cmd.OutOrStdout(), "It expires at %s.\n", time.Now().Add(ttl).UTC().Format(time.RFC3339))
				}
				return nil
			})
		},
	}
	create.Flags().DurationVar(&ttl, "ttl", 0, "the token expires after this long (1m to 8760h; default: never)")
	list := &cobra.Command{
		Use:   "list",
		Short: "List root tokens by accessor (never the tokens)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				toks, err := c.ListRootTokens(ctx)
				if err != nil {
					return err
				}
				return printList(g, cmd, toks, "ACCESSOR\tCREATED\tEXPIRES\tNOTE", func(t client.RootToken) string {
					exp, note := "never", ""
					if t.Expires != nil {
						exp = t.Expires.UTC().Format(time.RFC3339)
					}
					if t.Expired {
						note = "expired"
					}
					if t.Current {
						note = strings.TrimSpace(note + " (this token)")
					}
					return fmt.Sprintf("%s\t%s\t%s\t%s", t.Accessor, t.Created.UTC().Format(time.RFC3339), exp, note)
				})
			})
		},
	}
	revoke := &cobra.Command{
		Use:     "revoke ACCESSOR",
		Short:   "Revoke a root token by its accessor (at least 8 hex digits)",
		Example: "  coffer token list\n  coffer token revoke 3f9a61c2",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				acc, err := c.RevokeRootToken(ctx, args[0])
				if err != nil {
					return err
				}
				if g.format == "json" {
					return g.printJSON(cmd, map[string]string{"revoked": acc})
				}
				fmt.Fprintf(cmd.OutOrStdout(), "root token %s revoked\n", acc)
				return nil
			})
		},
	}
	t.AddCommand(create, list, revoke)
	return t
}

func newStatusCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the server state, keystore generation, journal position, alerts and backups",
		Long: `Show the node's state, keystore generation and journal position, then:
  ALERT lines     conditions that stop writes (Writable is false)
  WARNING lines   conditions that need attention while writes go on, such
                  as a journal mirror that is failing or behind (until it
                  catches up; the "Journal mirror" line says by how much), a
                  destination more than 80% full, or journal segments that
                  could not be archived
and, with the keystore open, the running backup (bytes written so far),
whether writes are frozen, and per destination its disk use (dir and LOCAL),
closed journal segments waiting to be archived, when a backup to it last
succeeded and last failed, and the last archive error. --format json has
everything.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				st, err := c.Status(ctx)
				if err != nil {
					return err
				}
				if g.format == "json" {
					return g.printJSON(cmd, st)
				}
				printStatus(cmd.OutOrStdout(), st)
				return nil
			})
		},
	}
}

// printStatus writes the status for people: the node, its alerts (writes
// stop) and warnings (writes go on), then the backup side.
func printStatus(out io.Writer, st client.Status) {
	w := newTableTo(out)
	fmt.Fprintf(w, "State:\t%s\n", st.State)
	fmt.Fprintf(w, "Writable:\t%v\n", st.Writable)
	fmt.Fprintf(w, "PID:\t%d\n", st.PID)
	fmt.Fprintf(w, "Data dir:\t%s\n", st.DataDir)
	fmt.Fprintf(w, "Version:\t%s\n", st.Version)
	fmt.Fprintf(w, "Cluster id:\t%s\n", st.ClusterID)
	if tl := st.Timeline; tl.ID > 1 {
		fmt.Fprintf(w, "Timeline:\t%d\n", tl.ID)
		if r := tl.Restored; r != nil {
			fmt.Fprintf(w, "Restored:\t%s from %s to %s (index %d)\n", fmtTime(r.At), r.From, r.Target, r.Index)
			switch {
			case r.Held && r.Released == nil:
				fmt.Fprintf(w, "Backups:\tHELD after the restore (see the warning)\n")
			case r.TakeOver:
				fmt.Fprintf(w, "Backups:\ttook over every destination at %s\n", fmtTime(*r.Released))
			case r.Released != nil:
				fmt.Fprintf(w, "Backups:\tresumed at %s (no take-over)\n", fmtTime(*r.Released))
			}
		}
	}
	fmt.Fprintf(w, "Keystore generation:\t%d\n", st.KeystoreGeneration)
	fmt.Fprintf(w, "Auto-open:\t%v\n", st.AutoOpen)
	fmt.Fprintf(w, "Applied index:\t%d\n", st.AppliedIndex)
	fmt.Fprintf(w, "Journal:\t%s (last index %d, %d segments)\n", st.Journal.Segment, st.Journal.LastIndex, st.Journal.Segments)
	if st.Journal.PruneHeldBy != "" {
		fmt.Fprintf(w, "Journal kept for:\t%s\n", st.Journal.PruneHeldBy)
	}
	if m := st.Journal.Mirror; m != nil {
		if m.InSync {
			fmt.Fprintf(w, "Journal mirror:\tin sync (last index %d)\n", m.LastIndex)
		} else {
			fmt.Fprintf(w, "Journal mirror:\tBEHIND by %d records (last index %d): writes are acknowledged without it until it catches up\n", m.Behind, m.LastIndex)
		}
	}
	w.Flush()
	for _, a := range st.Alerts {
		fmt.Fprintf(out, "ALERT [%s] since %s: %s\n", a.Component, a.Since.Format(time.RFC3339), a.Message)
		printRunbook(out, a)
	}
	for _, a := range st.Warnings {
		since := ""
		if !a.Since.IsZero() {
			since = " since " + a.Since.Format(time.RFC3339)
		}
		fmt.Fprintf(out, "WARNING [%s]%s: %s\n", a.Component, since, a.Message)
		printRunbook(out, a)
	}
	printDisks(out, st.Disks)
	printBackupStatus(out, st.Backup)
}

// printDisks writes the disk use of the node's directories, a line each,
// with its level (warning from 80 % used, error from 95 %).
func printDisks(out io.Writer, disks []client.DiskUse) {
	if len(disks) == 0 {
		return
	}
	fmt.Fprintln(out)
	t := newTableTo(out)
	fmt.Fprintln(t, "DISK\tPATH\tUSED\tFREE\tLEVEL")
	for _, d := range disks {
		used, free, level := "-", "-", d.Level
		if d.Error == "" {
			used, free = fmt.Sprintf("%.0f%%", d.UsedPercent), humanBytes(int64(min(d.Free, math.MaxInt64))) // #nosec G115 -- clamped to MaxInt64
		} else {
			level += " (" + shorten(d.Error, 60) + ")"
		}
		fmt.Fprintf(t, "%s\t%s\t%s\t%s\t%s\n", d.What, d.Path, used, free, level)
	}
	t.Flush()
}

// printRunbook names the runbook of an alert, under its line.
func printRunbook(out io.Writer, a client.Alert) {
	if a.Runbook != "" {
		fmt.Fprintf(out, "  runbook: %s\n", a.Runbook)
	}
}

// printBackupStatus writes the running backup, the freeze and a line per
// destination; nothing when there is nothing to say (a sealed server).
func printBackupStatus(out io.Writer, b client.BackupStatus) {
	if b.Running == nil && !b.Frozen && len(b.Destinations) == 0 {
		return
	}
	fmt.Fprintln(out)
	w := newTableTo(out)
	if r := b.Running; r != nil {
		fmt.Fprintf(w, "Backup running:\t%s %s to %s since %s, %s written\n", r.Kind, r.ID, r.Destination, fmtTime(r.Started), humanBytes(r.BytesWritten))
	} else {
		fmt.Fprintf(w, "Backup running:\tnone\n")
	}
	if b.Frozen {
		fmt.Fprintf(w, "Writes frozen:\tyes (until \"coffer thaw\" or the freeze timeout)\n")
	}
	w.Flush()
	if len(b.Destinations) == 0 {
		return
	}
	t := newTableTo(out)
	fmt.Fprintln(t, "DESTINATION\tTYPE\tUSED\tPENDING\tLAST SUCCESS\tLAST FAILURE\tLAST DRILL OK\tARCHIVE ERROR")
	for _, d := range b.Destinations {
		used := "-"
		if d.Kind == "local" || d.Kind == client.DestinationDir {
			used = fmt.Sprintf("%.0f%%", d.UsedPercent)
		}
		fmt.Fprintf(t, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", d.Name, d.Kind, used, d.Pending,
			fmtTimePtr(d.LastSuccess), fmtTimePtr(d.LastFailure), lastDrillOK(d.Drills), orDash(shorten(d.ArchiveError, 60)))
	}
	t.Flush()
}

func newStopCmd(g *globals) *cobra.Command {
	var mode string
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "stop",
		Short: "Stop a server: smart (default), fast or immediate",
		Long: `Stop a server as a database server stops:
  smart      wait for in-flight requests to finish (SIGTERM)
  fast       cancel in-flight requests, then stop cleanly (SIGINT)
  immediate  exit at once without cleanup; the next start recovers from
             the raft log and the journal (SIGQUIT)
With --data-dir the signal is sent to the pid in <data-dir>/coffer.pid and the
command waits until the server has released the data dir. Otherwise the stop
is requested over the API.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			sig := map[string]syscall.Signal{"smart": syscall.SIGTERM, "fast": syscall.SIGINT, "immediate": syscall.SIGQUIT}[mode]
			if sig == 0 {
				return fmt.Errorf("stop mode %q: use smart, fast or immediate", mode)
			}
			if g.dataDir != "" {
				pid, _, err := server.ReadPID(g.dataDir)
				if err != nil || !server.Locked(g.dataDir) {
					return fmt.Errorf("no server is running on %s", g.dataDir)
				}
				if err := syscall.Kill(pid, sig); err != nil {
					return fmt.Errorf("signal pid %d: %w", pid, err)
				}
				deadline := time.Now().Add(wait)
				for server.Locked(g.dataDir) {
					if time.Now().After(deadline) {
						return fmt.Errorf("server pid %d has not stopped after %s", pid, wait)
					}
					time.Sleep(50 * time.Millisecond)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "server pid %d stopped (%s)\n", pid, mode)
				return nil
			}
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				if err := c.Stop(ctx, mode); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "stop (%s) requested\n", mode)
				return nil
			})
		},
	}
	cmd.Flags().StringVarP(&mode, "mode", "m", "smart", "stop mode: smart, fast or immediate")
	cmd.Flags().DurationVar(&wait, "wait", 5*time.Minute, "with --data-dir: how long to wait for the server to exit")
	return cmd
}

func newKeystoreCmd(g *globals) *cobra.Command {
	ks := &cobra.Command{
		Use:   "keystore",
		Short: "Open, seal and manage the keystore (master keys, passphrase, auto-open)",
	}
	var passFile string
	var auto bool
	open := &cobra.Command{
		Use:   "open",
		Short: "Open the keystore with its passphrase (or --auto with keystore.aks)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				var err error
				if auto {
					err = c.OpenAuto(ctx)
				} else {
					var pass []byte
					if pass, err = readPassphrase(cmd, passFile, "Keystore passphrase", false); err != nil {
						return err
					}
					err = useSecrets(func() error { return c.Open(ctx, string(pass)) }, pass)
				}
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), "keystore open")
				return nil
			})
		},
	}
	open.Flags().StringVar(&passFile, "passphrase-file", "", "read the passphrase from this file (- for stdin)")
	open.Flags().BoolVar(&auto, "auto", false, "open with the auto-open file keystore.aks")

	simple := func(use, short, done string, fn func(context.Context, *client.Client) (string, error)) *cobra.Command {
		return &cobra.Command{
			Use:   use,
			Short: short,
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				return g.withClient(func(ctx context.Context, c *client.Client) error {
					msg, err := fn(ctx, c)
					if err != nil {
						return err
					}
					fmt.Fprintln(cmd.OutOrStdout(), done+msg)
					return nil
				})
			},
		}
	}
	seal := simple("seal", "Seal the keystore: drop every key from memory and stop serving keys", "keystore sealed", func(ctx context.Context, c *client.Client) (string, error) {
		return "", c.Seal(ctx)
	})
	rotate := simple("rotate-master-key", "Create a new master key generation and re-wrap the data keys", "master key rotated: generation ", func(ctx context.Context, c *client.Client) (string, error) {
		gen, err := c.RotateMasterKey(ctx)
		return fmt.Sprint(gen), err
	})
	rotateDEK := simple("rotate-data-key", "Create a new data key for new writes (old ones stay readable)", "data key rotated: key ", func(ctx context.Context, c *client.Client) (string, error) {
		id, err := c.RotateDataKey(ctx)
		return fmt.Sprint(id), err
	})
	enable := simple("enable-auto-open", "Write keystore.aks so this machine opens the keystore at start without the passphrase", "auto-open enabled", func(ctx context.Context, c *client.Client) (string, error) {
		return "", c.SetAutoOpen(ctx, true)
	})
	disable := simple("disable-auto-open", "Delete keystore.aks: the passphrase is needed at every start", "auto-open disabled", func(ctx context.Context, c *client.Client) (string, error) {
		return "", c.SetAutoOpen(ctx, false)
	})
	var oldFile, newFile string
	change := &cobra.Command{
		Use:   "change-passphrase",
		Short: "Re-seal the keystore under a new passphrase (keys are unchanged)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := oneStdin(oldFile, "--old-passphrase-file", newFile, "--new-passphrase-file"); err != nil {
				return err
			}
			old, err := readPassphrase(cmd, oldFile, "Current keystore passphrase", false)
			if err != nil {
				return err
			}
			nw, err := readPassphrase(cmd, newFile, "New keystore passphrase", true)
			if err != nil {
				clear(old)
				return err
			}
			return useSecrets(func() error {
				return g.withClient(func(ctx context.Context, c *client.Client) error {
					if err := c.ChangePassphrase(ctx, string(old), string(nw)); err != nil {
						return err
					}
					fmt.Fprintln(cmd.OutOrStdout(), "keystore passphrase changed")
					return nil
				})
			}, old, nw)
		},
	}
	change.Flags().StringVar(&oldFile, "old-passphrase-file", "", "file with the current passphrase (- for stdin)")
	change.Flags().StringVar(&newFile, "new-passphrase-file", "", "file with the new passphrase (- for stdin)")
	var resetFile string
	reset := &cobra.Command{
		Use:   "reset-passphrase",
		Short: "Set a new passphrase without the old one (keystore open, on the server host only)",
		Long: `For a lost passphrase: while the keystore is open (or still auto-opens on
this machine), re-seal keystore.ks under a new passphrase. Allowed only through
the local control socket (--data-dir), so only someone with access to the data
directory on the server host can do it. Keys are unchanged.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := g.requireLocal("reset-passphrase"); err != nil {
				return err
			}
			nw, err := readPassphrase(cmd, resetFile, "New keystore passphrase", true)
			if err != nil {
				return err
			}
			return useSecrets(func() error {
				return g.withClient(func(ctx context.Context, c *client.Client) error {
					if err := c.ResetPassphrase(ctx, string(nw)); err != nil {
						return err
					}
					fmt.Fprintln(cmd.OutOrStdout(), "keystore passphrase reset")
					return nil
				})
			}, nw)
		},
	}
	reset.Flags().StringVar(&resetFile, "new-passphrase-file", "", "file with the new passphrase (- for stdin)")
	ks.AddCommand(open, seal, rotate, rotateDEK, change, reset, enable, disable)
	return ks
}
