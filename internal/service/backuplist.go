package service

import (
	"context"

	"github.com/coffer-kms/coffer/internal/backup"
	"github.com/coffer-kms/coffer/internal/state"
)

// BackupVerification is the last verification of a backup, as its
// destination's catalog records it.
type BackupVerification = backup.Verification

// BackupListing is a backup record with what the destination's catalog
// adds: the last verification of the backup and the restore time its
// destination's last successful drill predicts for it.
type BackupListing struct {
	state.BackupRecord
	// Verified is nil when this node knows no verification of the backup.
	Verified *BackupVerification
	// EstimatedRestore is the size of the files a restore to the backup
	// reads (an incremental with its full) at the speed of the
	// destination's last successful restore drill, in seconds (0: no drill
	// yet, or a size not known).
	EstimatedRestore float64
}

// ListCatalog is ListBackups with each backup's verification and
// estimated restore time, as far as this node (the leader) knows its
// destinations' catalogs: read when it became leader, and updated by the
// verifications and drills it runs.
func (s *Backups) ListCatalog(ctx context.Context, destination string) ([]BackupListing, error) {
	recs, err := s.ListBackups(ctx, destination)
	if err != nil {
		return nil, err
	}
	done := map[string]state.BackupRecord{} // DONE records by destination and id
	for _, r := range recs {
		if r.Status == "DONE" {
			done[r.Destination+"/"+r.ID] = r
		}
	}
	out := make([]BackupListing, len(recs))
	for i, r := range recs {
		out[i].BackupRecord = r
		if v, ok := s.drills.verification(r.Destination, r.File); ok {
			out[i].Verified = &v
		}
		if dv, ok := s.drills.get(r.Destination); ok && dv.LastGood != nil && dv.LastGood.BytesPerSecond > 0 {
			if n := restoreBytes(done, r); n > 0 {
				out[i].EstimatedRestore = float64(n) / dv.LastGood.BytesPerSecond
			}
		}
	}
	return out, nil
}

// restoreBytes is the size of the backup files a restore to r reads: a
// full (or dump) alone, an incremental with its full; 0 when not known
// (not done, or its full is not among done, the DONE records by
// destination/id).
func restoreBytes(done map[string]state.BackupRecord, r state.BackupRecord) int64 {
	if r.Status != "DONE" {
		return 0
	}
	switch r.Kind {
	case backup.KindFull, backup.KindDump:
		return r.Size
	case backup.KindIncremental:
		if f, ok := done[r.Destination+"/"+r.BaseFullID]; ok {
			return f.Size + r.Size
		}
	}
	return 0
}
