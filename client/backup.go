package client

import (
	"context"
	"io"
	"net/url"
	"time"
)

// Backup modes and kinds.
const (
	BackupModeAuto        = "auto" // a full when the last one is 7 days old, else an incremental
	BackupModeFull        = "full"
	BackupModeIncremental = "incremental"

	BackupKindFull        = "full"
	BackupKindIncremental = "incremental"
	BackupKindSegment     = "segment" // an archived journal segment file (not a backup record kind)
)

// Backup record statuses.
const (
	BackupRunning = "RUNNING"
	BackupDone    = "DONE"
	BackupFailed  = "FAILED"
	BackupDeleted = "DELETED" // retention removed the backup's file
)

// Destination kinds, and the name of the built-in destination under the
// server's data dir.
const (
	DestinationDir   = "dir"
	DestinationSFTP  = "sftp"
	DestinationS3    = "s3"
	LocalDestination = "LOCAL"
)

// Schedule types and states.
const (
	ScheduleOnce     = "once"
	SchedulePeriodic = "periodic"
	ScheduleCron     = "cron"

	ScheduleActive  = "ACTIVE"
	ScheduleOngoing = "ONGOING"
	ScheduleDone    = "DONE"
	SchedulePaused  = "PAUSED"
)

// RecoveryStatus says whether a recovery passphrase is set (never the
// passphrase). Label names the generation in backup manifests.
type RecoveryStatus struct {
	Set        bool   `json:"set"`
	Generation uint64 `json:"generation,omitempty"`
	Label      string `json:"label,omitempty"`
}

// DestinationConfig is a backup destination as it is added and edited.
// Password and SecretKey are write-only: reads never return them, and an
// edit that leaves them empty keeps the stored ones.
type DestinationConfig struct {
	Name string `json:"name"`
	Kind string `json:"kind"`           // dir, sftp or s3 (local: the built-in LOCAL)
	Path string `json:"path,omitempty"` // dir: directory on the server host; sftp: remote directory

	Host     string `json:"host,omitempty"`
	Port     int    `json:"port,omitempty"` // sftp: default 22
	User     string `json:"user,omitempty"`
	Password string `json:"password,omitempty"` // sftp; empty: key authentication with a key pair the server generates

	Endpoint  string `json:"endpoint,omitempty"` // s3: host:port
	Bucket    string `json:"bucket,omitempty"`
	Prefix    string `json:"prefix,omitempty"`
	Region    string `json:"region,omitempty"`
	AccessKey string `json:"access_key,omitempty"`
	SecretKey string `json:"secret_key,omitempty"`
	PathStyle bool   `json:"path_style,omitempty"`
	Insecure  bool   `json:"insecure,omitempty"` // s3 over plain http (tests only)
	CACert    string `json:"ca_cert,omitempty"`  // PEM CA of the S3 endpoint

	Recipients []string `json:"recipients,omitempty"` // age X25519 public keys; empty: the recovery passphrase
	Archiving  bool     `json:"archiving,omitempty"`  // ship every closed journal segment here
	// Mirror (dir only, at most one destination): every journal record is
	// also written to Path/mirror/<cluster-id>, fsynced before the write is
	// acknowledged. A failing mirror does not stop writes: the status warns
	// until it catches up.
	Mirror    bool `json:"mirror,omitempty"`
	KeepFulls int  `json:"keep_fulls,omitempty"`
	KeepDays  int  `json:"keep_days,omitempty"`
}

// Destination is a destination as the server shows it: its configuration
// (without secrets), where it points, its archive state and its disk use.
type Destination struct {
	DestinationConfig
	Location      string     `json:"location"`
	SecretSet     bool       `json:"secret_set"`
	PublicKey     string     `json:"public_key,omitempty"` // sftp key authentication: the authorized_keys line
	HostKey       string     `json:"host_key,omitempty"`   // sftp: the pinned server key
	ArchivePaused bool       `json:"archive_paused,omitempty"`
	ArchivedTo    uint64     `json:"archived_to,omitempty"` // last journal index shipped
	Pending       int        `json:"pending_segments,omitempty"`
	ArchiveError  string     `json:"archive_error,omitempty"`
	Usage         *Usage     `json:"usage,omitempty"`  // dir and LOCAL only
	Drills        *DrillView `json:"drills,omitempty"` // restore drills, as far as the server knows
	Note          string     `json:"note,omitempty"`   // what the operator must do next, e.g. install an SFTP public key, then test
	Created       time.Time  `json:"created"`
	Updated       time.Time  `json:"updated"`
}

// Usage is a destination filesystem's size and free space.
type Usage struct {
	Total       uint64  `json:"total_bytes"`
	Free        uint64  `json:"free_bytes"`
	UsedPercent float64 `json:"used_percent"`
	Level       string  `json:"level,omitempty"` // ok, warning (80 % used) or error (95 %)
}

// BackupVerification is a backup's last verification.
type BackupVerification struct {
	Time   time.Time `json:"time"`
	Result string    `json:"result"` // OK, FAILED, SKIPPED (taken under an earlier recovery passphrase) or PRUNED (removed by retention meanwhile)
	Reason string    `json:"reason,omitempty"`
}

// BackupRecord is the cluster's record of one backup.
type BackupRecord struct {
	ID          string     `json:"id"`
	Destination string     `json:"destination"`
	Timeline    uint32     `json:"timeline,omitempty"` // the history it belongs to: 1, plus one per restore
	Kind        string     `json:"kind"`               // full or incremental (a backup that failed before its kind was chosen: the mode asked for, e.g. auto)
	Status      string     `json:"status"`             // RUNNING, DONE, FAILED, DELETED (retention removed its file)
	Node        string     `json:"node"`
	File        string     `json:"file,omitempty"`
	BaseFullID  string     `json:"base_full_id,omitempty"`
	FirstIndex  uint64     `json:"first_index,omitempty"`
	LastIndex   uint64     `json:"last_index,omitempty"`
	Size        int64      `json:"size,omitempty"`
	SHA256      string     `json:"sha256,omitempty"`
	Recipients  []string   `json:"recipients,omitempty"`
	Reason      string     `json:"reason,omitempty"` // why it FAILED, or what started it
	Started     time.Time  `json:"started"`
	Finished    *time.Time `json:"finished,omitempty"`
	// Verified is the backup's last verification (coffer backup verify);
	// nil: never verified. Set in listings.
	Verified *BackupVerification `json:"verified,omitempty"`
	// EstimatedRestore: seconds a restore to this backup takes at the speed
	// of the destination's last successful restore drill (0: no drill yet).
	EstimatedRestore float64 `json:"estimated_restore_seconds,omitempty"`
}

// BackupProgress is the running backup and the bytes written so far.
type BackupProgress struct {
	BackupRecord
	BytesWritten int64 `json:"bytes_written"`
}

// ScheduleConfig creates or edits a backup schedule. Type once takes At
// (nil: now), periodic takes Every (a duration of at least 1m), cron takes
// Cron (five fields or @daily style).
type ScheduleConfig struct {
	Name        string     `json:"name"`
	Destination string     `json:"destination"`
	Kind        string     `json:"kind,omitempty"` // backup (default) or verify (a restore drill)
	Type        string     `json:"type"`
	At          *time.Time `json:"at,omitempty"`
	Every       string     `json:"every,omitempty"`
	Cron        string     `json:"cron,omitempty"`
	Mode        string     `json:"mode,omitempty"`   // auto (default), full or incremental
	Verify      bool       `json:"verify,omitempty"` // verify each backup after it is taken
}

// Schedule is a stored schedule with its next run.
type Schedule struct {
	Name        string     `json:"name"`
	Destination string     `json:"destination"`
	Kind        string     `json:"kind,omitempty"` // "" (a backup) or verify (a restore drill)
	Type        string     `json:"type"`
	At          *time.Time `json:"at,omitempty"`
	Every       string     `json:"every,omitempty"`
	Cron        string     `json:"cron,omitempty"`
	Mode        string     `json:"mode"`
	Verify      bool       `json:"verify,omitempty"`
	State       string     `json:"state"` // ACTIVE, ONGOING, DONE, PAUSED
	LastRun     *time.Time `json:"last_run,omitempty"`
	LastResult  string     `json:"last_result,omitempty"`
	Created     time.Time  `json:"created"`
	Updated     time.Time  `json:"updated"`
	Next        *time.Time `json:"next,omitempty"`
}

// Config returns the schedule as a ScheduleConfig, to edit it.
func (s Schedule) Config() ScheduleConfig {
	return ScheduleConfig{Name: s.Name, Destination: s.Destination, Kind: s.Kind, Type: s.Type, At: s.At, Every: s.Every, Cron: s.Cron, Mode: s.Mode, Verify: s.Verify}
}

// RebuildResult reports a catalog rebuild: the backups found and the files
// that were skipped (with why).
type RebuildResult struct {
	Backups int      `json:"backups"`
	Skipped []string `json:"skipped,omitempty"`
}

// FreezeStatus reports a freeze of writes. Dump is the server-side file of
// the full dump written before freezing; Note says why none was written.
type FreezeStatus struct {
	Frozen bool      `json:"frozen"`
	Until  time.Time `json:"until,omitzero"`
	Dump   string    `json:"dump,omitempty"`
	Note   string    `json:"note,omitempty"`
}

func destinationPath(name string) string {
	return "/api/v1/backup/destinations/" + url.PathEscape(name)
}

func schedulePath(name string) string { return "/api/v1/backup/schedules/" + url.PathEscape(name) }

// Recovery passphrase

// RecoveryStatus reports whether a recovery passphrase is set.
func (c *Client) RecoveryStatus(ctx context.Context) (RecoveryStatus, error) {
	var s RecoveryStatus
	return s, c.Do(ctx, "GET", "/api/v1/backup/recovery-passphrase", nil, &s)
}

// SetRecoveryPassphrase sets the recovery passphrase that encrypts backups
// or, when one is set, changes it: old must then be the current one.
func (c *Client) SetRecoveryPassphrase(ctx context.Context, old, new string) (RecoveryStatus, error) {
	var s RecoveryStatus
	return s, c.Do(ctx, "POST", "/api/v1/backup/recovery-passphrase", struct {
		Old string `json:"old_passphrase,omitempty"`
		New string `json:"new_passphrase"`
	}{old, new}, &s)
}

// Destinations

// AddDestination adds a destination. The server first writes, reads back and
// deletes a probe file there.
func (c *Client) AddDestination(ctx context.Context, cfg DestinationConfig) (Destination, error) {
	var d Destination
	return d, c.Do(ctx, "POST", "/api/v1/backup/destinations", cfg, &d)
}

// EditDestination replaces a destination's configuration with cfg (whose
// Name may be empty); empty secrets keep the stored ones, the kind cannot
// change. Start from the Destination's DestinationConfig to change a few
// fields.
func (c *Client) EditDestination(ctx context.Context, name string, cfg DestinationConfig) (Destination, error) {
	cfg.Name = name
	var d Destination
	return d, c.Do(ctx, "PATCH", destinationPath(name), cfg, &d)
}

// ListDestinations lists destinations with their archive state and disk use.
func (c *Client) ListDestinations(ctx context.Context) ([]Destination, error) {
	var r struct {
		Destinations []Destination `json:"destinations"`
	}
	err := c.Do(ctx, "GET", "/api/v1/backup/destinations", nil, &r)
	return r.Destinations, err
}

// DeleteDestination removes a destination's configuration; its backups stay
// where they are.
func (c *Client) DeleteDestination(ctx context.Context, name string) error {
	return c.Do(ctx, "DELETE", destinationPath(name), nil, nil)
}

// TestResult is the answer of a destination test that passed. Note, when
// set, is what the operator must still do.
type TestResult struct {
	OK   bool   `json:"ok"`
	Note string `json:"note,omitempty"`
}

// TestDestination writes, reads back and deletes a probe file on a stored
// destination.
func (c *Client) TestDestination(ctx context.Context, name string) (TestResult, error) {
	var r TestResult
	return r, c.Do(ctx, "POST", destinationPath(name)+"/test", nil, &r)
}

// RebuildCatalog rewrites a destination's catalog from its backup files' manifests.
func (c *Client) RebuildCatalog(ctx context.Context, name string) (RebuildResult, error) {
	var r RebuildResult
	return r, c.Do(ctx, "POST", destinationPath(name)+"/catalog/rebuild", nil, &r)
}

// VerifyResult is the outcome of verifying one backup.
type VerifyResult struct {
	ID     string    `json:"id"`
	Kind   string    `json:"kind"`
	File   string    `json:"file"`
	Result string    `json:"result"` // OK, FAILED, or SKIPPED (an earlier recovery passphrase)
	Reason string    `json:"reason,omitempty"`
	Time   time.Time `json:"time"`
}

// VerifyBackups verifies one backup (by id or segment file name) or all of
// them on a destination, and records the results in its catalog.
func (c *Client) VerifyBackups(ctx context.Context, destination, id string, all bool) ([]VerifyResult, error) {
	var r struct {
		Results []VerifyResult `json:"results"`
	}
	err := c.Do(ctx, "POST", destinationPath(destination)+"/verify", struct {
		ID  string `json:"id,omitempty"`
		All bool   `json:"all,omitempty"`
	}{id, all}, &r)
	return r.Results, err
}

// VerifyProgress is one step of a verification: File is being verified
// (Result empty) or was (Result set); Done of Total are finished.
type VerifyProgress struct {
	Done   int    `json:"done"`
	Total  int    `json:"total"`
	File   string `json:"file"`
	Result string `json:"result,omitempty"`
}

// VerifyBackupsProgress is VerifyBackups that calls progress as each
// backup starts and ends (the server streams the steps).
func (c *Client) VerifyBackupsProgress(ctx context.Context, destination, id string, all bool, progress func(VerifyProgress)) ([]VerifyResult, error) {
	s := &verifyStream{progress: progress}
	err := c.Do(ctx, "POST", destinationPath(destination)+"/verify?progress=ndjson", struct {
		ID  string `json:"id,omitempty"`
		All bool   `json:"all,omitempty"`
	}{id, all}, s)
	return s.results, err
}

// verifyStream reads the lines of a streamed verification.
type verifyStream struct {
	progress func(VerifyProgress)
	results  []VerifyResult
}

func (s *verifyStream) decodeStream(r io.Reader) error {
	var done struct {
		Results *[]VerifyResult `json:"results"`
	}
	err := readProgress(r, "verification answer", s.progress, &done, func() bool { return done.Results != nil })
	if done.Results != nil {
		s.results = *done.Results
	}
	return err
}

// PauseArchive stops shipping journal segments to a destination; they pile
// up on the node meanwhile.
func (c *Client) PauseArchive(ctx context.Context, name string) (Destination, error) {
	var d Destination
	return d, c.Do(ctx, "POST", destinationPath(name)+"/archive/pause", nil, &d)
}

// ResumeArchive resumes shipping journal segments to a destination.
func (c *Client) ResumeArchive(ctx context.Context, name string) (Destination, error) {
	var d Destination
	return d, c.Do(ctx, "POST", destinationPath(name)+"/archive/resume", nil, &d)
}

// Backups

// RunBackup takes a backup to destination now. mode is auto ("" too), full
// or incremental. Without wait the server answers (202) with the RUNNING
// record as soon as the backup started: follow it with CurrentBackup. With
// wait it answers when the backup is done; give the client a Timeout long
// enough for that.
func (c *Client) RunBackup(ctx context.Context, destination, mode string, wait bool) (BackupRecord, error) {
	var r BackupRecord
	return r, c.Do(ctx, "POST", "/api/v1/backup/run", struct {
		Destination string `json:"destination"`
		Mode        string `json:"mode,omitempty"`
		Wait        bool   `json:"wait,omitempty"`
	}{destination, mode, wait}, &r)
}

// ResumedTimeline is the node's timeline after ResumeAfterRestore.
type ResumedTimeline struct {
	ID       uint32 `json:"id"`
	Restored *struct {
		From     string     `json:"from"`
		Target   string     `json:"target"`
		Index    uint64     `json:"index"`
		At       time.Time  `json:"at"`
		Released *time.Time `json:"released"`
		TakeOver bool       `json:"take_over"`
	} `json:"restored,omitempty"`
}

// ResumeAfterRestore ends the hold on a restored node's backups. With
// takeOver its timeline claims every destination and a full backup to each
// starts now; without, a destination another timeline writes to keeps
// refusing it.
func (c *Client) ResumeAfterRestore(ctx context.Context, takeOver bool) (ResumedTimeline, error) {
	var r ResumedTimeline
	return r, c.Do(ctx, "POST", "/api/v1/backup/resume-after-restore", map[string]bool{"take_over": takeOver}, &r)
}

// CurrentBackup returns the running backup and its progress, or nil when
// none runs.
func (c *Client) CurrentBackup(ctx context.Context) (*BackupProgress, error) {
	var r struct {
		Running *BackupProgress `json:"running"`
	}
	err := c.Do(ctx, "GET", "/api/v1/backup/current", nil, &r)
	return r.Running, err
}

// ListBackups lists backup records, newest first, of one destination or
// (destination "") of all.
func (c *Client) ListBackups(ctx context.Context, destination string) ([]BackupRecord, error) {
	v := url.Values{}
	if destination != "" {
		v.Set("destination", destination)
	}
	var r struct {
		Backups []BackupRecord `json:"backups"`
	}
	err := c.Do(ctx, "GET", "/api/v1/backup/backups"+encodeQuery(v), nil, &r)
	return r.Backups, err
}

// Schedules

// AddSchedule adds a schedule.
func (c *Client) AddSchedule(ctx context.Context, cfg ScheduleConfig) (Schedule, error) {
	var s Schedule
	return s, c.Do(ctx, "POST", "/api/v1/backup/schedules", cfg, &s)
}

// EditSchedule replaces a schedule's configuration with cfg (whose Name may
// be empty); its state, last run and last result stay. Start from
// Schedule.Config to change a few fields.
func (c *Client) EditSchedule(ctx context.Context, name string, cfg ScheduleConfig) (Schedule, error) {
	cfg.Name = name
	var s Schedule
	return s, c.Do(ctx, "PATCH", schedulePath(name), cfg, &s)
}

// ListSchedules lists schedules with their state and next run.
func (c *Client) ListSchedules(ctx context.Context) ([]Schedule, error) {
	var r struct {
		Schedules []Schedule `json:"schedules"`
	}
	err := c.Do(ctx, "GET", "/api/v1/backup/schedules", nil, &r)
	return r.Schedules, err
}

// DeleteSchedule deletes a schedule.
func (c *Client) DeleteSchedule(ctx context.Context, name string) error {
	return c.Do(ctx, "DELETE", schedulePath(name), nil, nil)
}

// PauseSchedule turns an ACTIVE schedule PAUSED.
func (c *Client) PauseSchedule(ctx context.Context, name string) (Schedule, error) {
	var s Schedule
	return s, c.Do(ctx, "POST", schedulePath(name)+"/pause", nil, &s)
}

// ResumeSchedule turns a PAUSED schedule ACTIVE.
func (c *Client) ResumeSchedule(ctx context.Context, name string) (Schedule, error) {
	var s Schedule
	return s, c.Do(ctx, "POST", schedulePath(name)+"/resume", nil, &s)
}

// Freeze

// Freeze writes a full dump under the server's <data-dir>/dump, then refuses
// writes (reads keep working) until Thaw or timeout, for a storage-level
// snapshot of the data dir. With timeout 0 no timeout is sent and the server
// uses its backup.freeze_timeout setting (default 5m).
func (c *Client) Freeze(ctx context.Context, timeout time.Duration) (FreezeStatus, error) {
	var body struct {
		Timeout string `json:"timeout,omitempty"`
	}
	if timeout > 0 {
		body.Timeout = timeout.String()
	}
	var s FreezeStatus
	return s, c.Do(ctx, "POST", "/api/v1/sys/freeze", body, &s)
}

// Thaw ends a freeze.
func (c *Client) Thaw(ctx context.Context) (FreezeStatus, error) {
	var s FreezeStatus
	return s, c.Do(ctx, "POST", "/api/v1/sys/thaw", nil, &s)
}

// RestorePoint is a named point in the history a restore can stop at.
type RestorePoint struct {
	Name      string    `json:"name"`
	Index     uint64    `json:"index"`
	Time      time.Time `json:"time"`
	CreatedBy string    `json:"created_by,omitempty"`
}

// CreateRestorePoint writes a named restore point (names are unique).
func (c *Client) CreateRestorePoint(ctx context.Context, name string) (RestorePoint, error) {
	var rp RestorePoint
	return rp, c.Do(ctx, "POST", "/api/v1/restore-points", map[string]string{"name": name}, &rp)
}

// RestorePoints lists restore points, oldest first.
func (c *Client) RestorePoints(ctx context.Context) ([]RestorePoint, error) {
	var r struct {
		RestorePoints []RestorePoint `json:"restore_points"`
	}
	err := c.Do(ctx, "GET", "/api/v1/restore-points", nil, &r)
	return r.RestorePoints, err
}

// Drill is the result of one restore drill (coffer backup drill).
type Drill struct {
	Time             time.Time `json:"time"`
	Result           string    `json:"result"` // OK or FAILED
	Reason           string    `json:"reason,omitempty"`
	Node             string    `json:"node,omitempty"`
	Full             string    `json:"full_backup,omitempty"`
	Files            int       `json:"files,omitempty"`
	Index            uint64    `json:"index,omitempty"`
	Records          int       `json:"records,omitempty"`
	Bytes            int64     `json:"bytes,omitempty"`
	Duration         float64   `json:"duration_seconds"`
	RecordsPerSecond float64   `json:"records_per_second,omitempty"`
	BytesPerSecond   float64   `json:"bytes_per_second,omitempty"`
}

// DrillView is a destination's drills: the newest, the newest successful,
// and the restore time the latter's speed predicts for the newest chain.
type DrillView struct {
	Last             *Drill  `json:"last,omitempty"`
	LastGood         *Drill  `json:"last_success,omitempty"`
	ChainSize        int64   `json:"chain_bytes,omitempty"`
	EstimatedRestore float64 `json:"estimated_restore_seconds,omitempty"`
}

// RunDrill runs a restore drill on a destination and records the result in
// its catalog. A drill that FAILED is a result, not an error.
func (c *Client) RunDrill(ctx context.Context, destination string) (Drill, error) {
	var r Drill
	err := c.Do(ctx, "POST", destinationPath(destination)+"/drill", nil, &r)
	return r, err
}
