package rest

import (
	"time"

	"github.com/coffer-kms/coffer/internal/service"
)

// The API's own forms of what the service returns from storage. Their
// JSON field names are the API's (TestStoredTypesJSON pins them): a field
// renamed in storage changes a converter below, never the API.

// BackupRecord is the record of one backup.
type BackupRecord struct {
	ID          string     `json:"id"`
	Destination string     `json:"destination"`
	Kind        string     `json:"kind"`
	Status      string     `json:"status"`
	Node        string     `json:"node"`
	File        string     `json:"file,omitempty"`
	BaseFullID  string     `json:"base_full_id,omitempty"`
	FirstIndex  uint64     `json:"first_index,omitempty"`
	LastIndex   uint64     `json:"last_index,omitempty"`
	Size        int64      `json:"size,omitempty"`
	SHA256      string     `json:"sha256,omitempty"`
	Recipients  []string   `json:"recipients,omitempty"`
	Timeline    uint32     `json:"timeline,omitempty"`
	Reason      string     `json:"reason,omitempty"`
	Started     time.Time  `json:"started"`
	Finished    *time.Time `json:"finished,omitempty"`
	// Verified and EstimatedRestore are set in listings (from the
	// destination's catalog as the leader knows it).
	Verified         *BackupVerification `json:"verified,omitempty" doc:"the backup's last verification (coffer backup verify); absent: never verified"`
	EstimatedRestore float64             `json:"estimated_restore_seconds,omitempty" doc:"the files a restore to this backup reads at the speed of the destination's last successful restore drill; absent: no drill yet"`
}

// BackupVerification is a backup's last verification.
type BackupVerification struct {
	Time   time.Time `json:"time"`
	Result string    `json:"result" doc:"OK, FAILED, or SKIPPED (taken under an earlier recovery passphrase)"`
	Reason string    `json:"reason,omitempty"`
}

func backupListingsOf(bs []service.BackupListing) []BackupRecord {
	if bs == nil {
		return nil
	}
	out := make([]BackupRecord, len(bs))
	for i, b := range bs {
		out[i] = backupRecordOf(b.BackupRecord)
		if v := b.Verified; v != nil {
			out[i].Verified = &BackupVerification{Time: v.Time, Result: v.Result, Reason: v.Reason}
		}
		out[i].EstimatedRestore = b.EstimatedRestore
	}
	return out
}

func backupRecordOf(b service.BackupRecord) BackupRecord {
	return BackupRecord{ID: b.ID, Destination: b.Destination, Kind: b.Kind, Status: b.Status, Node: b.Node, File: b.File,
		BaseFullID: b.BaseFullID, FirstIndex: b.FirstIndex, LastIndex: b.LastIndex, Size: b.Size, SHA256: b.SHA256,
		Recipients: b.Recipients, Timeline: b.Timeline, Reason: b.Reason, Started: b.Started, Finished: b.Finished}
}

// RestorePoint is a named point in the history a restore can stop at.
type RestorePoint struct {
	Name      string    `json:"name"`
	Index     uint64    `json:"index"`
	Time      time.Time `json:"time"`
	CreatedBy string    `json:"created_by,omitempty"`
}

func restorePointOf(p service.RestorePoint) RestorePoint {
	return RestorePoint{Name: p.Name, Index: p.Index, Time: p.Time, CreatedBy: p.CreatedBy}
}

func restorePointsOf(ps []service.RestorePoint) []RestorePoint {
	if ps == nil {
		return nil
	}
	out := make([]RestorePoint, len(ps))
	for i, p := range ps {
		out[i] = restorePointOf(p)
	}
	return out
}

// Segment is a journal segment as the API shows it.
type Segment struct {
	Name       string    `json:"name"`
	FirstIndex uint64    `json:"first_index"`
	LastIndex  uint64    `json:"last_index"`
	Records    int       `json:"records"`
	Size       int64     `json:"size"`
	Created    time.Time `json:"created"`
	Closed     bool      `json:"closed"`
}

func segmentOf(s service.SegmentInfo) Segment {
	return Segment{Name: s.Name, FirstIndex: s.FirstIndex, LastIndex: s.LastIndex, Records: s.Records, Size: s.Size, Created: s.Created, Closed: s.Closed}
}

// ScheduleView is a schedule with its state and next run.
type ScheduleView struct {
	Name        string     `json:"name"`
	Destination string     `json:"destination"`
	Kind        string     `json:"kind,omitempty" doc:"\"\" (a backup) or verify (a restore drill)"`
	Type        string     `json:"type"`
	At          *time.Time `json:"at,omitempty"`
	Every       string     `json:"every,omitempty"`
	Cron        string     `json:"cron,omitempty"`
	Mode        string     `json:"mode"`
	Verify      bool       `json:"verify,omitempty"`
	State       string     `json:"state"`
	LastRun     *time.Time `json:"last_run,omitempty"`
	LastResult  string     `json:"last_result,omitempty"`
	Created     time.Time  `json:"created"`
	Updated     time.Time  `json:"updated"`
	Next        *time.Time `json:"next,omitempty"`
}

func scheduleViewOf(v service.ScheduleView) ScheduleView {
	return ScheduleView{Name: v.Name, Destination: v.Destination, Kind: v.Kind, Type: v.Type, At: v.At, Every: v.Every, Cron: v.Cron,
		Mode: v.Mode, Verify: v.Verify, State: v.State, LastRun: v.LastRun, LastResult: v.LastResult,
		Created: v.Created, Updated: v.Updated, Next: v.Next}
}

func scheduleViewsOf(vs []service.ScheduleView) []ScheduleView {
	if vs == nil {
		return nil
	}
	out := make([]ScheduleView, len(vs))
	for i, v := range vs {
		out[i] = scheduleViewOf(v)
	}
	return out
}
