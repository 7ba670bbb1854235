// Package datadir is the layout of a Coffer data directory: the name of
// every file and directory a node keeps there. Every package that reads or
// writes a data dir (the service, restore, check, the server and the CLI)
// takes its paths from here, so the layout is written down once. A leaf: it
// imports only the standard library.
//
//	<data-dir>/
//	  node-id          this node's id (one line)
//	  state.db         the state machine (bbolt)
//	  raft/            the raft log and snapshots
//	  journal/         the encrypted journal segments and the timeline file
//	  keystore/        the wrapped master keys (and keystore.aks for auto-open)
//	  audit/           the hash-chained audit log
//	  tls/             the CA, the server and the node certificates
//	  backup/local/    the LOCAL destination's backups
//	  backup/staging/  backup files being assembled
//	  dump/            the full dump a freeze writes
//	  restore-tmp/     scratch space of object restores and verifications
//	  coffer.sock      the local control socket
//	  coffer.pid       the running server's pid, URL and socket
//	  LOCK             held by the process that owns the data dir
package datadir

import "path/filepath"

// Names inside a data dir, relative to it.
const (
	NodeIDFile    = "node-id"
	StateFile     = "state.db"
	RaftName      = "raft"
	JournalName   = "journal"
	KeystoreName  = "keystore"
	AuditName     = "audit"
	TLSName       = "tls"
	BackupName    = "backup"
	DumpName      = "dump"
	RestoreTmp    = "restore-tmp"
	SocketFile    = "coffer.sock"
	PIDFile       = "coffer.pid"
	LockFile      = "LOCK"
	localBackups  = "local"
	stagingBackup = "staging"
)

// NodeIDPath is the file holding the node's id.
func NodeIDPath(dataDir string) string { return filepath.Join(dataDir, NodeIDFile) }

// StatePath is the state machine's database.
func StatePath(dataDir string) string { return filepath.Join(dataDir, StateFile) }

// RaftDir holds the raft log and snapshots.
func RaftDir(dataDir string) string { return filepath.Join(dataDir, RaftName) }

// JournalDir holds the journal segments.
func JournalDir(dataDir string) string { return filepath.Join(dataDir, JournalName) }

// KeystoreDir holds the wrapped master keys.
func KeystoreDir(dataDir string) string { return filepath.Join(dataDir, KeystoreName) }

// AuditDir holds the hash-chained audit log.
func AuditDir(dataDir string) string { return filepath.Join(dataDir, AuditName) }

// TLSDir holds the CA and the certificates the server generates.
func TLSDir(dataDir string) string { return filepath.Join(dataDir, TLSName) }

// LocalBackupDir is where the LOCAL destination keeps its backups.
func LocalBackupDir(dataDir string) string {
	return filepath.Join(dataDir, BackupName, localBackups)
}

// StagingDir is where backup files are assembled before they are saved.
func StagingDir(dataDir string) string {
	return filepath.Join(dataDir, BackupName, stagingBackup)
}

// DumpDir is where a freeze writes its consistent full dump.
func DumpDir(dataDir string) string { return filepath.Join(dataDir, DumpName) }

// RestoreTmpDir is the scratch space of object restores and verifications;
// what a crash leaves there is removed at the next start.
func RestoreTmpDir(dataDir string) string { return filepath.Join(dataDir, RestoreTmp) }

// SocketPath is the local control socket.
func SocketPath(dataDir string) string { return filepath.Join(dataDir, SocketFile) }

// PIDPath is the running server's pid file.
func PIDPath(dataDir string) string { return filepath.Join(dataDir, PIDFile) }

// LockPath is the lock the process owning the data dir holds.
func LockPath(dataDir string) string { return filepath.Join(dataDir, LockFile) }
