package state

import (
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Backup configuration and the replicated record of backups. Secrets
// (SFTP passwords and keys, S3 secret keys, the recovery passphrase) are
// stored sealed by the barrier: the state never holds them in the clear.

// Destination is where backups go.
type Destination struct {
	Name string `json:"name"`
	Kind string `json:"kind"` // local, dir, sftp, s3
	Path string `json:"path,omitempty"`

	Host          string `json:"host,omitempty"`
	Port          int    `json:"port,omitempty"`
	User          string `json:"user,omitempty"`
	SealedSecret  []byte `json:"sealed_secret,omitempty"`  // SFTP password or S3 secret key
	SealedKey     []byte `json:"sealed_key,omitempty"`     // SFTP private key (PEM) generated for this destination
	PublicKey     string `json:"public_key,omitempty"`     // its authorized_keys line
	HostKey       string `json:"host_key,omitempty"`       // pinned SFTP server key
	SecretVersion uint64 `json:"secret_version,omitempty"` // barrier version of the sealed fields

	Endpoint  string `json:"endpoint,omitempty"`
	Bucket    string `json:"bucket,omitempty"`
	Prefix    string `json:"prefix,omitempty"`
	Region    string `json:"region,omitempty"`
	AccessKey string `json:"access_key,omitempty"`
	PathStyle bool   `json:"path_style,omitempty"`
	Insecure  bool   `json:"insecure,omitempty"`
	CACert    string `json:"ca_cert,omitempty"`

	Recipients    []string `json:"recipients,omitempty"` // age X25519; empty: the recovery passphrase
	Archiving     bool     `json:"archiving,omitempty"`
	Mirror        bool     `json:"mirror,omitempty"` // dir: synchronous mirror of the journal
	ArchivePaused bool     `json:"archive_paused,omitempty"`
	ArchivedTo    uint64   `json:"archived_to,omitempty"` // last journal index shipped
	KeepFulls     int      `json:"keep_fulls,omitempty"`
	KeepDays      int      `json:"keep_days,omitempty"`

	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
}

// DestinationDelete removes a destination's configuration (its backups stay).
type DestinationDelete struct {
	Name string `json:"name"`
}

// ArchiveProgress records how far a destination's archive reaches.
type ArchiveProgress struct {
	Name       string `json:"name"`
	ArchivedTo uint64 `json:"archived_to"`
}

// ArchivePause pauses or resumes archiving to a destination.
type ArchivePause struct {
	Name   string `json:"name"`
	Paused bool   `json:"paused"`
}

// BackupRecord is the cluster's record of one backup.
type BackupRecord struct {
	ID          string     `json:"id"`
	Destination string     `json:"destination"`
	Kind        string     `json:"kind"`   // full, incremental, segment
	Status      string     `json:"status"` // RUNNING, DONE, FAILED, DELETED
	Node        string     `json:"node"`
	File        string     `json:"file,omitempty"`
	BaseFullID  string     `json:"base_full_id,omitempty"`
	FirstIndex  uint64     `json:"first_index,omitempty"`
	LastIndex   uint64     `json:"last_index,omitempty"`
	Size        int64      `json:"size,omitempty"`
	SHA256      string     `json:"sha256,omitempty"`
	Recipients  []string   `json:"recipients,omitempty"`
	Timeline    uint32     `json:"timeline,omitempty"` // the timeline it belongs to (0: 1)
	Reason      string     `json:"reason,omitempty"`   // why FAILED, or what started it
	Started     time.Time  `json:"started"`
	Finished    *time.Time `json:"finished,omitempty"`
}

// Schedule runs backups.
type Schedule struct {
	Name        string     `json:"name"`
	Destination string     `json:"destination"`
	Kind        string     `json:"kind,omitempty"`  // backup ("": backup) or verify (a restore drill)
	Type        string     `json:"type"`            // once, periodic, cron
	At          *time.Time `json:"at,omitempty"`    // once
	Every       string     `json:"every,omitempty"` // periodic: Go duration, at least 1m
	Cron        string     `json:"cron,omitempty"`
	Mode        string     `json:"mode"`             // auto (full when the last full is 7 days old, else incremental), full, incremental
	Verify      bool       `json:"verify,omitempty"` // verify each backup after it is taken
	State       string     `json:"state"`            // ACTIVE, ONGOING, DONE, PAUSED
	LastRun     *time.Time `json:"last_run,omitempty"`
	LastResult  string     `json:"last_result,omitempty"`
	Created     time.Time  `json:"created"`
	Updated     time.Time  `json:"updated"`
}

// ScheduleDelete removes a schedule.
type ScheduleDelete struct {
	Name string `json:"name"`
}

// Recovery is the sealed recovery passphrase.
type Recovery struct {
	Generation uint64    `json:"generation"`
	Sealed     []byte    `json:"sealed"`
	Set        time.Time `json:"set"`
}

var (
	bucketDestinations = []byte("backup_destinations")
	bucketBackups      = []byte("backups")
	bucketSchedules    = []byte("backup_schedules")
	keyRecovery        = []byte("recovery_passphrase")
)

func init() {
	allBuckets = append(allBuckets, bucketDestinations, bucketBackups, bucketSchedules)
}

var destinationKinds = []string{"local", "dir", "sftp", "s3"}

func (s *Store) applyDestinationPut(tx *bolt.Tx, now time.Time, d Destination) (any, error) {
	if err := checkLen("destination name", d.Name, 1, 64); err != nil {
		return err, nil
	}
	if !slices.Contains(destinationKinds, d.Kind) {
		return bad("destination kind %q", d.Kind), nil
	}
	if d.KeepFulls < 0 || d.KeepDays < 0 || len(d.Recipients) > 16 {
		return bad("retention must not be negative; at most 16 recipients"), nil
	}
	b := tx.Bucket(bucketDestinations)
	old, ok, err := getJSON[Destination](b, []byte(d.Name))
	if err != nil {
		return nil, err
	}
	if ok {
		if old.Kind != d.Kind {
			return fmt.Errorf("destination %q is %s, cannot become %s: %w", d.Name, old.Kind, d.Kind, ErrConflict), nil
		}
		d.Created, d.ArchivedTo = old.Created, max(old.ArchivedTo, d.ArchivedTo)
	} else {
		d.Created = now
	}
	d.Updated = now
	return d, putJSON(b, []byte(d.Name), d)
}

func (s *Store) applyDestinationDelete(tx *bolt.Tx, c DestinationDelete) (any, error) {
	b := tx.Bucket(bucketDestinations)
	d, err := load[Destination](b, c.Name, fmt.Sprintf("destination %q", c.Name))
	if err != nil {
		return resultOrIO(err)
	}
	if d.Kind == "local" {
		return fmt.Errorf("the built-in LOCAL destination cannot be deleted: %w", ErrConflict), nil
	}
	var using []string
	tx.Bucket(bucketSchedules).ForEach(func(k, v []byte) error { // #nosec G104 -- the function returns nil, and ForEach fails only with its error
		var sc Schedule
		if decodeJSON(v, &sc) == nil && sc.Destination == c.Name {
			using = append(using, sc.Name)
		}
		return nil
	})
	if len(using) > 0 {
		return fmt.Errorf("destination %q is used by schedules %v: delete them first: %w", c.Name, using, ErrConflict), nil
	}
	return nil, b.Delete([]byte(c.Name))
}

func (s *Store) applyArchiveProgress(tx *bolt.Tx, now time.Time, c ArchiveProgress) (any, error) {
	b := tx.Bucket(bucketDestinations)
	d, err := load[Destination](b, c.Name, fmt.Sprintf("destination %q", c.Name))
	if err != nil {
		return resultOrIO(err)
	}
	if c.ArchivedTo <= d.ArchivedTo {
		return d, nil // a late or repeated report never moves the mark back
	}
	d.ArchivedTo = c.ArchivedTo
	return d, putJSON(b, []byte(d.Name), d)
}

func (s *Store) applyArchivePause(tx *bolt.Tx, now time.Time, c ArchivePause) (any, error) {
	b := tx.Bucket(bucketDestinations)
	d, err := load[Destination](b, c.Name, fmt.Sprintf("destination %q", c.Name))
	if err != nil {
		return resultOrIO(err)
	}
	d.ArchivePaused, d.Updated = c.Paused, now
	return d, putJSON(b, []byte(d.Name), d)
}

var backupStatuses = []string{"RUNNING", "DONE", "FAILED", "DELETED"}

func (s *Store) applyBackupRecord(tx *bolt.Tx, r BackupRecord) (any, error) {
	if err := checkLen("backup id", r.ID, 1, 128); err != nil {
		return err, nil
	}
	if !slices.Contains(backupStatuses, r.Status) {
		return bad("backup status %q", r.Status), nil
	}
	if len(r.Reason) > maxTextBytes {
		return bad("reason longer than %d bytes", maxTextBytes), nil
	}
	b := tx.Bucket(bucketBackups)
	if old, ok, err := getJSON[BackupRecord](b, []byte(r.ID)); err != nil {
		return nil, err
	} else if ok && old.Status != "RUNNING" && r.Status == "RUNNING" {
		return fmt.Errorf("backup %s is %s: %w", r.ID, old.Status, ErrConflict), nil
	}
	return r, putJSON(b, []byte(r.ID), r)
}

var scheduleTypes = []string{"once", "periodic", "cron"}
var scheduleStates = []string{"ACTIVE", "ONGOING", "DONE", "PAUSED"}

func (s *Store) applySchedulePut(tx *bolt.Tx, now time.Time, sc Schedule) (any, error) {
	if err := checkLen("schedule name", sc.Name, 1, 64); err != nil {
		return err, nil
	}
	if !slices.Contains(scheduleTypes, sc.Type) || !slices.Contains(scheduleStates, sc.State) {
		return bad("schedule type %q / state %q", sc.Type, sc.State), nil
	}
	if tx.Bucket(bucketDestinations).Get([]byte(sc.Destination)) == nil {
		return fmt.Errorf("destination %q: %w", sc.Destination, ErrNotFound), nil
	}
	b := tx.Bucket(bucketSchedules)
	old, ok, err := getJSON[Schedule](b, []byte(sc.Name))
	if err != nil {
		return nil, err
	}
	sc.Created = now
	if ok {
		sc.Created = old.Created
	}
	sc.Updated = now
	return sc, putJSON(b, []byte(sc.Name), sc)
}

func (s *Store) applyScheduleDelete(tx *bolt.Tx, c ScheduleDelete) (any, error) {
	b := tx.Bucket(bucketSchedules)
	if b.Get([]byte(c.Name)) == nil {
		return fmt.Errorf("schedule %q: %w", c.Name, ErrNotFound), nil
	}
	return nil, b.Delete([]byte(c.Name))
}

func (s *Store) applyRecovery(tx *bolt.Tx, now time.Time, r Recovery) (any, error) {
	if len(r.Sealed) == 0 || len(r.Sealed) > 1024 {
		return bad("sealed recovery passphrase must be 1 to 1024 bytes"), nil
	}
	meta := tx.Bucket(bucketMeta)
	old, ok, err := getJSON[Recovery](meta, keyRecovery)
	if err != nil {
		return nil, err
	}
	if ok && r.Generation != old.Generation+1 || !ok && r.Generation != 1 {
		return fmt.Errorf("recovery passphrase generation %d is not the next one: %w", r.Generation, ErrConflict), nil
	}
	r.Set = now
	return r, putJSON(meta, keyRecovery, r)
}

// Destination returns a backup destination.
func (s *Store) Destination(name string) (Destination, error) {
	return viewJSON[Destination](s, bucketDestinations, []byte(name), fmt.Sprintf("destination %q", name))
}

// Destinations lists backup destinations by name.
func (s *Store) Destinations() ([]Destination, error) {
	return listJSON[Destination](s, bucketDestinations)
}

// Backup returns a backup record.
func (s *Store) Backup(id string) (BackupRecord, error) {
	return viewJSON[BackupRecord](s, bucketBackups, []byte(id), fmt.Sprintf("backup %s", id))
}

// Backups lists backup records in id order (ids sort by time).
func (s *Store) Backups() ([]BackupRecord, error) { return listJSON[BackupRecord](s, bucketBackups) }

// Schedule returns a schedule.
func (s *Store) Schedule(name string) (Schedule, error) {
	return viewJSON[Schedule](s, bucketSchedules, []byte(name), fmt.Sprintf("schedule %q", name))
}

// Schedules lists schedules by name.
func (s *Store) Schedules() ([]Schedule, error) { return listJSON[Schedule](s, bucketSchedules) }

// Recovery returns the sealed recovery passphrase (ErrNotFound if none is set).
func (s *Store) Recovery() (Recovery, error) {
	return viewJSON[Recovery](s, bucketMeta, keyRecovery, "recovery passphrase")
}

// RestorePoint is a named point in the history: the raft index of its own
// command, which is also a record in the journal (type TypeRestorePoint), so
// a restore can stop exactly there.
type RestorePoint struct {
	Name      string    `json:"name"`
	Index     uint64    `json:"index"`
	Time      time.Time `json:"time"`
	CreatedBy string    `json:"created_by,omitempty"`
}

var bucketRestorePoints = []byte("restore_points")

func init() { allBuckets = append(allBuckets, bucketRestorePoints) }

func (s *Store) applyRestorePoint(tx *bolt.Tx, index uint64, now time.Time, rp RestorePoint) (any, error) {
	if err := checkLen("restore point name", rp.Name, 1, 64); err != nil {
		return err, nil
	}
	if len(rp.CreatedBy) > maxNameBytes {
		return bad("created_by longer than %d bytes", maxNameBytes), nil
	}
	b := tx.Bucket(bucketRestorePoints)
	if old, ok, err := getJSON[RestorePoint](b, []byte(rp.Name)); err != nil {
		return nil, err
	} else if ok {
		return fmt.Errorf("restore point %q (index %d, %s): %w", rp.Name, old.Index, old.Time.Format(time.RFC3339), ErrExists), nil
	}
	rp.Index, rp.Time = index, now
	return rp, putJSON(b, []byte(rp.Name), rp)
}

// RestorePoints lists restore points by name.
func (s *Store) RestorePoints() ([]RestorePoint, error) {
	return listJSON[RestorePoint](s, bucketRestorePoints)
}
