package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"time"
)

// Health is the answer of sys/health.
type Health struct {
	Initialized bool   `json:"initialized"`
	Sealed      bool   `json:"sealed"`
	State       string `json:"state"`
	Version     string `json:"version"`
	// Role in a cluster: standalone, leader, follower (answered with 429)
	// or read-only (no quorum, 503).
	Role         string `json:"role,omitempty"`
	AppliedIndex uint64 `json:"applied_index,omitempty"`
	// CaughtUp is false on a follower that has not yet applied, since it
	// opened, what the leader had committed (its reads go to the leader);
	// nil when the keystore is not open.
	CaughtUp     *bool  `json:"caught_up,omitempty"`
	LeaderCommit uint64 `json:"leader_commit_index,omitempty"`
	RaftApplied  uint64 `json:"raft_applied_index,omitempty"`
}

// Health never fails on a sealed or uninitialised server: the state is in the result.
func (c *Client) Health(ctx context.Context) (Health, error) {
	var h Health
	err := c.Do(ctx, "GET", "/api/v1/sys/health", nil, &h)
	if e := (*Error)(nil); errors.As(err, &e) && (e.Status == 503 || e.Status == 501) {
		err = nil
	}
	return h, err
}

// Status is the server's status (see `coffer status`).
type Status struct {
	State       string    `json:"state"`
	Initialized bool      `json:"initialized"`
	Sealed      bool      `json:"sealed"`
	Version     string    `json:"version"`
	PID         int       `json:"pid"`
	DataDir     string    `json:"data_dir"`
	StartedAt   time.Time `json:"started_at"`
	ClusterID   string    `json:"cluster_id"`
	// Timeline is the history the cluster is on: 1, plus one per restore.
	Timeline struct {
		ID      uint32 `json:"id"`
		History []struct {
			ID   uint32 `json:"id"`
			Upto uint64 `json:"upto"`
		} `json:"history,omitempty"`
		Restored *struct {
			From   string    `json:"from"`
			Target string    `json:"target"`
			Index  uint64    `json:"index"`
			Time   time.Time `json:"time"`
			At     time.Time `json:"at"`
			// Held: backups wait for resume-after-restore; Released is
			// when the hold ended, TakeOver whether the timeline took
			// the destinations over.
			Held     bool       `json:"held"`
			Released *time.Time `json:"released"`
			TakeOver bool       `json:"take_over"`
		} `json:"restored,omitempty"`
	} `json:"timeline"`
	KeystoreGeneration uint32 `json:"keystore_generation"`
	AutoOpen           bool   `json:"auto_open"`
	DataKey            uint32 `json:"current_data_key"`
	AppliedIndex       uint64 `json:"applied_index"`
	Journal            struct {
		Segment     string `json:"segment"`
		LastIndex   uint64 `json:"last_index"`
		Segments    int    `json:"segments"`
		PruneFloor  uint64 `json:"prune_floor"`
		PruneHeldBy string `json:"prune_held_by"`
		// Mirror is the attached journal mirror (nil: none). While InSync,
		// writes are fsynced to it before they are acknowledged; otherwise
		// it lacks the last Behind records.
		Mirror *struct {
			InSync    bool   `json:"in_sync"`
			LastIndex uint64 `json:"last_index"`
			Behind    uint64 `json:"behind"`
		} `json:"mirror,omitempty"`
	} `json:"journal"`
	Raft     json.RawMessage `json:"raft"`
	Writable bool            `json:"writable"`
	// Alerts are conditions that stop writes (Writable is false).
	Alerts []Alert `json:"alerts"`
	// Warnings need attention but do not stop writes: a failing journal
	// mirror, a destination filling up, segments that could not be archived.
	Warnings []Alert      `json:"warnings,omitempty"`
	Backup   BackupStatus `json:"backup"`
	// Disks: the data dir, journal dir and (open) the journal mirror and
	// LOCAL or dir destinations, each with its filesystem's use.
	Disks []DiskUse `json:"disks,omitempty"`
}

// DiskUse is the use of the filesystem holding one directory a node
// writes (two directories on one filesystem show the same figures).
type DiskUse struct {
	What        string  `json:"what"` // data, journal, mirror, destination:NAME
	Path        string  `json:"path"`
	Total       uint64  `json:"total_bytes,omitempty"`
	Free        uint64  `json:"free_bytes,omitempty"`
	UsedPercent float64 `json:"used_percent"`
	Level       string  `json:"level"` // ok, warning (80 % used), error (95 %), unknown (see Error)
	Error       string  `json:"error,omitempty"`
}

// BackupStatus is the backup side of the status: the running backup, the
// health of every destination, and whether writes are frozen.
type BackupStatus struct {
	Running      *RunningBackup      `json:"running,omitempty"`
	Destinations []DestinationHealth `json:"destinations,omitempty"`
	Frozen       bool                `json:"frozen,omitempty"`
	// Held: a restored node writes to no destination but LOCAL until
	// ResumeAfterRestore (a warning says which to use).
	Held bool `json:"held_after_restore,omitempty"`
}

// RunningBackup is the backup in progress and the bytes it wrote so far.
type RunningBackup struct {
	ID           string    `json:"id"`
	Destination  string    `json:"destination"`
	Kind         string    `json:"kind"`
	Started      time.Time `json:"started"`
	BytesWritten int64     `json:"bytes_written"`
}

// DestinationHealth is one destination in the status: disk use (dir and
// LOCAL only), closed journal segments not archived yet, the last archive
// error, and when a backup to it last succeeded and last failed.
type DestinationHealth struct {
	Name         string     `json:"name"`
	Kind         string     `json:"kind"`
	UsedPercent  float64    `json:"used_percent,omitempty"`
	Pending      int        `json:"pending_segments,omitempty"`
	ArchiveError string     `json:"archive_error,omitempty"`
	LastSuccess  *time.Time `json:"last_success,omitempty"`
	LastFailure  *time.Time `json:"last_failure,omitempty"`
	Drills       *DrillView `json:"drills,omitempty"` // restore drills, on the leader
}

// Alert is a condition the operator must see.
type Alert struct {
	// Code names the kind of alert (disk_full, archive_pending, ...).
	Code      string    `json:"code,omitempty"`
	Component string    `json:"component"`
	Message   string    `json:"message"`
	Since     time.Time `json:"since"`
	// Runbook is the path of what to do, from the repository root
	// (docs/runbooks/NAME.md).
	Runbook string `json:"runbook,omitempty"`
}

// Status fetches the server status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	return s, c.Do(ctx, "GET", "/api/v1/sys/status", nil, &s)
}

// Init creates the keystore and returns the root token.
func (c *Client) Init(ctx context.Context, passphrase string) (string, error) {
	var r struct {
		RootToken string `json:"root_token"`
	}
	err := c.Do(ctx, "POST", "/api/v1/sys/init", map[string]string{"passphrase": passphrase}, &r)
	return r.RootToken, err
}

// CreateRootToken issues a new root token that does not expire (local
// control socket only).
func (c *Client) CreateRootToken(ctx context.Context) (string, error) {
	return c.CreateRootTokenTTL(ctx, 0)
}

// CreateRootTokenTTL is CreateRootToken for a token that expires after ttl
// (0: it does not).
func (c *Client) CreateRootTokenTTL(ctx context.Context, ttl time.Duration) (string, error) {
	var r struct {
		RootToken string `json:"root_token"`
	}
	var body any
	if ttl > 0 {
		body = map[string]string{"ttl": ttl.String()}
	}
	err := c.Do(ctx, "POST", "/api/v1/sys/root-token", body, &r)
	return r.RootToken, err
}

// RootToken describes a root token (never the token itself).
type RootToken struct {
	Accessor string     `json:"accessor"`
	Created  time.Time  `json:"created"`
	Expires  *time.Time `json:"expires,omitempty"`
	Expired  bool       `json:"expired,omitempty"`
	Current  bool       `json:"current,omitempty"`
}

// ListRootTokens lists root tokens by accessor.
func (c *Client) ListRootTokens(ctx context.Context) ([]RootToken, error) {
	var r struct {
		Tokens []RootToken `json:"tokens"`
	}
	err := c.Do(ctx, "GET", "/api/v1/sys/root-tokens", nil, &r)
	return r.Tokens, err
}

// RevokeRootToken revokes the root token whose accessor starts with prefix
// and returns its whole accessor.
func (c *Client) RevokeRootToken(ctx context.Context, prefix string) (string, error) {
	var r struct {
		Revoked string `json:"revoked"`
	}
	err := c.Do(ctx, "DELETE", "/api/v1/sys/root-tokens/"+url.PathEscape(prefix), nil, &r)
	return r.Revoked, err
}

// Open opens the keystore with its passphrase.
func (c *Client) Open(ctx context.Context, passphrase string) error {
	return c.Do(ctx, "POST", "/api/v1/sys/open", map[string]string{"passphrase": passphrase}, nil)
}

// OpenAuto opens the keystore with its auto-open file.
func (c *Client) OpenAuto(ctx context.Context) error {
	return c.Do(ctx, "POST", "/api/v1/sys/open", map[string]bool{"auto": true}, nil)
}

// Seal seals the keystore.
func (c *Client) Seal(ctx context.Context) error {
	return c.Do(ctx, "POST", "/api/v1/sys/seal", nil, nil)
}

// Stop asks the server to stop (smart, fast or immediate).
func (c *Client) Stop(ctx context.Context, mode string) error {
	return c.Do(ctx, "POST", "/api/v1/sys/stop", map[string]string{"mode": mode}, nil)
}

// RotateMasterKey creates a new master key generation.
func (c *Client) RotateMasterKey(ctx context.Context) (uint32, error) {
	var r struct {
		Generation uint32 `json:"generation"`
	}
	err := c.Do(ctx, "POST", "/api/v1/sys/keystore/rotate-master-key", nil, &r)
	return r.Generation, err
}

// RotateDataKey creates a new data key for new writes.
func (c *Client) RotateDataKey(ctx context.Context) (uint32, error) {
	var r struct {
		Generation uint32 `json:"generation"`
	}
	err := c.Do(ctx, "POST", "/api/v1/sys/keystore/rotate-data-key", nil, &r)
	return r.Generation, err
}

// ChangePassphrase re-seals the keystore under a new passphrase.
func (c *Client) ChangePassphrase(ctx context.Context, old, new string) error {
	return c.Do(ctx, "POST", "/api/v1/sys/keystore/change-passphrase", map[string]string{"old_passphrase": old, "new_passphrase": new}, nil)
}

// ResetPassphrase sets a new keystore passphrase without the old one. The
// server allows it only over its local control socket, with the keystore open.
func (c *Client) ResetPassphrase(ctx context.Context, new string) error {
	return c.Do(ctx, "POST", "/api/v1/sys/keystore/reset-passphrase", map[string]string{"new_passphrase": new}, nil)
}

// SetAutoOpen enables or disables the auto-open file.
func (c *Client) SetAutoOpen(ctx context.Context, on bool) error {
	p := "/api/v1/sys/keystore/disable-auto-open"
	if on {
		p = "/api/v1/sys/keystore/enable-auto-open"
	}
	return c.Do(ctx, "POST", p, nil, nil)
}

// Segment describes a journal segment.
type Segment struct {
	Name       string    `json:"name"`
	FirstIndex uint64    `json:"first_index"`
	LastIndex  uint64    `json:"last_index"`
	Records    int       `json:"records"`
	Size       int64     `json:"size"`
	Created    time.Time `json:"created"`
	Closed     bool      `json:"closed"`
}

// JournalSegments lists the journal segments.
func (c *Client) JournalSegments(ctx context.Context) ([]Segment, error) {
	var r struct {
		Segments []Segment `json:"segments"`
	}
	err := c.Do(ctx, "GET", "/api/v1/sys/journal", nil, &r)
	return r.Segments, err
}

// RotateJournal closes the open segment and starts a new one.
func (c *Client) RotateJournal(ctx context.Context) (Segment, error) {
	var r struct {
		Closed Segment `json:"closed"`
	}
	err := c.Do(ctx, "POST", "/api/v1/sys/journal/rotate", nil, &r)
	return r.Closed, err
}

// JournalPrune is the result of a journal prune on one node.
type JournalPrune struct {
	Floor        uint64    `json:"floor"`
	Holder       string    `json:"holder,omitempty"`
	KeepSegments int       `json:"keep_segments"`
	DryRun       bool      `json:"dry_run,omitempty"`
	Removed      []Segment `json:"removed"`
	Kept         int       `json:"kept"`
}

// PruneJournal removes the node's closed journal segments that no
// destination needs any more; dryRun only lists them. It is about the node
// the client reaches (never forwarded to the leader).
func (c *Client) PruneJournal(ctx context.Context, dryRun bool) (JournalPrune, error) {
	var r JournalPrune
	err := c.Do(ctx, "POST", "/api/v1/sys/journal/prune", map[string]bool{"dry_run": dryRun}, &r)
	return r, err
}

// ArchiveJournal closes the open segment and ships every closed segment to
// the archiving destinations now.
func (c *Client) ArchiveJournal(ctx context.Context) error {
	return c.Do(ctx, "POST", "/api/v1/sys/journal/archive", nil, nil)
}

// ArchiveProgress is one step of ArchiveJournalProgress: Done of Total
// segments are on Destination; Segment is the one just shipped (empty at
// the start of a destination).
type ArchiveProgress struct {
	Destination string `json:"destination"`
	Segment     string `json:"segment,omitempty"`
	Done        int    `json:"done"`
	Total       int    `json:"total"`
}

// ArchiveJournalProgress is ArchiveJournal that calls progress as each
// destination starts and after each segment shipped (the server streams
// the steps).
func (c *Client) ArchiveJournalProgress(ctx context.Context, progress func(ArchiveProgress)) error {
	_, err := c.ArchiveJournalNote(ctx, progress)
	return err
}

// ArchiveJournalNote is ArchiveJournalProgress that also returns the
// server's note: the archiving destinations it skipped because their
// archiving is paused ("" if none).
func (c *Client) ArchiveJournalNote(ctx context.Context, progress func(ArchiveProgress)) (string, error) {
	s := &archiveStream{progress: progress}
	err := c.Do(ctx, "POST", "/api/v1/sys/journal/archive?progress=ndjson", nil, s)
	return s.note, err
}

// archiveStream reads the lines of a streamed archive-now.
type archiveStream struct {
	progress func(ArchiveProgress)
	note     string
}

func (s *archiveStream) decodeStream(r io.Reader) error {
	var done struct {
		Archived bool   `json:"archived"`
		Note     string `json:"note"`
	}
	err := readProgress(r, "archive answer", s.progress, &done, func() bool { return done.Archived })
	s.note = done.Note
	return err
}

// readProgress reads a streamed answer: {"progress":...} lines, each
// handed to progress (when not nil), until an {"error":...} line (returned
// as an *Error) or the final line, decoded into final and accepted when
// isFinal says so after decoding.
func readProgress[P any](r io.Reader, what string, progress func(P), final any, isFinal func() bool) error {
	dec := json.NewDecoder(r)
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("%s: %w", what, err)
		}
		var line struct {
			Progress *P `json:"progress"`
			Error    *struct {
				Status        int
				Code, Message string
			} `json:"error"`
		}
		if err := json.Unmarshal(raw, &line); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		switch {
		case line.Error != nil:
			return &Error{Status: line.Error.Status, Code: line.Error.Code, Message: line.Error.Message}
		case line.Progress != nil:
			if progress != nil {
				progress(*line.Progress)
			}
			continue
		}
		if err := json.Unmarshal(raw, final); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if !isFinal() {
			return fmt.Errorf("%s: a line with neither progress, result nor error", what)
		}
		return nil
	}
}

// OpenAPI returns the server's OpenAPI 3 document.
func (c *Client) OpenAPI(ctx context.Context) (json.RawMessage, error) {
	var doc json.RawMessage
	return doc, c.Do(ctx, "GET", "/api/v1/openapi.json", nil, &doc)
}
