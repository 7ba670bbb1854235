package service

import (
	"github.com/coffer-kms/coffer/internal/journal"
	"github.com/coffer-kms/coffer/internal/state"
)

// Stored types that service methods return. Transports name them through
// these aliases and convert them into JSON types of their own, so that a
// change to what is stored never changes an API.
type (
	BackupRecord = state.BackupRecord
	SegmentInfo  = journal.SegmentInfo
)
