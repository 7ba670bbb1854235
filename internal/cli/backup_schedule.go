package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/coffer-kms/coffer/client"
)

const scheduleHelp = `When (exactly one):
  --at TIME        once, at TIME: 2025-06-01T02:00:00Z (RFC 3339),
                   "2025-06-01 02:00" (local time) or 02:00 (the next one)
  --now            once, now
  --every 24h      periodically (a duration of at least 1m): now, then at
                   every whole period after, whatever a run takes (a late
                   run is followed by the next whole period, no catch-up)
  --cron 'EXPR'    cron: five fields (minute hour day month weekday) or
                   @hourly, @daily, @weekly, @monthly
What (--mode):
  auto             a full when the last full is 7 days old or missing, else
                   an incremental on it (default)
  full             always a full
  incremental      always an incremental (fails without a full)
Kind (--kind):
  backup           take a backup (default)
  verify           run a restore drill on the destination's newest backup
                   chain instead (coffer backup drill); no --mode or --verify`

// scheduleOptions are the flags of schedule add and edit.
type scheduleOptions struct {
	destination string
	at          string
	now         bool
	every, cron string
	mode        string
	verify      bool
	kind        string
}

func (o *scheduleOptions) addFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVarP(&o.destination, "destination", "d", "", "destination to back up to")
	f.StringVar(&o.at, "at", "", "once, at this time")
	f.BoolVar(&o.now, "now", false, "once, now")
	f.StringVar(&o.every, "every", "", "periodically, every DURATION (e.g. 24h, at least 1m)")
	f.StringVar(&o.cron, "cron", "", "cron expression (five fields, or @daily style)")
	f.StringVar(&o.mode, "mode", "", "auto (default), full or incremental")
	f.StringVar(&o.kind, "kind", "", "backup (default) or verify (a restore drill, see coffer backup drill)")
	cmd.RegisterFlagCompletionFunc("kind", fixedCompletion("backup", "verify"))
	f.BoolVar(&o.verify, "verify", false, "verify each backup after it is taken (decrypt, replay, integrity check; result in the catalog)")
	cmd.RegisterFlagCompletionFunc("mode", fixedCompletion(client.BackupModeAuto, client.BackupModeFull, client.BackupModeIncremental))
}

// when applies --at, --now, --every or --cron to cfg. required says one of
// them must be given (add); more than one is always refused.
func (o *scheduleOptions) when(cmd *cobra.Command, cfg *client.ScheduleConfig, required bool, now time.Time) error {
	f := cmd.Flags()
	n := 0
	for _, name := range []string{"at", "now", "every", "cron"} {
		if f.Changed(name) {
			n++
		}
	}
	switch {
	case n > 1 || (n == 0 && required):
		return errors.New("give exactly one of --at TIME, --now, --every DURATION or --cron EXPR")
	case n == 0:
		return nil
	}
	cfg.At, cfg.Every, cfg.Cron = nil, "", ""
	switch {
	case f.Changed("at"):
		t, err := parseAt(o.at, now)
		if err != nil {
			return err
		}
		cfg.Type, cfg.At = client.ScheduleOnce, &t
	case f.Changed("now"):
		if !o.now {
			return errors.New("--now=false: give --at TIME instead")
		}
		cfg.Type = client.ScheduleOnce
	case f.Changed("every"):
		d, err := time.ParseDuration(o.every)
		if err != nil || d < time.Minute {
			return fmt.Errorf("--every %q: use a duration of at least 1m, such as 24h or 30m", o.every)
		}
		cfg.Type, cfg.Every = client.SchedulePeriodic, o.every
	case f.Changed("cron"):
		if strings.TrimSpace(o.cron) == "" {
			return errors.New("--cron needs an expression, such as '0 2 * * *' or @daily")
		}
		cfg.Type, cfg.Cron = client.ScheduleCron, o.cron
	}
	return nil
}

// checkMode refuses an unknown --mode.
func (o *scheduleOptions) checkMode() error {
	switch o.mode {
	case "", client.BackupModeAuto, client.BackupModeFull, client.BackupModeIncremental:
		return nil
	}
	return fmt.Errorf("--mode %q: use auto, full or incremental", o.mode)
}

// parseAt reads a time: RFC 3339, a local date and time, or a local time of
// day (its next occurrence after now).
func parseAt(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t.UTC(), nil
	}
	for _, layout := range []string{"2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02 15:04:05", "2006-01-02 15:04"} {
		if t, err := time.ParseInLocation(layout, s, now.Location()); err == nil {
			return t.UTC(), nil
		}
	}
	for _, layout := range []string{"15:04:05", "15:04"} {
		if t, err := time.ParseInLocation(layout, s, now.Location()); err == nil {
			at := time.Date(now.Year(), now.Month(), now.Day(), t.Hour(), t.Minute(), t.Second(), 0, now.Location())
			if !at.After(now) {
				at = at.AddDate(0, 0, 1)
			}
			return at.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("--at %q: use 2025-06-01T02:00:00Z, \"2025-06-01 02:00\" (local) or 02:00 (the next one)", s)
}

// scheduleSpec is when a schedule runs, for people.
func scheduleSpec(s client.Schedule) string {
	switch s.Type {
	case client.ScheduleOnce:
		return "at " + fmtTimePtr(s.At)
	case client.SchedulePeriodic:
		return "every " + s.Every
	case client.ScheduleCron:
		return s.Cron
	}
	return "-"
}

// printScheduleDone prints a schedule after a change: as JSON with --format
// json, else a line that says what was done (verb) and when it runs next.
func printScheduleDone(g *globals, cmd *cobra.Command, s client.Schedule, verb string) error {
	if g.format == "json" {
		return g.printJSON(cmd, s)
	}
	if s.Kind == "verify" {
		fmt.Fprintf(cmd.OutOrStdout(), "schedule %s %s: restore drills of %s, %s; %s", s.Name, verb, s.Destination, scheduleSpec(s), s.State)
	} else {
		fmt.Fprintf(cmd.OutOrStdout(), "schedule %s %s: %s backups to %s, %s; %s", s.Name, verb, s.Mode, s.Destination, scheduleSpec(s), s.State)
	}
	if s.Verify {
		fmt.Fprint(cmd.OutOrStdout(), "; each backup verified")
	}
	if s.Next != nil {
		fmt.Fprintf(cmd.OutOrStdout(), ", next run %s", fmtTime(*s.Next))
	}
	fmt.Fprintln(cmd.OutOrStdout())
	return nil
}

func newScheduleCmd(g *globals) *cobra.Command {
	s := &cobra.Command{
		Use:   "schedule",
		Short: "Schedule backups: once, periodically or by cron",
		Long: `Schedules take backups to a destination once, periodically or by a cron
expression. Any node of the cluster may run a due schedule. Only one backup
runs at a time, and a schedule does not wait for another: a scheduled run
that finds a backup in progress fails with "a backup is in progress"
(recorded as the schedule's last result) and the schedule is tried again at
its next due time (a one-time schedule is then DONE with that result).
A schedule is ACTIVE, ONGOING (running now), PAUSED, or DONE (a one-time
schedule that ran). A key change triggers a full backup to every destination
with an active schedule.

` + scheduleHelp,
		Example: `  coffer backup schedule add nightly --destination nas --cron '0 2 * * *'
  coffer backup schedule add weekly-full --destination offsite --every 168h --mode full
  coffer backup schedule list`,
	}
	s.AddCommand(newScheduleAddCmd(g), newScheduleEditCmd(g), newScheduleListCmd(g))
	for _, t := range []struct{ name, short, long, verb string }{
		{"pause", "Pause a schedule (ACTIVE to PAUSED)", "Pause the schedule NAME: it takes no backups until resumed.", "paused"},
		{"resume", "Resume a paused schedule (PAUSED to ACTIVE)", "Resume the schedule NAME. If a run came due while it was paused, a\nsingle backup runs at the next schedule check, however many runs were missed.", "resumed"},
		{"rm", "Delete a schedule", "Delete the schedule NAME. Backups it took stay.", "deleted"},
	} {
		s.AddCommand(newScheduleActionCmd(g, t.name, t.short, t.long, t.verb))
	}
	return s
}

func newScheduleAddCmd(g *globals) *cobra.Command {
	o := &scheduleOptions{}
	cmd := &cobra.Command{
		Use:   "add NAME --destination D (--at TIME|--now|--every DURATION|--cron EXPR) [--mode auto|full|incremental] [--kind backup|verify]",
		Short: "Add a backup schedule (or a restore drill schedule with --kind verify)",
		Long:  "Add the schedule NAME taking backups to destination D (or, with --kind verify,\nrunning restore drills on it).\n\n" + scheduleHelp,
		Example: `  coffer backup schedule add nightly --destination nas --cron '0 2 * * *'
  coffer backup schedule add hourly --destination LOCAL --every 1h --mode incremental
  coffer backup schedule add before-upgrade --destination nas --at 22:00 --mode full
  coffer backup schedule add weekly-drill --destination nas --cron '0 4 * * 0' --kind verify`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireFlag(o.destination, "--destination D"); err != nil {
				return err
			}
			if err := o.checkMode(); err != nil {
				return err
			}
			cfg := client.ScheduleConfig{Name: args[0], Destination: o.destination, Kind: o.kind, Mode: o.mode, Verify: o.verify}
			if err := o.when(cmd, &cfg, true, time.Now()); err != nil {
				return err
			}
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				sc, err := c.AddSchedule(ctx, cfg)
				if err != nil {
					return err
				}
				return printScheduleDone(g, cmd, sc, "added")
			})
		},
	}
	o.addFlags(cmd)
	return cmd
}

func newScheduleEditCmd(g *globals) *cobra.Command {
	o := &scheduleOptions{}
	cmd := &cobra.Command{
		Use:   "edit NAME [--destination D] [--at TIME|--now|--every DURATION|--cron EXPR] [--mode M]",
		Short: "Change a schedule: only the flags given change",
		Long: `Change the schedule NAME: its destination, when it runs (at most one of
--at, --now, --every, --cron, which replaces the old timing) or its mode. A
paused schedule stays paused.

` + scheduleHelp,
		Example: `  coffer backup schedule edit nightly --cron '30 3 * * *'
  coffer backup schedule edit nightly --destination offsite --mode full`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f := cmd.Flags()
			if !f.Changed("destination") && !f.Changed("at") && !f.Changed("now") && !f.Changed("every") && !f.Changed("cron") && !f.Changed("mode") && !f.Changed("verify") && !f.Changed("kind") {
				return errors.New("nothing to change: give --destination, --at, --now, --every, --cron, --mode, --verify or --kind")
			}
			if err := o.checkMode(); err != nil {
				return err
			}
			var probe client.ScheduleConfig
			if err := o.when(cmd, &probe, false, time.Now()); err != nil {
				return err
			}
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				all, err := c.ListSchedules(ctx)
				if err != nil {
					return err
				}
				var cfg *client.ScheduleConfig
				for _, s := range all {
					if s.Name == args[0] {
						sc := s.Config()
						cfg = &sc
					}
				}
				if cfg == nil {
					return fmt.Errorf("schedule %q not found (see \"coffer backup schedule list\")", args[0])
				}
				if f.Changed("destination") {
					cfg.Destination = o.destination
				}
				if f.Changed("mode") {
					cfg.Mode = o.mode
				}
				if f.Changed("verify") {
					cfg.Verify = o.verify
				}
				if f.Changed("kind") {
					cfg.Kind = o.kind
					if o.kind == "verify" && !f.Changed("mode") {
						cfg.Mode, cfg.Verify = "", false
					}
				}
				if err := o.when(cmd, cfg, false, time.Now()); err != nil {
					return err
				}
				sc, err := c.EditSchedule(ctx, args[0], *cfg)
				if err != nil {
					return err
				}
				return printScheduleDone(g, cmd, sc, "changed")
			})
		},
	}
	o.addFlags(cmd)
	return cmd
}

func newScheduleListCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List schedules with their state, last result and next run",
		Long: `List schedules: destination, type and timing, mode, state, when each
last ran and how that ended, and when it runs next.`,
		Example: "  coffer backup schedule list --format json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				ss, err := c.ListSchedules(ctx)
				if err != nil {
					return err
				}
				return printList(g, cmd, ss, "NAME\tDESTINATION\tTYPE\tSPEC\tMODE\tSTATE\tLAST RUN\tLAST RESULT\tNEXT", func(s client.Schedule) string {
					mode := s.Mode
					if s.Kind == "verify" {
						mode = "drill"
					}
					return fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s", s.Name, s.Destination, s.Type, scheduleSpec(s), mode, s.State,
						fmtTimePtr(s.LastRun), orDash(shorten(s.LastResult, 40)), fmtTimePtr(s.Next))
				})
			})
		},
	}
}

// newScheduleActionCmd makes schedule pause, resume and rm.
func newScheduleActionCmd(g *globals, name, short, long, verb string) *cobra.Command {
	return &cobra.Command{
		Use:     name + " NAME",
		Short:   short,
		Long:    long,
		Example: fmt.Sprintf("  coffer backup schedule %s nightly", name),
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				var (
					sc  client.Schedule
					err error
				)
				switch name {
				case "pause":
					sc, err = c.PauseSchedule(ctx, args[0])
				case "resume":
					sc, err = c.ResumeSchedule(ctx, args[0])
				default:
					err = c.DeleteSchedule(ctx, args[0])
				}
				if err != nil {
					return err
				}
				if name == "rm" {
					return g.printResult(cmd, deletedJSON(args[0]), "schedule %s deleted\n", args[0])
				}
				return printScheduleDone(g, cmd, sc, verb)
			})
		},
	}
}
