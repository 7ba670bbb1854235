package service

import (
	"crypto/rand"
	"fmt"
	"os"
	"time"

	"github.com/coffer-kms/coffer/internal/cluster"
)

func randRead(b []byte) {
	if _, err := rand.Read(b); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
}

// Status is what `coffer status` shows. It never contains secrets.
type Status struct {
	State              string         `json:"state"`
	Initialized        bool           `json:"initialized"`
	Sealed             bool           `json:"sealed"`
	Version            string         `json:"version"`
	PID                int            `json:"pid"`
	DataDir            string         `json:"data_dir"`
	StartedAt          time.Time      `json:"started_at"`
	ClusterID          string         `json:"cluster_id,omitempty"`
	Timeline           Timeline       `json:"timeline"`
	KeystoreGeneration uint32         `json:"keystore_generation,omitempty"`
	AutoOpen           bool           `json:"auto_open"`
	DataKey            uint32         `json:"current_data_key,omitempty"`
	AppliedIndex       uint64         `json:"applied_index"`
	Journal            JournalStatus  `json:"journal"`
	Raft               cluster.Status `json:"raft"`
	Writable           bool           `json:"writable"`
	CatchUp            CatchUp        `json:"catch_up"`
	Alerts             []Alert        `json:"alerts"`
	Warnings           []Alert        `json:"warnings,omitempty"`
	Backup             BackupStatus   `json:"backup"`
	// Disks: the data dir, journal dir and (open) the journal mirror and
	// LOCAL or dir destinations.
	Disks []DiskUse `json:"disks,omitempty"`
}

// BackupStatus is the backup side of the status.
type BackupStatus struct {
	Running      *BackupRunning      `json:"running,omitempty"`
	Destinations []DestinationHealth `json:"destinations,omitempty"`
	Frozen       bool                `json:"frozen,omitempty"`
	// Held: a restored node writes to no destination but LOCAL until an
	// operator resumes or takes over its backups (a warning says how).
	Held bool `json:"held_after_restore,omitempty"`
	// Audit: closed audit files shipped to the destinations and pruned
	// (nil until the first shipping round).
	Audit *AuditFilesStatus `json:"audit,omitempty"`
}

// BackupRunning is the backup in progress.
type BackupRunning struct {
	ID           string    `json:"id"`
	Destination  string    `json:"destination"`
	Kind         string    `json:"kind"`
	Started      time.Time `json:"started"`
	BytesWritten int64     `json:"bytes_written"`
}

// JournalStatus is the journal position.
type JournalStatus struct {
	Segment   string `json:"segment,omitempty"`
	LastIndex uint64 `json:"last_index"`
	Segments  int    `json:"segments"`
	// PruneFloor and PruneHeldBy come from the last prune round: closed
	// segments with records at or after the floor stay, held by that.
	PruneFloor  uint64 `json:"prune_floor,omitempty"`
	PruneHeldBy string `json:"prune_held_by,omitempty"`
	// Mirror is the attached journal mirror (nil: none): in_sync means
	// writes are fsynced to it before they are acknowledged; otherwise it
	// is behind by that many records, which a lost data disk would lose.
	Mirror *MirrorState `json:"mirror,omitempty"`
}

// Status reports the node's state.
func (s *Service) Status() Status {
	st := s.statusCore()
	// Outside the lifecycle lock too: statfs can hang on a dead mount.
	st.Disks = s.disks(st.State == StateOpen)
	st.Warnings = append(st.Warnings, diskWarnings(st.Disks, time.Now().UTC())...)
	st.Warnings = append(st.Warnings, s.certWarnings()...)
	if st.State == StateOpen {
		// Outside the lifecycle lock: statfs of a hung NFS destination must
		// not hold up seal and stop (and, behind them, every request).
		var bw []Alert
		st.Backup.Destinations, bw = s.Backups.backupHealth()
		st.Warnings = append(st.Warnings, bw...)
		var aw []Alert
		st.Backup.Audit, aw = s.Backups.auditShip.view()
		st.Warnings = append(st.Warnings, aw...)
		if s.Backups.backups != nil {
			if p := s.Backups.backups.Current(); p != nil {
				st.Backup.Running = &BackupRunning{ID: p.ID, Destination: p.Destination, Kind: p.Kind, Started: p.Started, BytesWritten: p.BytesWritten}
			}
		}
	}
	return st
}

func (s *Service) statusCore() Status {
	s.checkDisk() // #nosec G104 -- checkDisk raises the disk-full alert itself, which status reports; its error is for write paths
	s.mu.RLock()
	defer s.mu.RUnlock()
	st := Status{
		State:        s.state,
		Initialized:  s.state != StateUninitialized,
		Sealed:       s.state != StateOpen,
		Version:      Version,
		PID:          os.Getpid(),
		DataDir:      s.cfg.DataDir,
		StartedAt:    s.started.UTC(),
		ClusterID:    s.Cluster.clusterID(),
		Timeline:     timelineView(s.st.Timeline()),
		AutoOpen:     s.AutoOpenEnabled(),
		AppliedIndex: s.st.AppliedIndex(),
		Raft:         s.node.Status(),
		Alerts:       []Alert{},
	}
	if s.ring != nil {
		st.KeystoreGeneration = s.ring.Current()
		st.DataKey = s.bar.Current()
	}
	var segs int
	if s.jr != nil {
		all := s.jr.Segments()
		segs = len(all)
		if segs > 0 {
			st.Journal.Segment = all[segs-1].Name
		}
		st.Journal.LastIndex = s.jr.LastIndex()
		st.Journal.Segments = segs
		if p := s.Backups.lastPrune.Load(); p != nil {
			st.Journal.PruneFloor, st.Journal.PruneHeldBy = p.Floor, p.Holder
		}
	}
	for _, h := range s.st.Health() {
		st.Alerts = append(st.Alerts, newAlert(storageAlertCodes[h.Component], h.Component, h.Error, h.Since))
	}
	if a := s.writeErr.Load(); a != nil {
		st.Alerts = append(st.Alerts, *a)
	}
	// Read once, so that the alert and the catch-up warning agree.
	readOnly := s.state == StateOpen && s.Cluster.ReadOnlyRestricted()
	if readOnly {
		st.Alerts = append(st.Alerts, s.Cluster.noQuorumAlert())
	}
	st.Writable = s.state == StateOpen && len(st.Alerts) == 0
	st.Warnings = append([]Alert(nil), s.warnings...)
	if s.state == StateOpen {
		if ms := s.st.Mirror(); ms.Attached {
			st.Journal.Mirror = mirrorView(ms)
			if h := s.st.MirrorHealth(); h != nil {
				st.Warnings = append(st.Warnings, newAlert(AlertMirrorBehind, "mirror",
					fmt.Sprintf("journal mirror behind by %d records, at index %d (writes continue without waiting for it; it catches up in the background): %s", ms.Behind, ms.LastIndex, h.Error), h.Since))
			}
		}
		if a := s.Backups.mirrorAttachErr.Load(); a != nil {
			st.Warnings = append(st.Warnings, *a)
		}
		if a := s.Backups.heldAlert(); a != nil {
			st.Warnings = append(st.Warnings, *a)
			st.Backup.Held = true
		}
	}
	if s.state == StateOpen {
		st.Warnings = append(st.Warnings, s.Cluster.unreachableWarnings()...)
		st.CatchUp = s.Cluster.CatchUpStatus()
		if !st.CatchUp.CaughtUp {
			msg := "catching up with the leader since this node opened: its default reads are sent to the leader until it has applied what the leader had committed"
			switch {
			case readOnly && !s.Cluster.AllowReadOnly():
				msg = "not caught up with the leader since this node opened, and no leader is known: every request is refused (cluster.allow_read_only_restricted_mode: false) until a leader is back"
			case readOnly:
				// No leader to send them to: the forwarding serves them here.
				msg = "not caught up with the leader since this node opened, and no leader is known (read-only restricted mode): its reads are served from its own copy, which may be stale, until a leader is back and it has caught up"
			}
			if st.CatchUp.LeaderCommit > 0 {
				msg += fmt.Sprintf(" (applied %d of %d)", st.CatchUp.RaftApplied, st.CatchUp.LeaderCommit)
			}
			st.Warnings = append(st.Warnings, newAlert(AlertCatchingUp, "cluster", msg, s.started.UTC()))
		}
	}
	st.Backup.Frozen = s.Backups.frozenErr() != nil
	if st.Backup.Frozen {
		st.Writable = false
	}
	return st
}
