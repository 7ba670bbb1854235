package service

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/coffer-kms/coffer/internal/backup"
	"github.com/coffer-kms/coffer/internal/backup/dest"
	"github.com/coffer-kms/coffer/internal/datadir"
)

// DefaultFreezeTimeout ends a freeze nobody thawed.
const DefaultFreezeTimeout = 5 * time.Minute

// FreezeStatus reports a freeze.
type FreezeStatus struct {
	Frozen bool      `json:"frozen"`
	Until  time.Time `json:"until,omitzero"`
	Dump   string    `json:"dump,omitempty" doc:"file of the full dump written before freezing"`
	Note   string    `json:"note,omitempty"`
}

type freezeState struct {
	until time.Time
	timer *time.Timer
}

// Freeze writes a consistent full dump under <data-dir>/dump/ (encrypted to
// the recovery passphrase), then refuses writes — reads keep working — until
// Thaw or the timeout, so that a storage-level snapshot tool can copy the
// data dir (OpenKeyServer's SIGUSR1). Without a recovery passphrase the dump
// is skipped and the freeze still happens (the note says so). If ctx ends
// before writes are frozen (the requester went away during the dump), the
// freeze does not happen; a caller that cannot deliver the answer ends the
// freeze with CancelFreeze.
func (s *Backups) Freeze(ctx context.Context, timeout time.Duration) (FreezeStatus, error) {
	if _, err := requireRole(ctx, RoleSystemAdmin, "freezing writes"); err != nil {
		return FreezeStatus{}, err
	}
	if err := s.checkOpen(); err != nil {
		return FreezeStatus{}, err
	}
	if timeout <= 0 {
		timeout = s.cfg.FreezeTimeout
	}
	if timeout <= 0 {
		timeout = DefaultFreezeTimeout
	}
	if timeout > 24*time.Hour {
		return FreezeStatus{}, fmt.Errorf("%w: freeze timeout %s: at most 24h", ErrInvalid, timeout)
	}
	st := FreezeStatus{Frozen: true}
	s.freezeMu.Lock()
	s.freezing, s.thawRequested = true, false
	s.freezeMu.Unlock()
	defer func() { s.freezeMu.Lock(); s.freezing = false; s.freezeMu.Unlock() }()
	// No backup or archiving may run across the freeze: it could not
	// record its result. The dump and the freeze happen under the same lock.
	do := func() error {
		if e, err := s.dump(ctx); err != nil {
			st.Note = "no dump written: " + err.Error()
			s.log.Warn("freeze without a dump", "reason", err)
		} else {
			st.Dump = filepath.Join(datadir.DumpDir(s.cfg.DataDir), e.File)
		}
		s.freezeMu.Lock()
		defer s.freezeMu.Unlock()
		if err := ctx.Err(); err != nil {
			// The requester went away during the dump: nobody would get
			// the answer to take the snapshot and thaw.
			s.log.Warn("freeze not put in place: its requester went away during the dump", "reason", err)
			return fmt.Errorf("freeze cancelled before writes were frozen: %w", err)
		}
		if s.thawRequested {
			// A thaw (SIGCONT) arrived while the dump was written.
			st.Frozen, st.Note = false, strings.TrimSpace(st.Note+" thaw requested during the dump: writes were not frozen")
			s.log.Warn("freeze cancelled: a thaw arrived while the dump was written")
			return nil
		}
		if s.frozen != nil {
			s.frozen.timer.Stop()
		}
		until := time.Now().Add(timeout)
		f := &freezeState{until: until}
		f.timer = time.AfterFunc(timeout, func() {
			s.freezeMu.Lock()
			defer s.freezeMu.Unlock()
			if s.frozen == f {
				s.frozen = nil
				s.log.Warn("freeze timed out; writes resume", "timeout", timeout)
			}
		})
		s.frozen = f
		st.Until = until.UTC()
		s.log.Warn("writes frozen for a storage snapshot", "until", st.Until, "dump", st.Dump)
		return nil
	}
	var err error
	if m := s.backups; m != nil {
		err = m.TryExclusive(do)
	} else {
		err = do()
	}
	if errors.Is(err, backup.ErrBusy) {
		return FreezeStatus{}, fmt.Errorf("%w: %v; freeze after it ends (it could not record its result while frozen)", ErrConflict, err)
	}
	return st, err
}

// CancelFreeze ends the freeze st reports if it is still the one in
// place (false otherwise): its requester could not be given the answer, so
// nobody would take the snapshot and thaw it.
func (s *Backups) CancelFreeze(st FreezeStatus, reason string) bool {
	s.freezeMu.Lock()
	defer s.freezeMu.Unlock()
	if s.frozen == nil || !st.Frozen || !s.frozen.until.Equal(st.Until) {
		return false
	}
	s.frozen.timer.Stop()
	s.frozen = nil
	s.log.Warn("writes thawed at once: the freeze's requester did not get its answer", "reason", reason)
	return true
}

// Thaw ends a freeze.
func (s *Backups) Thaw(ctx context.Context) (FreezeStatus, error) {
	if _, err := requireRole(ctx, RoleSystemAdmin, "thawing writes"); err != nil {
		return FreezeStatus{}, err
	}
	s.freezeMu.Lock()
	defer s.freezeMu.Unlock()
	if s.frozen == nil && s.freezing {
		s.thawRequested = true
		s.log.Info("thaw requested while a freeze writes its dump: the freeze will not start")
		return FreezeStatus{Note: "thaw requested while the freeze's dump was being written: writes will not be frozen"}, nil
	}
	if s.frozen == nil {
		return FreezeStatus{}, fmt.Errorf("%w: writes are not frozen", ErrConflict)
	}
	s.frozen.timer.Stop()
	s.frozen = nil
	s.log.Info("writes thawed")
	return FreezeStatus{}, nil
}

// frozenErr is non-nil while writes are frozen.
func (s *Backups) frozenErr() error {
	s.freezeMu.Lock()
	defer s.freezeMu.Unlock()
	if s.frozen == nil {
		return nil
	}
	return fmt.Errorf("%w: writes are frozen for a storage snapshot until %s (coffer thaw, or SIGCONT, ends it)", ErrWriteUnavailable, s.frozen.until.UTC().Format(time.RFC3339))
}

// dump writes one full dump to DumpDir, keeping only the newest.
func (s *Backups) dump(ctx context.Context) (backup.Entry, error) {
	h := backupHost{s}
	s.mu.RLock()
	pw, err := s.recoveryLocked()
	r, _ := s.st.Recovery()
	s.mu.RUnlock()
	if err != nil {
		return backup.Entry{}, err
	}
	defer clear(pw)
	d, err := dest.NewDir(datadir.DumpDir(s.cfg.DataDir))
	if err != nil {
		return backup.Entry{}, err
	}
	defer d.Close()
	enc := bundleEncryption(pw, RecoveryLabel(r.Generation), s.cfg.BackupScryptWorkFactor)
	e, err := backup.Run(ctx, h, d, backup.KindDump, backup.Options{ID: backup.NewID(time.Now(), randHex(4)), Encryption: enc, StagingDir: datadir.StagingDir(s.cfg.DataDir)})
	if err != nil {
		return e, err
	}
	if _, err := (backup.Retention{KeepFulls: 1}).Apply(ctx, d, time.Now()); err != nil {
		s.log.Warn("old dumps not removed", "error", err)
	}
	return e, nil
}
