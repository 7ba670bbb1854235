package rest

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/coffer-kms/coffer/internal/service"
)

// Bodies of the backup routes.
type (
	// RecoveryRequest sets or changes the recovery passphrase.
	RecoveryRequest struct {
		Old string `json:"old_passphrase,omitempty" doc:"required to change an existing one"`
		New string `json:"new_passphrase"`
	}
	// DestinationList lists destinations.
	DestinationList struct {
		Destinations []service.DestinationView `json:"destinations"`
	}
	// BackupList lists backup records, newest first.
	BackupList struct {
		Backups []BackupRecord `json:"backups"`
	}
	// ScheduleList lists schedules.
	ScheduleList struct {
		Schedules []ScheduleView `json:"schedules"`
	}
	// RebuildResult reports a catalog rebuild.
	RebuildResult struct {
		Backups int      `json:"backups"`
		Skipped []string `json:"skipped,omitempty"`
	}
	// FreezeRequest freezes writes.
	FreezeRequest struct {
		Timeout string `json:"timeout,omitempty" doc:"duration, default 5m"`
	}
	// CurrentBackup is the running backup, if any.
	CurrentBackup struct {
		Running *BackupProgress `json:"running,omitempty"`
	}
	// BackupProgress is a running backup and the bytes written so far.
	BackupProgress struct {
		BackupRecord
		BytesWritten int64 `json:"bytes_written"`
	}
)

func (a *api) recoveryStatus(w http.ResponseWriter, r *http.Request) {
	st, err := a.svc.Recovery(r.Context())
	a.reply(w, r, http.StatusOK, st, err)
}

func (a *api) setRecovery(w http.ResponseWriter, r *http.Request) {
	var req RecoveryRequest
	if err := decode(w, r, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	old, nw := secret(req.Old), secret(req.New)
	defer clear(old)
	defer clear(nw)
	st, err := a.svc.SetRecoveryPassphrase(r.Context(), old, nw)
	a.reply(w, r, http.StatusOK, st, err)
}

func (a *api) addDestination(w http.ResponseWriter, r *http.Request) {
	var req service.DestinationConfig
	if err := decode(w, r, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	v, err := a.svc.Backups.AddDestination(r.Context(), req)
	a.reply(w, r, http.StatusCreated, v, err)
}

func (a *api) editDestination(w http.ResponseWriter, r *http.Request) {
	var req service.DestinationConfig
	if err := decode(w, r, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	if req.Name != "" && req.Name != r.PathValue("name") {
		a.fail(w, r, fmt.Errorf("%w: the name in the body (%q) differs from the path", service.ErrInvalid, req.Name))
		return
	}
	req.Name = r.PathValue("name")
	v, err := a.svc.Backups.EditDestination(r.Context(), req)
	a.reply(w, r, http.StatusOK, v, err)
}

func (a *api) listDestinations(w http.ResponseWriter, r *http.Request) {
	ds, err := a.svc.Backups.ListDestinations(r.Context())
	a.reply(w, r, http.StatusOK, DestinationList{Destinations: ds}, err)
}

func (a *api) deleteDestination(w http.ResponseWriter, r *http.Request) {
	if err := a.svc.Backups.DeleteDestination(r.Context(), r.PathValue("name")); err != nil {
		a.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *api) testDestination(w http.ResponseWriter, r *http.Request) {
	err := a.svc.Backups.TestDestination(r.Context(), r.PathValue("name"))
	a.reply(w, r, http.StatusOK, map[string]bool{"ok": true}, err)
}

func (a *api) runDrill(w http.ResponseWriter, r *http.Request) {
	res, err := a.svc.Backups.Drill(r.Context(), r.PathValue("name"))
	a.reply(w, r, http.StatusOK, res, err)
}

func (a *api) rebuildCatalog(w http.ResponseWriter, r *http.Request) {
	n, skipped, err := a.svc.Backups.RebuildCatalog(r.Context(), r.PathValue("name"))
	a.reply(w, r, http.StatusOK, RebuildResult{Backups: n, Skipped: skipped}, err)
}

// VerifyResults answers a verification.
type VerifyResults struct {
	Results []service.VerifyResult `json:"results"`
}

func (a *api) verifyBackups(w http.ResponseWriter, r *http.Request) {
	var req service.VerifyRequest
	if err := decode(w, r, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	if r.URL.Query().Get("progress") != "ndjson" {
		res, err := a.svc.Backups.VerifyBackups(r.Context(), r.PathValue("name"), req)
		a.reply(w, r, http.StatusOK, VerifyResults{Results: res}, err)
		return
	}
	// Progress for each backup started and finished, then {"results":[...]}.
	st := a.ndjson(w, r)
	req.Progress = func(p service.VerifyProgress) { st.progress(p) }
	res, err := a.svc.Backups.VerifyBackups(r.Context(), r.PathValue("name"), req)
	st.finish(VerifyResults{Results: res}, err)
}

func (a *api) archivePause(paused bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v, err := a.svc.Backups.SetArchivePaused(r.Context(), r.PathValue("name"), paused)
		a.reply(w, r, http.StatusOK, v, err)
	}
}

func (a *api) runBackup(w http.ResponseWriter, r *http.Request) {
	var req service.BackupRequest
	if err := decode(w, r, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	rec, err := a.svc.Backups.RunBackup(r.Context(), req)
	status := http.StatusAccepted
	if req.Wait {
		status = http.StatusOK
	}
	a.reply(w, r, status, backupRecordOf(rec), err)
}

// ResumeAfterRestoreRequest ends a restored node's backup hold; the body is optional.
type ResumeAfterRestoreRequest struct {
	TakeOver bool `json:"take_over,omitempty" doc:"this restore is the real recovery: claim every destination and take a full backup to each now"`
}

func (a *api) resumeAfterRestore(w http.ResponseWriter, r *http.Request) {
	var req ResumeAfterRestoreRequest
	if err := decodeOptional(w, r, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	tl, err := a.svc.Backups.ResumeAfterRestore(r.Context(), req.TakeOver)
	a.reply(w, r, http.StatusOK, tl, err)
}

func (a *api) currentBackup(w http.ResponseWriter, r *http.Request) {
	p, err := a.svc.Backups.CurrentBackup(r.Context())
	var out CurrentBackup
	if p != nil {
		out.Running = &BackupProgress{BackupRecord: backupRecordOf(p.BackupRecord), BytesWritten: p.BytesWritten}
	}
	a.reply(w, r, http.StatusOK, out, err)
}

func (a *api) listBackups(w http.ResponseWriter, r *http.Request) {
	bs, err := a.svc.Backups.ListCatalog(r.Context(), r.URL.Query().Get("destination"))
	a.reply(w, r, http.StatusOK, BackupList{Backups: backupListingsOf(bs)}, err)
}

func (a *api) putSchedule(edit bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req service.ScheduleConfig
		if err := decode(w, r, &req); err != nil {
			a.fail(w, r, err)
			return
		}
		status := http.StatusCreated
		if edit {
			if req.Name != "" && req.Name != r.PathValue("name") {
				a.fail(w, r, fmt.Errorf("%w: the name in the body (%q) differs from the path", service.ErrInvalid, req.Name))
				return
			}
			req.Name, status = r.PathValue("name"), http.StatusOK
		}
		v, err := a.svc.Backups.PutSchedule(r.Context(), req, edit)
		a.reply(w, r, status, scheduleViewOf(v), err)
	}
}

func (a *api) listSchedules(w http.ResponseWriter, r *http.Request) {
	ss, err := a.svc.Backups.ListSchedules(r.Context())
	a.reply(w, r, http.StatusOK, ScheduleList{Schedules: scheduleViewsOf(ss)}, err)
}

func (a *api) schedulePause(paused bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v, err := a.svc.Backups.SetSchedulePaused(r.Context(), r.PathValue("name"), paused)
		a.reply(w, r, http.StatusOK, scheduleViewOf(v), err)
	}
}

func (a *api) deleteSchedule(w http.ResponseWriter, r *http.Request) {
	if err := a.svc.Backups.DeleteSchedule(r.Context(), r.PathValue("name")); err != nil {
		a.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *api) freeze(w http.ResponseWriter, r *http.Request) {
	var req FreezeRequest
	if err := decodeOptional(w, r, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	var d time.Duration
	if req.Timeout != "" {
		var err error
		if d, err = time.ParseDuration(req.Timeout); err != nil || d <= 0 {
			a.fail(w, r, fmt.Errorf("%w: timeout %q: use a duration such as 5m", service.ErrInvalid, req.Timeout))
			return
		}
	}
	st, err := a.svc.Backups.Freeze(r.Context(), d)
	if err != nil || !st.Frozen {
		a.reply(w, r, http.StatusOK, st, err)
		return
	}
	// The freeze stays only if its answer reaches the client: one that
	// went away would never take the snapshot and thaw. Once the answer is
	// written and flushed, a request context that ends is a client that
	// read it and closed its connection (coffer freeze && lvcreate ...),
	// which takes the snapshot now: the freeze stays.
	if err := r.Context().Err(); err != nil {
		a.svc.Backups.CancelFreeze(st, "the client went away before the answer was sent: "+err.Error())
		a.fail(w, r, fmt.Errorf("freeze ended, its client went away: %w", err))
		return
	}
	werr := sendJSON(w, http.StatusOK, st)
	if werr == nil {
		if werr = http.NewResponseController(w).Flush(); errors.Is(werr, http.ErrNotSupported) {
			werr = nil
		}
	}
	if werr != nil {
		a.svc.Backups.CancelFreeze(st, "the answer could not be sent: "+werr.Error())
	}
}

func (a *api) thaw(w http.ResponseWriter, r *http.Request) {
	st, err := a.svc.Backups.Thaw(r.Context())
	a.reply(w, r, http.StatusOK, st, err)
}

// RestorePointRequest names a restore point.
type RestorePointRequest struct {
	Name string `json:"name"`
}

// RestorePointList lists restore points, oldest first.
type RestorePointList struct {
	RestorePoints []RestorePoint `json:"restore_points"`
}

func (a *api) createRestorePoint(w http.ResponseWriter, r *http.Request) {
	var req RestorePointRequest
	if err := decode(w, r, &req); err != nil {
		a.fail(w, r, err)
		return
	}
	rp, err := a.svc.Backups.CreateRestorePoint(r.Context(), req.Name)
	a.reply(w, r, http.StatusCreated, restorePointOf(rp), err)
}

func (a *api) listRestorePoints(w http.ResponseWriter, r *http.Request) {
	rps, err := a.svc.Backups.ListRestorePoints(r.Context())
	a.reply(w, r, http.StatusOK, RestorePointList{RestorePoints: restorePointsOf(rps)}, err)
}
