package service

import (
	"context"

	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"filippo.io/age"

	"github.com/coffer-kms/coffer/internal/backup"
	"github.com/coffer-kms/coffer/internal/backup/bundle"
	"github.com/coffer-kms/coffer/internal/backup/dest"
	"github.com/coffer-kms/coffer/internal/datadir"
	"github.com/coffer-kms/coffer/internal/fsutil"
	"github.com/coffer-kms/coffer/internal/journal"
	"github.com/coffer-kms/coffer/internal/state"
)

// LocalDestination is the built-in destination under the data dir.
const LocalDestination = "LOCAL"

// DestinationConfig is a destination as callers create, edit and see it.
// Secrets are write-only: reads show whether one is set, never its value.
type DestinationConfig struct {
	Name string `json:"name"`
	Kind string `json:"kind" doc:"dir, sftp or s3 (LOCAL is built in)"`
	Path string `json:"path,omitempty" doc:"dir: directory; sftp: remote directory"`

	Host     string `json:"host,omitempty"`
	Port     int    `json:"port,omitempty" doc:"sftp: default 22"`
	User     string `json:"user,omitempty"`
	Password string `json:"password,omitempty" doc:"sftp password (write-only); empty: key authentication with a key pair Coffer generates"`

	Endpoint  string `json:"endpoint,omitempty" doc:"s3: host:port"`
	Bucket    string `json:"bucket,omitempty"`
	Prefix    string `json:"prefix,omitempty"`
	Region    string `json:"region,omitempty"`
	AccessKey string `json:"access_key,omitempty"`
	SecretKey string `json:"secret_key,omitempty" doc:"write-only"`
	PathStyle bool   `json:"path_style,omitempty"`
	Insecure  bool   `json:"insecure,omitempty" doc:"s3 over plain http (tests only)"`
	CACert    string `json:"ca_cert,omitempty" doc:"PEM CA of the S3 endpoint"`

	Recipients []string `json:"recipients,omitempty" doc:"age X25519 public keys; empty: the recovery passphrase"`
	Archiving  bool     `json:"archiving,omitempty" doc:"ship every closed journal segment here"`
	Mirror     bool     `json:"mirror,omitempty" doc:"dir only: write every journal record here too, fsynced before the write is acknowledged (at most one destination)"`
	KeepFulls  int      `json:"keep_fulls,omitempty"`
	KeepDays   int      `json:"keep_days,omitempty"`
}

// DestinationView is what reads return.
type DestinationView struct {
	DestinationConfig
	Location      string     `json:"location"`
	SecretSet     bool       `json:"secret_set"`
	PublicKey     string     `json:"public_key,omitempty" doc:"sftp: paste into the server's authorized_keys"`
	HostKey       string     `json:"host_key,omitempty" doc:"sftp: pinned server key"`
	ArchivePaused bool       `json:"archive_paused,omitempty"`
	ArchivedTo    uint64     `json:"archived_to,omitempty"`
	Pending       int        `json:"pending_segments,omitempty"`
	ArchiveError  string     `json:"archive_error,omitempty"`
	Usage         *Usage     `json:"usage,omitempty"`
	Drills        *DrillView `json:"drills,omitempty"`
	Note          string     `json:"note,omitempty"`
	Created       time.Time  `json:"created"`
	Updated       time.Time  `json:"updated"`
}

// Usage of a destination's filesystem.
type Usage struct {
	Total       uint64  `json:"total_bytes"`
	Free        uint64  `json:"free_bytes"`
	UsedPercent float64 `json:"used_percent"`
	Level       string  `json:"level" doc:"ok, warning (at or above 80 % used) or error (at or above 95 %)"`
}

func (s *Backups) secretID(name, what string) string { return "destination/" + name + "/" + what }

// destinationRecord turns a request into the stored form, sealing secrets.
func (s *Backups) destinationRecord(c DestinationConfig, old *state.Destination) (state.Destination, error) {
	if err := ValidLabel("destination", c.Name); err != nil {
		return state.Destination{}, err
	}
	if strings.EqualFold(c.Name, LocalDestination) {
		return state.Destination{}, fmt.Errorf("%w: %s is the built-in destination", ErrConflict, LocalDestination)
	}
	for _, r := range c.Recipients {
		if _, err := age.ParseX25519Recipient(r); err != nil {
			return state.Destination{}, fmt.Errorf("%w: recipient %q is not an age X25519 public key (age1...): %v", ErrInvalid, r, err)
		}
	}
	if c.KeepFulls < 0 || c.KeepDays < 0 {
		return state.Destination{}, fmt.Errorf("%w: keep_fulls and keep_days must not be negative", ErrInvalid)
	}
	d := state.Destination{Name: c.Name, Kind: c.Kind, Path: c.Path, Host: c.Host, Port: c.Port, User: c.User,
		Endpoint: c.Endpoint, Bucket: c.Bucket, Prefix: c.Prefix, Region: c.Region, AccessKey: c.AccessKey,
		PathStyle: c.PathStyle, Insecure: c.Insecure, CACert: c.CACert, Recipients: c.Recipients,
		Archiving: c.Archiving, Mirror: c.Mirror, KeepFulls: c.KeepFulls, KeepDays: c.KeepDays}
	if c.Mirror && c.Kind != "dir" {
		return state.Destination{}, fmt.Errorf("%w: only a dir destination can mirror the journal", ErrInvalid)
	}
	if c.Mirror {
		ds, _ := s.st.Destinations()
		for _, o := range ds {
			if o.Mirror && o.Name != c.Name {
				return state.Destination{}, fmt.Errorf("%w: destination %q already mirrors the journal (at most one)", ErrConflict, o.Name)
			}
		}
	}
	version := uint64(1)
	if old != nil {
		version = old.SecretVersion + 1
		d.ArchivePaused, d.ArchivedTo, d.HostKey, d.PublicKey = old.ArchivePaused, old.ArchivedTo, old.HostKey, old.PublicKey
		if old.Host != c.Host || (old.Port != c.Port && c.Port != 0) {
			d.HostKey = "" // another server: pinned again on first use
		}
	}
	d.SecretVersion = version
	seal := func(what string, v []byte) ([]byte, error) {
		return s.bar.EncryptValue(s.secretID(c.Name, what), version, v)
	}
	reseal := func(what string, sealed []byte, oldVersion uint64) ([]byte, error) {
		if len(sealed) == 0 {
			return nil, nil
		}
		pt, err := s.bar.DecryptValue(s.secretID(c.Name, what), oldVersion, sealed)
		if err != nil {
			return nil, err
		}
		defer clear(pt)
		return seal(what, pt)
	}
	var err error
	switch c.Kind {
	case "dir":
		if !filepath.IsAbs(c.Path) {
			return d, fmt.Errorf("%w: a dir destination needs an absolute path", ErrInvalid)
		}
	case "sftp":
		if c.Host == "" || c.User == "" || c.Path == "" {
			return d, fmt.Errorf("%w: an sftp destination needs host, user and path", ErrInvalid)
		}
		if d.Port == 0 {
			d.Port = 22
		}
		switch {
		case c.Password != "":
			d.SealedSecret, err = seal("secret", []byte(c.Password))
		case old != nil && len(old.SealedSecret) > 0:
			d.SealedSecret, err = reseal("secret", old.SealedSecret, old.SecretVersion)
		}
		if err != nil {
			return d, err
		}
		if old != nil && len(old.SealedKey) > 0 {
			d.SealedKey, err = reseal("key", old.SealedKey, old.SecretVersion)
		} else if len(d.SealedSecret) == 0 {
			priv, pub, gerr := dest.GenerateKeyPair()
			if gerr != nil {
				return d, gerr
			}
			d.SealedKey, err = seal("key", priv)
			clear(priv)
			d.PublicKey = pub
		}
		if err != nil {
			return d, err
		}
	case "s3":
		if c.Endpoint == "" || c.Bucket == "" || c.AccessKey == "" {
			return d, fmt.Errorf("%w: an s3 destination needs endpoint, bucket, access_key and secret_key", ErrInvalid)
		}
		switch {
		case c.SecretKey != "":
			d.SealedSecret, err = seal("secret", []byte(c.SecretKey))
		case old != nil && len(old.SealedSecret) > 0:
			d.SealedSecret, err = reseal("secret", old.SealedSecret, old.SecretVersion)
		default:
			return d, fmt.Errorf("%w: an s3 destination needs secret_key", ErrInvalid)
		}
		if err != nil {
			return d, err
		}
	default:
		return d, fmt.Errorf("%w: destination kind %q: use dir, sftp or s3", ErrInvalid, c.Kind)
	}
	return d, nil
}

// openDest opens a stored destination (lifecycle read-locked by the caller).
// onHostKey is called with an SFTP server key seen for the first time.
func (s *Backups) openDest(ctx context.Context, d state.Destination, onHostKey func(string)) (dest.Destination, error) {
	unseal := func(what string, sealed []byte) ([]byte, error) {
		if len(sealed) == 0 {
			return nil, nil
		}
		return s.bar.DecryptValue(s.secretID(d.Name, what), d.SecretVersion, sealed)
	}
	switch d.Kind {
	case "local":
		return dest.NewDir(datadir.LocalBackupDir(s.cfg.DataDir))
	case "dir":
		return dest.NewDir(d.Path)
	case "sftp":
		pw, err := unseal("secret", d.SealedSecret)
		if err != nil {
			return nil, err
		}
		key, err := unseal("key", d.SealedKey)
		if err != nil {
			return nil, err
		}
		defer clear(key)
		return dest.NewSFTP(ctx, dest.SFTPConfig{Host: d.Host, Port: d.Port, User: d.User, Password: string(pw), PrivateKeyPEM: key,
			Path: d.Path, KnownHostKey: d.HostKey, OnHostKey: onHostKey, Timeout: 30 * time.Second})
	case "s3":
		sk, err := unseal("secret", d.SealedSecret)
		if err != nil {
			return nil, err
		}
		return dest.NewS3(ctx, dest.S3Config{Endpoint: d.Endpoint, Bucket: d.Bucket, Prefix: d.Prefix, Region: d.Region,
			AccessKey: d.AccessKey, SecretKey: string(sk), PathStyle: d.PathStyle, Insecure: d.Insecure, CACertPEM: []byte(d.CACert)})
	}
	return nil, fmt.Errorf("destination %q: unknown kind %q", d.Name, d.Kind)
}

// ensureLocal creates the LOCAL destination record once.
func (s *Backups) ensureLocal(ctx context.Context) error {
	if _, err := s.st.Destination(LocalDestination); err == nil {
		return nil
	}
	_, err := s.applyResult(ctx, state.TypeDestinationPut, state.Destination{Name: LocalDestination, Kind: "local"})
	return err
}

// AddDestination validates and stores a destination (system administrators).
// Validation writes, reads back and deletes a probe file and claims (or
// checks) the destination's catalog for this cluster.
func (s *Backups) AddDestination(ctx context.Context, c DestinationConfig) (DestinationView, error) {
	return s.putDestination(ctx, c, false)
}

// EditDestination changes a destination; empty secrets keep the old ones.
func (s *Backups) EditDestination(ctx context.Context, c DestinationConfig) (DestinationView, error) {
	return s.putDestination(ctx, c, true)
}

func (s *Backups) putDestination(ctx context.Context, c DestinationConfig, edit bool) (DestinationView, error) {
	note(ctx, "destination:"+c.Name)
	if _, err := requireRole(ctx, RoleSystemAdmin, "configuring backup destinations"); err != nil {
		return DestinationView{}, err
	}
	unlock, err := s.openForRead()
	if err != nil {
		return DestinationView{}, err
	}
	defer unlock()
	var old *state.Destination
	if o, err := s.st.Destination(c.Name); err == nil {
		if !edit {
			return DestinationView{}, fmt.Errorf("%w: destination %q exists (edit it instead)", ErrConflict, c.Name)
		}
		old = &o
	} else if edit {
		return DestinationView{}, mapStateErr(err)
	}
	if len(c.Recipients) == 0 {
		if _, err := s.st.Recovery(); err != nil {
			return DestinationView{}, fmt.Errorf("%w: set a recovery passphrase first (coffer backup recovery-passphrase set), or give age recipients", ErrConflict)
		}
	}
	d, err := s.destinationRecord(c, old)
	if err != nil {
		return DestinationView{}, err
	}
	// An SFTP key Coffer just generated cannot be in authorized_keys yet:
	// the destination is stored anyway (its host key pinned by the
	// handshake) and the caller is told to install the public key and test.
	newKey := d.Kind == "sftp" && len(d.SealedSecret) == 0 && (old == nil || len(old.SealedKey) == 0)
	var pending string
	if err := s.probeRaw(ctx, &d); err != nil {
		if !newKey || !errors.Is(err, dest.ErrAuth) {
			return DestinationView{}, probeErr(err)
		}
		pending = fmt.Sprintf("not usable yet: add the public key to ~/.ssh/authorized_keys of %s on %s, then run coffer backup destination test %s", d.User, d.Host, d.Name)
	}
	res, err := s.applyResult(ctx, state.TypeDestinationPut, d)
	if err != nil {
		return DestinationView{}, fmt.Errorf("store destination %q: %w", c.Name, err)
	}
	stored, _ := res.(state.Destination)
	if err := s.attachMirrorLocked(); err != nil {
		pending = strings.TrimSpace(pending + " journal mirror not attached: " + err.Error())
	}
	v := s.viewDestination(ctx, stored, false)
	v.Note = pending
	return v, nil
}

// probe validates a destination: reachable, writable, and not another
// cluster's. An SFTP host key seen for the first time is pinned into d.
func (s *Backups) probe(ctx context.Context, d *state.Destination) error {
	return probeErr(s.probeRaw(ctx, d))
}

// ProbeTimeout bounds the check of a destination when it is added, edited
// or tested: well within the CLI's default request timeout (60s), so that
// the operator sees the probe's error rather than an unknown outcome.
var ProbeTimeout = 30 * time.Second

func (s *Backups) probeRaw(ctx context.Context, d *state.Destination) error {
	pctx, cancel := context.WithTimeout(ctx, ProbeTimeout)
	defer cancel()
	err := s.probeWithin(pctx, d)
	if err != nil && pctx.Err() != nil && ctx.Err() == nil {
		return fmt.Errorf("%w: destination %s gave no answer within %s: %v", dest.ErrUnreachable, d.Name, ProbeTimeout, err)
	}
	return err
}

func (s *Backups) probeWithin(pctx context.Context, d *state.Destination) error {
	dd, err := s.openDest(pctx, *d, func(k string) { d.HostKey = k })
	if err != nil {
		return err
	}
	defer dd.Close()
	if err := dest.Test(pctx, dd); err != nil {
		return err
	}
	cat, err := backup.LoadNamedCatalog(pctx, dd, d.Name)
	if err != nil {
		return err
	}
	fresh := cat.ClusterID == ""
	if err := cat.Claim(s.st.ClusterID(), dd.Location()); err != nil {
		return err
	}
	if fresh {
		// Claim it now: another cluster is refused even before our first
		// backup, and so is another timeline of this one.
		cat.Writer = s.st.Timeline().ID
		return backup.SaveCatalog(pctx, dd, cat)
	}
	return nil
}

func probeErr(err error) error {
	if errors.Is(err, backup.ErrForeign) || errors.Is(err, backup.ErrCatalogCorrupt) || errors.Is(err, backup.ErrCatalogNewer) {
		return fmt.Errorf("%w: %v", ErrConflict, err)
	}
	return destErr(err)
}

// destErr maps destination failures for transports: configuration problems
// are the caller's to fix (400/409), an unreachable server is 503.
func destErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, dest.ErrUnreachable):
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	case errors.Is(err, dest.ErrNoSpace):
		return fmt.Errorf("%w: %v", ErrUnavailable, err) // the destination's disk, not the request
	case errors.Is(err, dest.ErrAuth), errors.Is(err, dest.ErrPermission), errors.Is(err, dest.ErrBucketMissing),
		errors.Is(err, dest.ErrHostKeyChanged):
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return err
}

func (s *Backups) viewDestination(ctx context.Context, d state.Destination, withUsage bool) DestinationView {
	v := DestinationView{DestinationConfig: DestinationConfig{Name: d.Name, Kind: d.Kind, Path: d.Path, Host: d.Host, Port: d.Port, User: d.User,
		Endpoint: d.Endpoint, Bucket: d.Bucket, Prefix: d.Prefix, Region: d.Region, AccessKey: d.AccessKey, PathStyle: d.PathStyle,
		Insecure: d.Insecure, CACert: d.CACert, Recipients: d.Recipients, Archiving: d.Archiving, Mirror: d.Mirror, KeepFulls: d.KeepFulls, KeepDays: d.KeepDays},
		SecretSet: len(d.SealedSecret) > 0, PublicKey: d.PublicKey, HostKey: d.HostKey, ArchivePaused: d.ArchivePaused,
		ArchivedTo: d.ArchivedTo, Created: d.Created, Updated: d.Updated}
	if d.Kind == "local" {
		v.Path = datadir.LocalBackupDir(s.cfg.DataDir)
		v.KeepFulls = 1
	}
	if dv, ok := s.drills.get(d.Name); ok {
		v.Drills = &dv
	}
	if m := s.backups; m != nil {
		v.Pending = m.Pending()[d.Name]
		v.ArchiveError = m.ArchiveErrors()[d.Name]
	}
	if withUsage && (d.Kind == "local" || d.Kind == "dir") {
		if dd, err := s.openDest(ctx, d, nil); err == nil {
			v.Location = dd.Location()
			if u, ok, err := dd.Usage(ctx); err == nil && ok && u.Total > 0 {
				pct := 100 * float64(u.Total-u.Free) / float64(u.Total)
				v.Usage = &Usage{Total: u.Total, Free: u.Free, UsedPercent: pct, Level: DiskLevel(pct)}
			}
			dd.Close() // #nosec G104 -- opened only to read its location and usage: nothing was written to it
		}
	}
	return v
}

// ListDestinations lists destinations with their archive state and disk use.
func (s *Backups) ListDestinations(ctx context.Context) ([]DestinationView, error) {
	if _, err := requireRole(ctx, RoleSystemAdmin, "listing backup destinations"); err != nil {
		return nil, err
	}
	unlock, err := s.openForRead()
	if err != nil {
		return nil, err
	}
	ds, err := s.st.Destinations()
	// Disk use (statfs) is measured without the lifecycle lock: a hung
	// mount must not hold up a seal, and every request behind it.
	unlock()
	if err != nil {
		return nil, err
	}
	out := []DestinationView{}
	for _, d := range ds {
		out = append(out, s.viewDestination(ctx, d, true))
	}
	return out, nil
}

// DeleteDestination removes a destination's configuration; its backups stay.
func (s *Backups) DeleteDestination(ctx context.Context, name string) error {
	note(ctx, "destination:"+name)
	if _, err := requireRole(ctx, RoleSystemAdmin, "deleting a backup destination"); err != nil {
		return err
	}
	unlock, err := s.openForRead()
	if err != nil {
		return err
	}
	defer unlock()
	if _, err := s.applyResult(ctx, state.TypeDestinationDelete, state.DestinationDelete{Name: name}); err != nil {
		return err
	}
	return s.attachMirrorLocked() // a deleted mirroring destination stops mirroring now
}

// TestDestination runs the probe again on a stored destination.
func (s *Backups) TestDestination(ctx context.Context, name string) error {
	note(ctx, "destination:"+name)
	if _, err := requireRole(ctx, RoleSystemAdmin, "testing a backup destination"); err != nil {
		return err
	}
	unlock, err := s.openForRead()
	if err != nil {
		return err
	}
	defer unlock()
	d, err := s.st.Destination(name)
	if err != nil {
		return mapStateErr(err)
	}
	pinned := d.HostKey
	if err := s.probe(ctx, &d); err != nil {
		return err
	}
	if d.HostKey != pinned {
		return s.pinHostKeyLocked(ctx, name, d.HostKey)
	}
	return nil
}

// pinHostKeyLocked records an SFTP server key seen for the first time
// (trust on first use); later connections refuse any other key.
func (s *Backups) pinHostKeyLocked(ctx context.Context, name, key string) error {
	d, err := s.st.Destination(name)
	if err != nil {
		return mapStateErr(err)
	}
	if d.HostKey != "" {
		return nil
	}
	d.HostKey = key
	if _, err := s.applyResult(ctx, state.TypeDestinationPut, d); err != nil {
		return fmt.Errorf("pin the host key of %q: %w", name, err)
	}
	s.log.Info("SFTP host key pinned", "destination", name, "key", key)
	return nil
}

// BackupRequest asks for a backup now.
type BackupRequest struct {
	Destination string `json:"destination"`
	Mode        string `json:"mode,omitempty" doc:"auto (default), full or incremental"`
	Wait        bool   `json:"wait,omitempty" doc:"answer when the backup is done (default: as soon as it started; follow it with GET /api/v1/backup/current)"`
}

// RunBackup takes a backup now (system administrators). Only one runs at a
// time; a second request gets ErrConflict "backup in progress". Without
// Wait it returns the RUNNING record as soon as the backup started.
func (s *Backups) RunBackup(ctx context.Context, req BackupRequest) (state.BackupRecord, error) {
	note(ctx, "destination:"+req.Destination)
	if _, err := requireRole(ctx, RoleSystemAdmin, "running a backup"); err != nil {
		return state.BackupRecord{}, err
	}
	if err := s.checkOpen(); err != nil {
		return state.BackupRecord{}, err
	}
	s.mu.RLock()
	m, bctx, w := s.backups, s.backupCtx, s.workers
	s.mu.RUnlock()
	if m == nil || bctx == nil {
		return state.BackupRecord{}, ErrSealed
	}
	var rec state.BackupRecord
	var err error
	type result struct {
		rec state.BackupRecord
		err error
	}
	started := make(chan state.BackupRecord, 1)
	done := make(chan result, 1)
	// The backup goes on after the request, waited for or not (a client
	// that stops waiting stops following it): the open owns it, and a
	// seal stops it and waits for it.
	if !w.Go("backup on request", func(context.Context) {
		r, err := m.Backup(bctx, backup.Request{Destination: req.Destination, Mode: req.Mode, Reason: "on request",
			OnStart: func(r state.BackupRecord) { started <- r }})
		done <- result{r, err}
	}) {
		return state.BackupRecord{}, ErrSealed
	}
	if req.Wait {
	wait:
		for {
			select {
			case rec = <-started:
			case r := <-done:
				rec, err = r.rec, r.err
				break wait
			case <-ctx.Done():
				if rec.ID == "" {
					// Started by now, or about to be: the error names the
					// backup that goes on when its record comes soon.
					select {
					case rec = <-started:
					case r := <-done:
						rec, err = r.rec, r.err
						break wait
					case <-time.After(startNameWait):
					}
				}
				if rec.ID == "" {
					err = fmt.Errorf("stopped waiting for the backup to %s, which goes on (coffer backup list shows it): %w", req.Destination, ctx.Err())
				} else {
					err = fmt.Errorf("stopped waiting for backup %s to %s, which goes on (coffer backup list shows it): %w", rec.ID, req.Destination, ctx.Err())
				}
				break wait
			}
		}
	} else {
		select {
		case rec = <-started:
		case r := <-done:
			err = r.err
		}
	}
	note(ctx, "backup:"+rec.ID)
	switch {
	case errors.Is(err, backup.ErrFrozen):
		return rec, fmt.Errorf("%w: %v", ErrWriteUnavailable, err)
	case errors.Is(err, backup.ErrBusy):
		return rec, fmt.Errorf("%w: %v", ErrConflict, err)
	case errors.Is(err, backup.ErrNoBase), errors.Is(err, backup.ErrForeign), errors.Is(err, backup.ErrCatalogCorrupt), errors.Is(err, backup.ErrCatalogNewer), errors.Is(err, backup.ErrNoJournal),
		errors.Is(err, backup.ErrHeld), errors.Is(err, backup.ErrOtherWriter):
		return rec, fmt.Errorf("%w: %v", ErrConflict, err)
	case err != nil:
		return rec, destErr(err)
	}
	return rec, nil
}

// startNameWait bounds how long a backup request that ended before its
// backup started waits for the backup's record, to name it in its error.
const startNameWait = 5 * time.Second

// ListBackups lists the cluster's backup records, newest first.
func (s *Backups) ListBackups(ctx context.Context, destination string) ([]state.BackupRecord, error) {
	if _, err := requireRole(ctx, RoleSystemAdmin, "listing backups"); err != nil {
		return nil, err
	}
	all, err := s.st.Backups()
	if err != nil {
		return nil, err
	}
	out := []state.BackupRecord{}
	for _, r := range all {
		if destination == "" || r.Destination == destination {
			out = append(out, r)
		}
	}
	// Newest first (ids sort by second only).
	slices.SortStableFunc(out, func(a, b state.BackupRecord) int { return b.Started.Compare(a.Started) })
	return out, nil
}

// RebuildCatalog rewrites a destination's catalog from the manifests.
func (s *Backups) RebuildCatalog(ctx context.Context, name string) (int, []string, error) {
	note(ctx, "destination:"+name)
	if _, err := requireRole(ctx, RoleSystemAdmin, "rebuilding a catalog"); err != nil {
		return 0, nil, err
	}
	unlock, err := s.openForRead()
	if err != nil {
		return 0, nil, err
	}
	d, err := s.st.Destination(name)
	if err != nil {
		unlock()
		return 0, nil, mapStateErr(err)
	}
	if err := s.heldErr(name); err != nil {
		unlock()
		return 0, nil, fmt.Errorf("%w: %v", ErrConflict, err)
	}
	dd, err := s.openDest(ctx, d, nil)
	bm, clusterID := s.backups, s.st.ClusterID()
	// Not held across the rebuild: a running backup takes the backup lock
	// and then this one, so waiting for the backup lock while holding this
	// one would deadlock as soon as a seal or key change queued between.
	unlock()
	if err != nil {
		return 0, nil, destErr(err)
	}
	defer dd.Close()
	var c backup.Catalog
	var skipped []string
	rebuild := func() error {
		c, skipped, err = backup.Rebuild(ctx, dd, clusterID)
		if err == nil {
			// The rebuilt catalog has no drills or verifications (manifests
			// do not carry them): listings and status say what it says. Under
			// the catalog's lock, as drills and verifications record theirs.
			s.drills.set(name, c)
		}
		return err
	}
	if bm != nil {
		err = bm.Exclusive(rebuild)
	} else {
		err = rebuild()
	}
	if errors.Is(err, backup.ErrForeign) {
		return 0, skipped, fmt.Errorf("%w: %v", ErrConflict, err)
	}
	return len(c.Entries), skipped, err
}

// --- backup.Host, for the manager -----------------------------------------

type backupHost struct{ s *Backups }

func (h backupHost) ClusterID() string                      { return h.s.st.ClusterID() }
func (h backupHost) NodeID() string                         { return h.s.nodeID }
func (h backupHost) Software() string                       { return "coffer " + Version }
func (h backupHost) Timeline() state.Timeline               { return h.s.st.Timeline() }
func (h backupHost) Backups() ([]state.BackupRecord, error) { return h.s.st.Backups() }
func (h backupHost) IsLeader() bool                         { return !h.s.clustered() || h.s.node.IsLeader() }
func (h backupHost) JournalDir() string {
	return datadir.JournalDir(h.s.cfg.DataDir)
}
func (h backupHost) WriteState(open func(p state.BackupPoint, size int64) (io.Writer, error)) (state.BackupPoint, error) {
	return h.s.st.WriteBackup(open)
}
func (h backupHost) ExportKeys() ([]byte, error) {
	h.s.mu.RLock()
	defer h.s.mu.RUnlock()
	if h.s.ring == nil {
		return nil, ErrSealed
	}
	return h.s.ring.ExportMEKs()
}
func (h backupHost) CAFiles() (string, string) { return h.s.caFiles() }
func (h backupHost) RotateJournal() (uint64, error) {
	h.s.mu.RLock()
	defer h.s.mu.RUnlock()
	if h.s.jr == nil {
		return 0, ErrSealed
	}
	// The closed segment's own last index: records written after the
	// rotation are in the new open segment and belong to the next backup.
	seg, err := h.s.jr.Rotate()
	if err != nil {
		return 0, fmt.Errorf("rotate the journal: %w", err)
	}
	if seg.Records == 0 {
		return seg.Prev, nil // nothing new since the last closed segment
	}
	return seg.LastIndex, nil
}
func (h backupHost) OpenTarget(ctx context.Context, name string) (*backup.Target, error) {
	if err := h.s.ensureLocal(ctx); err != nil && name == LocalDestination {
		return nil, err
	}
	d, err := h.s.st.Destination(name)
	if errors.Is(err, state.ErrNotFound) {
		return nil, fmt.Errorf("%w: %w", ErrNotFound, err)
	} else if err != nil {
		return nil, err
	}
	var seen string
	h.s.mu.RLock()
	dd, err := h.s.openDest(ctx, d, func(k string) { seen = k })
	h.s.mu.RUnlock()
	if err != nil {
		return nil, err
	}
	if seen != "" && d.HostKey == "" {
		h.s.mu.RLock()
		err := h.s.pinHostKeyLocked(ctx, name, seen)
		h.s.mu.RUnlock()
		if err != nil {
			dd.Close() // #nosec G104 -- closing after an earlier error, which is the one returned; nothing was written to it
			return nil, err
		}
	}
	h.s.mu.RLock()
	defer h.s.mu.RUnlock()
	enc := bundle.Encryption{Recipients: d.Recipients}
	if len(d.Recipients) == 0 {
		pw, err := h.s.recoveryLocked()
		if err != nil {
			dd.Close() // #nosec G104 -- closing after an earlier error, which is the one returned; nothing was written to it
			return nil, fmt.Errorf("%w: backups to %s are encrypted to the recovery passphrase: %v", ErrConflict, name, err)
		}
		r, _ := h.s.st.Recovery()
		enc = bundleEncryption(pw, RecoveryLabel(r.Generation), h.s.cfg.BackupScryptWorkFactor)
	}
	return &backup.Target{Dest: dd, Config: d, Encryption: enc}, nil
}
func (h backupHost) Record(ctx context.Context, r state.BackupRecord) error {
	_, err := h.s.applyOpen(ctx, state.TypeBackupRecord, r)
	return err
}
func (h backupHost) Archived(ctx context.Context, name string, index uint64) error {
	_, err := h.s.applyOpen(ctx, state.TypeArchiveProgress, state.ArchiveProgress{Name: name, ArchivedTo: index})
	return err
}
func (h backupHost) Schedules() ([]state.Schedule, error)       { return h.s.st.Schedules() }
func (h backupHost) Destinations() ([]state.Destination, error) { return h.s.st.Destinations() }
func (h backupHost) PutSchedule(ctx context.Context, sc state.Schedule) error {
	_, err := h.s.applyOpen(ctx, state.TypeSchedulePut, sc)
	return err
}
func (h backupHost) NewID() string                 { return randHex(4) }
func (h backupHost) Frozen() error                 { return h.s.frozenErr() }
func (h backupHost) Held(destination string) error { return h.s.heldErr(destination) }
func (h backupHost) Lookup(id string) (state.BackupRecord, bool) {
	r, err := h.s.st.Backup(id)
	return r, err == nil
}

// startBackups starts the backup manager's loop as one of the open's
// goroutines (lifecycle write-locked).
func (s *Backups) startBackups() {
	if s.backups == nil {
		s.backups = backup.NewManager(backupHost{s}, datadir.StagingDir(s.cfg.DataDir), s.log)
		s.backups.VerifyAfter = s.verifyAfter
		s.backups.Drill = s.drillSchedule
	}
	w := s.workers
	ctx, cancel := context.WithCancel(w.ctx)
	ctx = WithIdentity(ctx, LocalRoot())
	s.backupCancel, s.backupCtx = cancel, ctx
	m := s.backups
	// A node reads the catalogs each time it becomes the leader, at its
	// open (the loop's first pass) or later (a failover).
	m.OnLeader = func(ctx context.Context) {
		w.Go("drill results", func(context.Context) { s.loadDrills(ctx) })
	}
	s.startAuditShipping(ctx, w)
	w.Go("backup loop", func(context.Context) {
		if !(backupHost{s}).IsLeader() {
			// A follower runs no backups; if it becomes the leader, the
			// loop marks what the old leader left running.
			m.Loop(ctx, s.cfg.BackupTick)
			return
		}
		m.MarkInterrupted(ctx)
		switch tl := s.st.Timeline(); {
		case tl.Restored.Holding():
			// A restored copy writes into no destination until an
			// operator says whether it takes over (status shows it).
			s.log.Warn("backups held after a restore: nothing is written to any destination but LOCAL until coffer backup resume-after-restore [--take-over]", "timeline", tl.ID)
		case s.needsFullAfterRestore() && tl.Restored.TakeOver:
			// The restore is the real recovery: the new timeline claims
			// every destination with a full (the old archives cannot
			// continue it).
			why := fmt.Sprintf("taking over after a restore (timeline %d)", tl.ID)
			w.Go("take-over backup", func(context.Context) { s.takeOver(ctx, why) })
		case s.needsFullAfterRestore() && !tl.Restored.Held:
			// Restored before the hold existed: back up the new timeline
			// to the scheduled destinations, as then.
			why := fmt.Sprintf("first start after a restore (timeline %d)", tl.ID)
			w.Go("automatic backup", func(context.Context) { s.autoBackup(ctx, why) })
		}
		m.Loop(ctx, s.cfg.BackupTick)
	})
	if !s.cfg.NoAutoBackup {
		h := func(why string) { w.Go("automatic backup", func(context.Context) { s.autoBackup(ctx, why) }) }
		s.keyChangeHook.Store(&h)
	}
}

// needsFullAfterRestore: this node was restored and no full backup has
// completed since the restore (or since its hold was released).
func (s *Backups) needsFullAfterRestore() bool {
	tl := s.st.Timeline()
	if tl.Restored == nil {
		return false
	}
	since := tl.Restored.At
	if r := tl.Restored.Released; r != nil && r.After(since) {
		since = *r
	}
	recs, err := s.st.Backups()
	if err != nil {
		return false
	}
	for _, r := range recs {
		if r.Kind == backup.KindFull && r.Status == "DONE" && r.Timeline == tl.ID && !r.Started.Before(since) && r.Destination != LocalDestination {
			return false
		}
	}
	return true
}

// heldErr is non-nil while the node's backups to the destination are held
// after a restore. LOCAL is never held: it lives in this node's own data
// dir, where no other server writes.
func (s *Backups) heldErr(destination string) error {
	tl := s.st.Timeline()
	if !tl.Restored.Holding() || destination == LocalDestination {
		return nil
	}
	return fmt.Errorf("%w: this node was restored (timeline %d, from %s to %s) and writes to no backup destination but LOCAL until an operator says so: "+
		"coffer backup resume-after-restore for a rehearsal or a copy (its backups then go only to destinations no other timeline writes to), "+
		"coffer backup resume-after-restore --take-over when this restore is the real recovery (it claims every destination and takes a full to each)",
		backup.ErrHeld, tl.ID, tl.Restored.From, tl.Restored.Target)
}

// heldAlert is the status warning of a held node (nil when not held).
func (s *Backups) heldAlert() *Alert {
	tl := s.st.Timeline()
	if !tl.Restored.Holding() {
		return nil
	}
	a := newAlert(AlertBackupsHeld, "backup", fmt.Sprintf(
		"backups, schedules, archiving and the journal mirror are HELD after a restore (timeline %d, from %s to %s): nothing is written to any destination but LOCAL. "+
			"A rehearsal or copy: coffer backup resume-after-restore (it then writes only to destinations no other timeline writes to). "+
			"The real recovery: coffer backup resume-after-restore --take-over (claims every destination, a full to each now)",
		tl.ID, tl.Restored.From, tl.Restored.Target), tl.Restored.At)
	return &a
}

// ErrNotHeld: resume-after-restore on a node whose backups are not held.
var ErrNotHeld = state.ErrNotHeld

// ResumeAfterRestore ends the hold of a restored node's backups (system
// administrators). Without takeOver, schedules, archiving and the journal
// mirror resume; a destination another timeline writes to keeps refusing
// this node (the error names both timelines). With takeOver, this node's
// timeline claims every destination and a full backup to each starts now
// (older archives cannot continue the new timeline); repeated, it claims
// the destinations that got no such full yet.
func (s *Backups) ResumeAfterRestore(ctx context.Context, takeOver bool) (Timeline, error) {
	if _, err := requireRole(ctx, RoleSystemAdmin, "resuming backups after a restore"); err != nil {
		return Timeline{}, err
	}
	unlock, err := s.openForRead()
	if err != nil {
		return Timeline{}, err
	}
	var res any
	if cur := s.st.Timeline(); takeOver && cur.Restored != nil && cur.Restored.TakeOver {
		// Taken over already: take over again the destinations that have
		// no full of this timeline yet (unreachable then, or added since).
		res = cur
	} else if res, err = s.applyResult(ctx, state.TypeRestoreRelease, state.RestoreRelease{TakeOver: takeOver}); err != nil {
		unlock()
		return Timeline{}, err
	}
	if err := s.attachMirrorLocked(); err != nil {
		s.log.Warn("journal mirror not attached after the hold ended", "error", err)
	}
	bctx, w := s.backupCtx, s.workers
	unlock()
	tl, _ := res.(state.Timeline)
	s.log.Warn("backups resumed after a restore", "timeline", tl.ID, "take_over", takeOver)
	if takeOver && bctx != nil && w != nil {
		why := fmt.Sprintf("taking over after a restore (timeline %d)", tl.ID)
		if !w.Go("take-over backup", func(context.Context) { s.takeOver(bctx, why) }) {
			s.log.Warn("the take-over backups did not start: the keystore is being sealed; they start at the next open", "timeline", tl.ID)
		}
	}
	return timelineView(tl), nil
}

// takeOver takes a full backup, claiming the destination for this node's
// timeline, to every destination that has none of this timeline since the
// take-over. A running backup delays one; it gives up on a destination
// after ten minutes.
func (s *Backups) takeOver(ctx context.Context, why string) {
	ds, err := s.st.Destinations()
	if err != nil {
		s.log.Error("taking over the destinations: read them", "error", err)
		return
	}
	tl := s.st.Timeline()
	since := time.Time{}
	if tl.Restored != nil && tl.Restored.Released != nil {
		since = *tl.Restored.Released
	}
	taken := map[string]bool{}
	if recs, err := s.st.Backups(); err == nil {
		for _, r := range recs {
			if r.Kind == backup.KindFull && r.Status == "DONE" && r.Timeline == tl.ID && !r.Started.Before(since) {
				taken[r.Destination] = true
			}
		}
	}
	for _, d := range ds {
		if taken[d.Name] {
			continue
		}
		deadline := time.Now().Add(10 * time.Minute)
		for {
			_, err := s.backups.Backup(ctx, backup.Request{Destination: d.Name, Mode: backup.ModeFull, Reason: "automatic: " + why, TakeOver: true})
			if !errors.Is(err, backup.ErrBusy) && !errors.Is(err, backup.ErrFrozen) || time.Now().After(deadline) || ctx.Err() != nil {
				if err != nil {
					s.log.Error("taking over a destination failed", "destination", d.Name, "error", err)
				}
				break
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(5 * time.Second):
			}
		}
	}
}

// stopBackups cancels running backups and the loops (lifecycle write-locked;
// it does not wait: the manager needs the read lock to finish; the seal's
// awaitWorkers waits, after releasing the lock).
func (s *Backups) stopBackups() {
	if s.backupCancel != nil {
		s.backupCancel()
		s.backupCancel, s.backupCtx = nil, nil
	}
	s.keyChangeHook.Store(nil)
}

// autoBackup takes a full backup to every destination that has an active
// schedule, after a key change (the backups must carry the new keys). A
// running backup delays it; it gives up after ten minutes.
func (s *Backups) autoBackup(ctx context.Context, why string) {
	scheds, err := s.st.Schedules()
	if err != nil {
		return
	}
	seen := map[string]bool{}
	for _, sc := range scheds {
		if sc.State == "PAUSED" || sc.State == "DONE" || sc.Kind == backup.ScheduleVerify || seen[sc.Destination] || s.heldErr(sc.Destination) != nil {
			continue
		}
		seen[sc.Destination] = true
		deadline := time.Now().Add(10 * time.Minute)
		for {
			_, err := s.backups.Backup(ctx, backup.Request{Destination: sc.Destination, Mode: backup.ModeFull, Reason: "automatic: " + why})
			if !errors.Is(err, backup.ErrBusy) && !errors.Is(err, backup.ErrFrozen) || time.Now().After(deadline) || ctx.Err() != nil {
				if err != nil {
					s.log.Error("automatic full backup failed", "destination", sc.Destination, "after", why, "error", err)
				}
				break
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(5 * time.Second):
			}
		}
	}
}

// CurrentBackup returns the running backup and its progress, or nil.
func (s *Backups) CurrentBackup(ctx context.Context) (*backup.Progress, error) {
	if _, err := requireRole(ctx, RoleSystemAdmin, "following a backup"); err != nil {
		return nil, err
	}
	s.mu.RLock()
	m := s.backups
	s.mu.RUnlock()
	var cur *backup.Progress
	if m != nil {
		cur = m.Current()
	}
	id := ""
	if cur != nil {
		id = cur.ID
	}
	s.backupPolls.observe(CallFrom(ctx), id)
	return cur, nil
}

func bundleEncryption(pw []byte, label string, workFactor int) bundle.Encryption {
	return bundle.Encryption{Passphrase: pw, Label: label, ScryptWorkFactor: workFactor}
}

// DestinationHealth is a destination's state as status and metrics show it.
type DestinationHealth struct {
	Name         string  `json:"name"`
	Kind         string  `json:"kind"`
	UsedPercent  float64 `json:"used_percent,omitempty"`
	Pending      int     `json:"pending_segments,omitempty"`
	ArchiveError string  `json:"archive_error,omitempty"`
	// LastSuccess and LastFailure are the ends of the newest DONE and
	// FAILED backups (alert on a LastSuccess that grows old).
	LastSuccess *time.Time `json:"last_success,omitempty"`
	LastFailure *time.Time `json:"last_failure,omitempty"`
	// Drills: the last restore drill and the last successful one, as far
	// as this node knows (the leader reads every catalog when it starts
	// to lead); alert when none succeeded within backup.drill_max_age.
	Drills *DrillView `json:"drills,omitempty"`
}

// DiskAlertPercent: a LOCAL or dir destination fuller than this raises an alert.
const DiskAlertPercent = 80

// backupHealth reports every destination (disk use for local and dir) and
// the warnings an operator must see: a destination above 80% full, segments
// that could not be shipped.
func (s *Backups) backupHealth() ([]DestinationHealth, []Alert) {
	ds, err := s.st.Destinations()
	if err != nil {
		return nil, nil
	}
	var errs map[string]string
	var pend map[string]int
	if s.backups != nil {
		pend, errs = s.backups.Pending(), s.backups.ArchiveErrors()
	}
	last := map[string][2]*time.Time{}
	first := map[string]*time.Time{} // the oldest DONE backup per destination
	if recs, err := s.st.Backups(); err == nil {
		for _, r := range recs {
			if r.Finished == nil {
				continue
			}
			if f := first[r.Destination]; r.Status == "DONE" && (f == nil || r.Finished.Before(*f)) {
				t := *r.Finished
				first[r.Destination] = &t
			}
			l := last[r.Destination]
			i := -1
			switch r.Status {
			case "DONE", "DELETED":
				i = 0
			case "FAILED":
				i = 1
			}
			if i >= 0 && (l[i] == nil || r.Finished.After(*l[i])) { // #nosec G602 -- l is a [2]*time.Time array and i is 0 or 1 here
				t := *r.Finished
				l[i] = &t // #nosec G602 -- l is a [2]*time.Time array and i is 0 or 1 here
			}
			last[r.Destination] = l
		}
	}
	var out []DestinationHealth
	var alerts []Alert
	now := time.Now().UTC()
	leader := backupHost{s}.IsLeader()
	for _, d := range ds {
		h := DestinationHealth{Name: d.Name, Kind: d.Kind, Pending: pend[d.Name], ArchiveError: errs[d.Name],
			LastSuccess: last[d.Name][0], LastFailure: last[d.Name][1]}
		path := d.Path
		if d.Kind == "local" {
			path = datadir.LocalBackupDir(s.cfg.DataDir)
		}
		if d.Kind == "local" || d.Kind == "dir" {
			if total, free, err := s.statfs(path); err == nil && total > 0 {
				h.UsedPercent = 100 * float64(total-min(free, total)) / float64(total)
				if h.UsedPercent > DiskAlertPercent {
					alerts = append(alerts, newAlert(AlertDestinationFull, "backup",
						fmt.Sprintf("destination %s (%s) is %.0f%% full: free space or set retention before backups fail", d.Name, path, h.UsedPercent), now))
				}
			}
		}
		dv, known := s.drills.get(d.Name)
		if known {
			h.Drills = &dv
		}
		if leader && d.Kind != "local" {
			if a := drillAlert(d.Name, dv, known, first[d.Name], s.cfg.DrillMaxAge, s.now().UTC()); a != nil {
				alerts = append(alerts, *a)
			}
		}
		if h.Pending > 0 && h.ArchiveError != "" {
			alerts = append(alerts, newAlert(AlertArchivePending, "backup",
				fmt.Sprintf("%d journal segments wait on this node for destination %s: %s", h.Pending, d.Name, h.ArchiveError), now))
		}
		out = append(out, h)
	}
	return out, alerts
}

// MirrorDir is where a dir destination mirrors the journal.
// A restored cluster's new timeline mirrors into its own directory, so the
// abandoned history's records are kept apart (and stay usable for a restore).
// In a cluster every node has its own (node is its id; "" standalone): the
// destination is replicated, so nodes whose mirror paths are one shared
// disk would otherwise write the same files.
func MirrorDir(d state.Destination, clusterID, node string, timeline uint32) string {
	name := clusterID
	if timeline > 1 {
		name += fmt.Sprintf(".tl%d", timeline)
	}
	if node != "" {
		name += "." + node
	}
	return filepath.Join(d.Path, "mirror", name)
}

// attachMirrorLocked attaches (or detaches) the journal mirror to match the
// configured destinations. Lifecycle lock held (read or write).
func (s *Backups) attachMirrorLocked() (err error) {
	defer func() {
		// A mirror that cannot be attached is a warning in status (and
		// holds journal pruning: it will need what it missed).
		if err == nil {
			s.mirrorAttachErr.Store(nil)
			return
		}
		a := newAlert(AlertMirrorNotAttached, "mirror", "journal mirror not attached (writes go on without it; journal segments are kept for it): "+err.Error(), time.Now().UTC())
		if old := s.mirrorAttachErr.Load(); old != nil {
			a.Since = old.Since
		}
		s.mirrorAttachErr.Store(&a)
	}()
	if s.jr == nil {
		return nil
	}
	ds, err := s.st.Destinations()
	if err != nil {
		return err
	}
	var want *state.Destination
	for i := range ds {
		if ds[i].Mirror && s.heldErr(ds[i].Name) == nil { // a held restored copy mirrors nowhere
			want = &ds[i]
		}
	}
	s.mirrorMu.Lock()
	defer s.mirrorMu.Unlock()
	dir := ""
	if want != nil {
		node := ""
		if s.clustered() {
			node = s.nodeID
		}
		dir = MirrorDir(*want, s.st.ClusterID(), node, s.st.Timeline().ID)
	}
	if dir == s.mirrorAt {
		return nil
	}
	if ok, err := s.st.DetachMirror(mirrorStopWait); err != nil {
		s.log.Error("journal mirror detached", "dir", s.mirrorAt, "error", err)
	} else if ok {
		s.log.Info("journal mirror detached", "dir", s.mirrorAt)
	}
	s.mirrorAt = ""
	if want == nil {
		return nil
	}
	if err := fsutil.EnsureDir(dir); err != nil {
		return fmt.Errorf("journal mirror %s: %w", dir, err)
	}
	if err := state.WriteTimelineFile(dir, s.st.Timeline()); err != nil {
		return fmt.Errorf("journal mirror %s: %w", dir, err)
	}
	var after uint64 // a restored timeline's mirror starts where its journal does
	if r := s.st.Timeline().Restored; r != nil {
		after = r.Index
	}
	open := s.openMirror
	if open == nil {
		open = func(o journal.Options) (state.MirrorJournal, error) {
			j, err := journal.Open(o)
			if err != nil {
				return nil, err
			}
			return j, nil
		}
	}
	m, err := open(journal.Options{Dir: dir, Name: s.cfg.Name, MaxSegmentBytes: s.cfg.JournalMaxBytes, MaxSegmentAge: s.cfg.JournalMaxAge, StartAfter: after})
	if err != nil {
		return fmt.Errorf("journal mirror %s: %w", dir, err)
	}
	if err := s.st.AttachMirror(m, datadir.JournalDir(s.cfg.DataDir)); err != nil {
		m.Close() // #nosec G104 -- closing after an earlier error, which is the one returned; nothing was appended to it
		return fmt.Errorf("journal mirror %s: %w", dir, err)
	}
	s.mirrorAt = dir
	ms := s.st.Mirror()
	if !ms.InSync {
		// Its writer goes on copying in the background.
		s.log.Warn("journal mirror attached, still catching up", "dir", dir, "last_index", ms.LastIndex, "behind", ms.Behind)
		return nil
	}
	s.log.Info("journal mirror attached", "dir", dir, "last_index", ms.LastIndex)
	return nil
}

// mirrorStopWait bounds how long detaching the journal mirror (at seal, or
// when its destination changes) waits for a write to the mirror disk.
const mirrorStopWait = 5 * time.Second

// detachMirror stops mirroring (at seal).
func (s *Backups) detachMirror() {
	s.mirrorMu.Lock()
	defer s.mirrorMu.Unlock()
	if _, err := s.st.DetachMirror(mirrorStopWait); err != nil {
		s.log.Error("journal mirror", "error", err)
	}
	s.mirrorAt = ""
}

// ArchiveProgress is one step of ArchiveNowProgress.
type ArchiveProgress = backup.ArchiveProgress

// ArchiveNow closes the open journal segment and ships every closed segment
// to the archiving destinations now, instead of at the next check (system
// administrators). It returns the first destination's error, if any.
func (s *Backups) ArchiveNow(ctx context.Context) error {
	return s.ArchiveNowProgress(ctx, nil)
}

// ArchiveNowProgress is ArchiveNow that calls progress (when not nil) as
// each destination starts and after each segment shipped.
func (s *Backups) ArchiveNowProgress(ctx context.Context, progress func(ArchiveProgress)) error {
	if _, err := requireRole(ctx, RoleSystemAdmin, "archiving the journal"); err != nil {
		return err
	}
	s.mu.RLock()
	err := s.requireOpenLocked()
	if err == nil {
		_, err = s.jr.Rotate()
	}
	m := s.backups
	s.mu.RUnlock()
	if err != nil {
		return fmt.Errorf("close the journal segment: %w", err)
	}
	if m == nil {
		return nil
	}
	// Not under the lifecycle lock: shipping records progress through raft.
	err = m.ArchiveWait(ctx, progress)
	if errors.Is(err, backup.ErrFrozen) {
		return fmt.Errorf("%w: %v", ErrWriteUnavailable, err)
	}
	if errors.Is(err, backup.ErrBusy) || errors.Is(err, backup.ErrOtherWriter) {
		return fmt.Errorf("%w: %v", ErrConflict, err)
	}
	if err != nil {
		return err
	}
	// Held destinations were skipped: say so rather than report success.
	if ds, derr := s.st.Destinations(); derr == nil {
		for _, d := range ds {
			if herr := s.heldErr(d.Name); d.Archiving && herr != nil {
				return fmt.Errorf("%w: segments not shipped to %s: %v", ErrConflict, d.Name, herr)
			}
		}
	}
	return nil
}

// ArchiveNowNote is ArchiveNowProgress that also says which archiving
// destinations got nothing because their archiving is paused ("" when
// none is): pausing is deliberate, so it is a note, not an error.
func (s *Backups) ArchiveNowNote(ctx context.Context, progress func(ArchiveProgress)) (string, error) {
	if err := s.ArchiveNowProgress(ctx, progress); err != nil {
		return "", err
	}
	ds, err := s.st.Destinations()
	if err != nil {
		return "", nil // shipped; the note is only lost
	}
	s.mu.RLock()
	m := s.backups
	s.mu.RUnlock()
	var pending map[string]int
	if m != nil {
		pending = m.Pending()
	}
	var notes []string
	for _, d := range ds {
		if d.Archiving && d.ArchivePaused {
			notes = append(notes, fmt.Sprintf("archiving to %s is paused: %d segments not shipped there (coffer journal archive resume --destination %s)", d.Name, pending[d.Name], d.Name))
		}
	}
	return strings.Join(notes, "; "), nil
}

// Digest is the state's digest at its applied index (see state.Store.Digest):
// two nodes, or a node and a restore, with the same digest hold the same
// history.
func (s *Backups) Digest(ctx context.Context) (index uint64, digest string, objects int, err error) {
	if _, err := requireRole(ctx, RoleSystemAdmin, "reading the state digest"); err != nil {
		return 0, "", 0, err
	}
	return s.st.Digest()
}
