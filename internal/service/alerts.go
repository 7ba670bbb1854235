package service

import "time"

// AlertCode names the kind of an alert or warning, stable across messages.
type AlertCode string

// Every alert and warning the service raises. Each has a runbook in
// alertRunbooks (TestAlertRunbooksExist checks the files exist).
const (
	AlertDiskFull          AlertCode = "disk_full"            // data dir below storage.min_free_bytes
	AlertRaftWriteFailed   AlertCode = "raft_write_failed"    // the raft log could not be written
	AlertStateWriteFailed  AlertCode = "state_write_failed"   // state.db write failing, retried
	AlertJournalWriteFail  AlertCode = "journal_write_failed" // journal write failing, retried
	AlertMirrorBehind      AlertCode = "mirror_behind"        // the journal mirror lags
	AlertMirrorNotAttached AlertCode = "mirror_not_attached"  // the journal mirror could not be attached
	AlertBackupsHeld       AlertCode = "backups_held"         // a restored node writes to no destination
	AlertDestinationFull   AlertCode = "destination_full"     // a LOCAL or dir destination above DiskAlertPercent
	AlertArchivePending    AlertCode = "archive_pending"      // segments wait on the node for a destination
	AlertCatchingUp        AlertCode = "catching_up"          // a node behind the leader's commit index
	AlertAuditTailLost     AlertCode = "audit_tail_lost"      // records lost at the end of the audit log
	AlertAuditNotShipped   AlertCode = "audit_not_shipped"    // closed audit files fail to reach a destination
	AlertAuditHeld         AlertCode = "audit_held"           // audit files past audit.retention wait for a destination
	AlertAuditNoDest       AlertCode = "audit_no_destination" // audit.retention set, but no destination to ship to
	AlertDrillStale        AlertCode = "restore_drill_stale"  // no restore drill succeeded within backup.drill_max_age
	AlertDiskFilling       AlertCode = "disk_filling"         // the data, journal or mirror filesystem at or above DiskWarnPercent
	AlertUpgradeRequired   AlertCode = "upgrade_required"     // a committed command of a newer build: this node applies nothing until upgraded
	AlertNoQuorum          AlertCode = "no_quorum"            // a cluster member with no leader known: read-only restricted mode
	AlertMemberUnreachable AlertCode = "member_unreachable"   // on the leader: a member its heartbeats do not reach
	AlertCertExpiring      AlertCode = "certificate_expiring" // ca.crt, node.crt or the operator's server.crt near its end (certexpiry.go)
)

// alertRunbooks maps every alert code to its runbook, relative to the
// repository root.
var alertRunbooks = map[AlertCode]string{
	AlertDiskFull:          "docs/runbooks/disk-full.md",
	AlertRaftWriteFailed:   "docs/runbooks/disk-full.md",
	AlertStateWriteFailed:  "docs/runbooks/disk-full.md",
	AlertJournalWriteFail:  "docs/runbooks/disk-full.md",
	AlertMirrorBehind:      "docs/runbooks/journal-mirror-behind.md",
	AlertMirrorNotAttached: "docs/runbooks/journal-mirror-behind.md",
	AlertBackupsHeld:       "docs/runbooks/restored-server-backups-held.md",
	AlertDestinationFull:   "docs/runbooks/backup-destination-full.md",
	AlertArchivePending:    "docs/runbooks/journal-segments-piling-up.md",
	AlertCatchingUp:        "docs/runbooks/node-catching-up.md",
	AlertAuditTailLost:     "docs/runbooks/audit-log-damaged.md",
	AlertAuditNotShipped:   "docs/runbooks/audit-retention.md",
	AlertAuditHeld:         "docs/runbooks/audit-retention.md",
	AlertAuditNoDest:       "docs/runbooks/audit-retention.md",
	AlertDrillStale:        "docs/runbooks/restore-drill-failed.md",
	AlertDiskFilling:       "docs/runbooks/disk-full.md",
	AlertUpgradeRequired:   "docs/runbooks/node-needs-upgrade.md",
	AlertNoQuorum:          "docs/runbooks/ha-network-partition.md",
	AlertMemberUnreachable: "docs/runbooks/ha-replace-failed-node.md",
	AlertCertExpiring:      "docs/runbooks/certificates-expiring.md",
}

// storageAlertCodes: the codes of the state machine's failing writes, by
// component.
var storageAlertCodes = map[string]AlertCode{
	"state":   AlertStateWriteFailed,
	"journal": AlertJournalWriteFail,
	"upgrade": AlertUpgradeRequired,
}

// newAlert is an alert of a kind, with the path of its runbook.
func newAlert(code AlertCode, component, msg string, since time.Time) Alert {
	return Alert{Code: code, Component: component, Message: msg, Since: since, Runbook: alertRunbooks[code]}
}
