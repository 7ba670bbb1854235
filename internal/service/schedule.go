package service

import (
	"context"
	"fmt"
	"time"

	"github.com/coffer-kms/coffer/internal/backup"
	"github.com/coffer-kms/coffer/internal/state"
)

// ScheduleConfig creates or edits a backup schedule.
type ScheduleConfig struct {
	Name        string     `json:"name"`
	Destination string     `json:"destination"`
	Kind        string     `json:"kind,omitempty" doc:"backup (default) or verify: a restore drill of the destination's newest backup chain (coffer backup drill)"`
	Type        string     `json:"type" doc:"once, periodic or cron"`
	At          *time.Time `json:"at,omitempty" doc:"once: when (omit for now)"`
	Every       string     `json:"every,omitempty" doc:"periodic: a duration such as 24h or 30m (at least 1m)"`
	Cron        string     `json:"cron,omitempty" doc:"cron: five fields or @daily style"`
	Mode        string     `json:"mode,omitempty" doc:"auto (default: a full when the last full is 7 days old, else an incremental), full or incremental"`
	Verify      bool       `json:"verify,omitempty" doc:"verify each backup after it is taken (coffer backup verify)"`
}

// ScheduleView is a schedule with its next run.
type ScheduleView struct {
	state.Schedule
	Next *time.Time `json:"next,omitempty"`
}

func viewSchedule(sc state.Schedule) ScheduleView {
	v := ScheduleView{Schedule: sc}
	if _, next := backup.Due(sc, time.Now()); !next.IsZero() {
		v.Next = &next
	}
	return v
}

func (c ScheduleConfig) validate() error {
	if err := ValidLabel("schedule", c.Name); err != nil {
		return err
	}
	switch c.Kind {
	case "", backup.ScheduleBackup:
	case backup.ScheduleVerify:
		if (c.Mode != "" && c.Mode != backup.ModeAuto) || c.Verify {
			return fmt.Errorf("%w: a schedule of kind verify runs a restore drill: it takes no mode and no verify", ErrInvalid)
		}
	default:
		return fmt.Errorf("%w: schedule kind %q: use backup or verify", ErrInvalid, c.Kind)
	}
	switch c.Mode {
	case "", backup.ModeAuto, backup.ModeFull, backup.ModeIncremental:
	default:
		return fmt.Errorf("%w: mode %q: use auto, full or incremental", ErrInvalid, c.Mode)
	}
	switch c.Type {
	case "once":
		if c.Every != "" || c.Cron != "" {
			return fmt.Errorf("%w: a one-time schedule takes only at", ErrInvalid)
		}
	case "periodic":
		d, err := time.ParseDuration(c.Every)
		if err != nil || d < time.Minute {
			return fmt.Errorf("%w: every %q: use a duration of at least 1m, such as 24h", ErrInvalid, c.Every)
		}
	case "cron":
		if err := backup.ParseCron(c.Cron); err != nil {
			return fmt.Errorf("%w: cron %q: %v", ErrInvalid, c.Cron, err)
		}
	default:
		return fmt.Errorf("%w: schedule type %q: use once, periodic or cron", ErrInvalid, c.Type)
	}
	return nil
}

// PutSchedule creates (edit=false) or changes a schedule (system administrators).
func (s *Backups) PutSchedule(ctx context.Context, c ScheduleConfig, edit bool) (ScheduleView, error) {
	note(ctx, "schedule:"+c.Name)
	if _, err := requireRole(ctx, RoleSystemAdmin, "configuring backup schedules"); err != nil {
		return ScheduleView{}, err
	}
	if err := c.validate(); err != nil {
		return ScheduleView{}, err
	}
	old, err := s.st.Schedule(c.Name)
	switch {
	case err == nil && !edit:
		return ScheduleView{}, fmt.Errorf("%w: schedule %q exists (edit it instead)", ErrConflict, c.Name)
	case err != nil && edit:
		return ScheduleView{}, mapStateErr(err)
	}
	if _, err := s.st.Destination(c.Destination); err != nil {
		return ScheduleView{}, mapStateErr(err)
	}
	sc := state.Schedule{Name: c.Name, Destination: c.Destination, Kind: c.Kind, Type: c.Type, At: c.At, Every: c.Every, Cron: c.Cron, Mode: c.Mode, Verify: c.Verify, State: "ACTIVE"}
	switch {
	case sc.Kind == backup.ScheduleVerify:
		sc.Mode = ""
	case sc.Mode == "":
		sc.Mode = backup.ModeAuto
	}
	if sc.Kind == backup.ScheduleBackup {
		sc.Kind = "" // the default, stored as older builds store it
	}
	if sc.Type == "once" && sc.At == nil {
		now := time.Now().UTC()
		sc.At = &now
	}
	if edit {
		sc.LastRun, sc.LastResult = old.LastRun, old.LastResult
		if old.State == "PAUSED" || old.State == "ONGOING" {
			// Paused stays paused; a run in progress records its result
			// into the edited schedule (and makes it ACTIVE) when it ends.
			sc.State = old.State
		}
	}
	res, err := s.applyOpen(ctx, state.TypeSchedulePut, sc)
	if err != nil {
		return ScheduleView{}, fmt.Errorf("store schedule %q: %w", c.Name, err)
	}
	stored, _ := res.(state.Schedule)
	return viewSchedule(stored), nil
}

// SetSchedulePaused pauses or resumes a schedule.
func (s *Backups) SetSchedulePaused(ctx context.Context, name string, paused bool) (ScheduleView, error) {
	note(ctx, "schedule:"+name)
	if _, err := requireRole(ctx, RoleSystemAdmin, "pausing or resuming a schedule"); err != nil {
		return ScheduleView{}, err
	}
	sc, err := s.st.Schedule(name)
	if err != nil {
		return ScheduleView{}, mapStateErr(err)
	}
	switch {
	case paused && sc.State == "ACTIVE":
		sc.State = "PAUSED"
	case !paused && sc.State == "PAUSED":
		sc.State = "ACTIVE"
	default:
		return ScheduleView{}, fmt.Errorf("%w: schedule %q is %s", ErrConflict, name, sc.State)
	}
	res, err := s.applyOpen(ctx, state.TypeSchedulePut, sc)
	if err != nil {
		return ScheduleView{}, err
	}
	stored, _ := res.(state.Schedule)
	return viewSchedule(stored), nil
}

// ListSchedules lists schedules with their next run.
func (s *Backups) ListSchedules(ctx context.Context) ([]ScheduleView, error) {
	if _, err := requireRole(ctx, RoleSystemAdmin, "listing backup schedules"); err != nil {
		return nil, err
	}
	all, err := s.st.Schedules()
	if err != nil {
		return nil, err
	}
	out := []ScheduleView{}
	for _, sc := range all {
		out = append(out, viewSchedule(sc))
	}
	return out, nil
}

// DeleteSchedule removes a schedule.
func (s *Backups) DeleteSchedule(ctx context.Context, name string) error {
	note(ctx, "schedule:"+name)
	if _, err := requireRole(ctx, RoleSystemAdmin, "deleting a backup schedule"); err != nil {
		return err
	}
	_, err := s.applyOpen(ctx, state.TypeScheduleDelete, state.ScheduleDelete{Name: name})
	return err
}

// SetArchivePaused pauses or resumes archiving to a destination (pausing
// log shipping, as a database pauses WAL archiving); segments pile up on the node
// meanwhile and show in the destination's pending count.
func (s *Backups) SetArchivePaused(ctx context.Context, name string, paused bool) (DestinationView, error) {
	note(ctx, "destination:"+name)
	if _, err := requireRole(ctx, RoleSystemAdmin, "pausing or resuming archiving"); err != nil {
		return DestinationView{}, err
	}
	d, err := s.st.Destination(name)
	if err != nil {
		return DestinationView{}, mapStateErr(err)
	}
	if !d.Archiving {
		return DestinationView{}, fmt.Errorf("%w: archiving is off for destination %q", ErrConflict, name)
	}
	res, err := s.applyOpen(ctx, state.TypeArchivePause, state.ArchivePause{Name: name, Paused: paused})
	if err != nil {
		return DestinationView{}, err
	}
	stored, _ := res.(state.Destination)
	return s.viewDestination(ctx, stored, false), nil
}
