// Package service is Coffer's domain layer: the keystore lifecycle, secrets and
// tokens. Every mutation becomes one command applied through the cluster; reads
// go to the local state. Transports (REST, Vault, KMIP) call only this package.
package service

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coffer-kms/coffer/internal/audit"
	"github.com/coffer-kms/coffer/internal/backup"
	"github.com/coffer-kms/coffer/internal/barrier"
	"github.com/coffer-kms/coffer/internal/cluster"
	"github.com/coffer-kms/coffer/internal/datadir"
	"github.com/coffer-kms/coffer/internal/fsutil"
	"github.com/coffer-kms/coffer/internal/journal"
	"github.com/coffer-kms/coffer/internal/keystore"
	"github.com/coffer-kms/coffer/internal/lifecycle"
	"github.com/coffer-kms/coffer/internal/state"
)

// Version of the software, set by the build.
var Version = "0.1.0-dev"

// Config of the service.
type Config struct {
	DataDir string
	// Name prefixes journal segments (<name>-<YYYYMMDDhhmmss>.recovery).
	Name            string
	KDF             keystore.KDFParams
	MachineIdentity func() ([]byte, error)
	JournalMaxBytes int64
	JournalMaxAge   time.Duration
	// JournalKeepSegments: closed segments kept beyond what the destinations
	// need (0: DefaultJournalKeep). JournalNoPrune keeps every segment.
	JournalKeepSegments int
	JournalNoPrune      bool
	// JournalPruneEvery: how often closed segments are pruned (0: 1 minute).
	JournalPruneEvery time.Duration
	// MirrorTimeout: how long a write waits for the journal mirror's fsync
	// before the mirror is marked behind (0: 2s).
	MirrorTimeout time.Duration
	// WriteRetryDelay: pause between retries of a failed state/journal write,
	// and how long writes stay refused after a raft log write error.
	WriteRetryDelay time.Duration
	// MinFreeBytes: writes are refused while the data dir's filesystem has less free.
	MinFreeBytes uint64
	// Statfs reports the size and free space of the filesystem holding a
	// path (nil: the operating system's statfs); status shows disk use
	// through it.
	Statfs        func(path string) (total, free uint64, err error)
	ApplyTimeout  time.Duration
	SnapshotEvery uint64 // raft snapshot threshold (entries); 0 = default
	Logger        *slog.Logger
	// PasswordKDF: Argon2id cost of administrator password hashes.
	PasswordKDF PasswordKDF
	// SessionTTL: how long a login session lasts (default 8h).
	SessionTTL time.Duration
	// CertIssuer signs endpoint client certificates (nil: token-only enrolment).
	CertIssuer CertIssuer
	// Sleep waits for a login throttle delay (tests replace it).
	Sleep func(ctx context.Context, d time.Duration) error
	// AuditSyslog mirrors each audit record to this writer (nil: no mirror).
	AuditSyslog io.Writer
	// AuditMaxFileBytes rotates audit files past this size (0: default).
	AuditMaxFileBytes int64
	// AuditRetention: closed audit files older than this are removed once
	// every backup destination holds a copy (0: kept for ever).
	AuditRetention time.Duration
	// CACert and CAKey are the CA files a full backup carries (empty: none).
	CACert, CAKey string
	// BackupScryptWorkFactor is age's scrypt cost for passphrase-encrypted
	// backups (0: age's default, 18; tests lower it).
	BackupScryptWorkFactor int
	// BackupTick is how often schedules and archiving are checked (default 30s).
	BackupTick time.Duration
	// NoAutoBackup turns off the full backups taken after key changes.
	NoAutoBackup bool
	// DrillMaxAge: a destination holding backups with no successful restore
	// drill this recent raises an alert (0: no alert).
	DrillMaxAge time.Duration
	// FreezeTimeout ends a freeze nobody thawed (0: DefaultFreezeTimeout).
	FreezeTimeout time.Duration

	// Cluster. ClusterBind empty: a standalone node on an
	// in-memory raft transport.
	ClusterBind, ClusterAdvertise string
	// FailoverThreshold: how long without the leader before another is
	// elected (raft's timeouts are derived from it).
	FailoverThreshold time.Duration
	// NoReadOnlyMode: a node without quorum refuses reads too.
	NoReadOnlyMode bool
	// APIURL is this node's HTTPS address, for the others to forward to.
	APIURL string
	// TLSDir holds the CA and the node certificate.
	TLSDir string
	// OnCAChanged is called after the CA certificate or the server
	// certificate in TLSDir changed (a join installed the cluster's, or the
	// server certificate was signed once the CA key became usable): the
	// server reloads both.
	OnCAChanged func() error
	// OwnCA: the CA in TLSDir is Coffer's own. Its private key is kept
	// sealed in the replicated state (a plain TLSDir/ca.key is moved there
	// when the keystore opens) and signs endpoint certificates, valid for
	// ClientCertValid, instead of CertIssuer.
	OwnCA           bool
	ClientCertValid time.Duration
	// Now is the clock of command times and of session, root token and
	// join token expiry (nil: the wall clock; tests set their own).
	Now func() time.Time
	// Peers calls the other nodes' APIs (joining, promotion, health);
	// needed by a cluster member only (internal/api/peer implements it).
	Peers Peers
}

// Lifecycle states.
const (
	StateUninitialized = "uninitialized"
	StateSealed        = "sealed"
	StateOpen          = "open"
)

// Service is one Coffer node's domain layer. It is the composition of a
// core and four parts, each with its own type and file set:
//
//   - the core (core, and the lifecycle methods on Service: service.go,
//     status.go, recovery.go, passthrottle.go, workers.go, audit.go): init,
//     open, seal, key and passphrase changes, the command path (applyLocked)
//     and the local reads of the state, the journal and the audit log;
//   - Objects (objects.go, kv.go, transit.go): managed objects, KV mounts and
//     secrets, transit keys;
//   - Access (admin.go, identity.go, roottokens.go, endpointcert.go):
//     wallets and grants, endpoints, users, sessions and tokens;
//   - Backups (backup.go, schedule.go, prune.go, freeze.go, objrestore.go,
//     restorepoint.go): destinations, schedules, backups and archiving,
//     journal pruning, the journal mirror, freeze, restores of objects;
//   - Cluster (cluster.go, nodetrust.go, joinguard.go, catchup.go):
//     membership, joins, node keys, catching up with the leader, and the
//     facts the transports ask to forward requests.
//
// Each part holds the fields it owns and embeds the core it works on. The
// core reaches the parts (through svc) at lifecycle transitions (open starts
// the backup host and the cluster's loops, seal stops them), for the
// freeze that refuses writes, and for the journal maintenance's prune (the
// backup host knows what its destinations still need).
type Service struct {
	*core
	Objects *Objects
	Access  *Access
	Backups *Backups
	Cluster *Cluster
}

// core is the keystore lifecycle and the command path: it owns the
// lifecycle lock and, under it, the keyring, the journal and the lifecycle
// state; the state store, the raft node and the audit log.
//
// Locks, in the order they are taken (a goroutine holding one takes only
// those listed after it):
//
//  1. a backup's run lock (backup.Manager, in Backups), or
//     Objects.nameLocks (one write by wallet and name, PutSecret / KVPut);
//  2. mu, the lifecycle lock (below); commands and reads hold its read side;
//  3. Objects.objLocks (the rotations of one object), under mu's read side;
//  4. Backups.mirrorMu (the attached journal mirror);
//  5. workersMu (retired workers) or Backups.freezeMu (the freeze state);
//  6. the locks inside state.Store, the journal and the raft node.
//
// Leaf locks, under which nothing else is taken: the throttle's, each
// Call's (the objects it touched), Cluster.joins' and Cluster.keys', and each
// worker group's. No goroutine of workers is waited for while mu is held
// (they take its read side): seal retires them under mu and waits for them
// after releasing it.
type core struct {
	cfg Config
	log *slog.Logger
	// statfsGate bounds status's disk measurements (disks.go).
	statfsGate statfsGate
	// certs: the TLS directory's certificates as status last read them
	// (certexpiry.go).
	certs certWatch
	// backupPolls keeps backup progress polls to one audit record per change.
	backupPolls pollAudit
	// svc is the composition this core belongs to, for the lifecycle's calls
	// into the parts.
	svc *Service
	// noStopSnapshot (tests) leaves the raft log as a kill -9 would.
	noStopSnapshot bool

	ks *keystore.Store
	st *state.Store
	// Records the read path looks up on every request, remembered at the
	// state's applied index (readmemo.go).
	tokens state.AppliedMemo[string, tokenRead]
	mounts state.AppliedMemo[string, state.VaultMount]
	grants state.AppliedMemo[grantKey, string]
	node   *cluster.Node
	bar    *barrier.Barrier

	// mu is the lifecycle lock: held for writing while opening, sealing or
	// changing the keyring; its read side is held by every command and read
	// that needs the keystore open. It guards ring, jr, state and workers
	// here, and Backups.backups, backupCtx and backupCancel.
	mu sync.RWMutex
	// runlock is mu.RUnlock, made once (openForRead returns it; a method
	// value made per call is an allocation per request).
	runlock func()
	ring    *keystore.Keyring
	jr      *journal.Journal
	state   string
	// workers are the goroutines of the current open (nil while sealed);
	// retired are those of earlier opens that seal has stopped but not yet
	// seen end (guarded by workersMu).
	workers   *workers
	workersMu sync.Mutex
	retired   []*workers

	stateV   atomic.Value          // mirror of state for lock-free reads
	writeErr atomic.Pointer[Alert] // raft log / disk guard
	throttle throttle              // failed logins and passphrase attempts per source

	nodeID        string
	audit         *audit.Log
	auditFailures atomic.Uint64
	warnings      []Alert // set in New only: conditions that do not stop writes
	// keyChangeHook is called after a key or passphrase change (set by the
	// backup host: full backups must follow).
	keyChangeHook atomic.Pointer[func(why string)]
	started       time.Time
	closed        atomic.Bool
}

// Objects are the managed objects (KMIP keys, secrets), KV mounts and
// transit keys, read and written through the core.
type Objects struct {
	*core
	// nameLocks serialise the writes to one wallet/name (taken before the
	// lifecycle lock), objLocks the rotations of one object (taken under its
	// read side); a slot per hash, see the lock order on core. Each is held
	// for a whole replicated write (raft's log fsync and the state's
	// commit), so there are enough slots that concurrent writers of
	// different names rarely share one (with 64 slots, about one in five of
	// 32 concurrent writers would wait for another's write).
	nameLocks [lockSlots]sync.Mutex
	objLocks  [lockSlots]sync.Mutex
}

// Access is who may do what: wallets and their grants, endpoints and their
// certificates, users and sessions, tokens.
type Access struct {
	*core
	pwSlots chan struct{} // bounds concurrent Argon2id password checks
}

// Backups is the backup host: destinations, schedules, the backup manager
// and the archiver, journal pruning, the journal mirror, freeze and the
// restore of single objects.
type Backups struct {
	*core
	// backups runs backups and archiving while the keystore is open;
	// backupCtx ends when it stops. Guarded by the lifecycle lock.
	backups      *backup.Manager
	backupCancel context.CancelFunc
	backupCtx    context.Context
	lastPrune    atomic.Pointer[JournalPrune] // the last automatic or manual prune round

	mirrorMu        sync.Mutex
	mirrorAt        string                // dir of the attached journal mirror; guarded by mirrorMu
	mirrorAttachErr atomic.Pointer[Alert] // the last mirror attach failed
	// openMirror opens the mirror journal (nil: journal.Open; tests hold its writes).
	openMirror func(journal.Options) (state.MirrorJournal, error)

	freezeMu      sync.Mutex // guards frozen, freezing and thawRequested
	frozen        *freezeState
	freezing      bool         // a freeze is writing its dump
	thawRequested bool         // a thaw arrived during that dump
	auditShip     auditShipper // audit files shipped to destinations and pruned (auditship.go)
	drills        drillCache   // restore drill results per destination (drill.go)
}

// Cluster is this node's membership: joins and admissions, node keys,
// passphrase and key replication, catching up with the leader, and the
// facts the transports ask to forward a request.
type Cluster struct {
	*core
	keys  *nodeKeys
	joins joinGuard // failed cluster join attempts per source
	// caughtUp: since its keystore was last opened, this follower has
	// applied everything the leader had committed when it asked
	// (catchup.go); leaderCommit is that leader commit index.
	caughtUp     atomic.Bool
	leaderCommit atomic.Uint64
}

// openAudit opens the audit log. One damage is repaired rather than
// refused: records lost from the tail (audit.head names a later record than
// the log holds), which is what a power loss leaves behind, since records are
// not fsynced one by one. The head is kept aside as evidence, the loss is
// logged as an error and shown in status, and the chain continues from the
// last record on disk. Any other damage refuses the start.
func (s *core) openAudit() (*audit.Log, error) {
	dir := datadir.AuditDir(s.cfg.DataDir)
	opts := audit.Options{MaxFileBytes: s.cfg.AuditMaxFileBytes, Syslog: s.cfg.AuditSyslog, Logger: s.cfg.Logger}
	defer s.auditWarnings(dir)
	l, err := audit.Open(dir, opts)
	var te *audit.TamperError
	if err == nil || !errors.As(err, &te) || te.Kind != audit.KindTruncated || te.File == audit.HeadFile || te.File == "" {
		return l, err
	}
	headPath := filepath.Join(dir, audit.HeadFile)
	headSeq, headHash, herr := audit.ReadHeadFile(headPath)
	if herr != nil || te.Seq == 0 || headSeq < te.Seq || headSeq-te.Seq >= maxAuditTailRepair {
		// Not the tail a power loss leaves: refuse, the operator decides.
		return nil, err
	}
	aside := filepath.Join(dir, fmt.Sprintf("%s.lost-tail-%s", audit.HeadFile, time.Now().UTC().Format("20060102T150405Z")))
	if rerr := os.Rename(headPath, aside); rerr != nil {
		return nil, fmt.Errorf("%w (and keeping the head aside failed: %v)", err, rerr)
	}
	l, oerr := audit.Open(dir, opts)
	if oerr != nil {
		return nil, oerr
	}
	msg := fmt.Sprintf("records %d to %d were lost from the end of the audit log (power loss or tampering); the old head (seq %d, hash %s) is kept as %s",
		te.Seq, headSeq, headSeq, headHash, filepath.Base(aside))
	s.log.Error("audit log tail lost; the chain continues from the last record on disk", "detail", msg)
	// The loss is itself recorded in the chain.
	if _, aerr := l.Append(audit.Record{Node: s.nodeID, Actor: "coffer", Transport: "internal", Operation: "auditTailLost", Result: "repaired", Error: msg}); aerr != nil {
		l.Close() // #nosec G104 -- closing after the failed append, which is the one returned
		return nil, aerr
	}
	return l, nil
}

// maxAuditTailRepair bounds the records a start repairs away: a bigger gap
// is not what a power loss leaves and refuses the start.
const maxAuditTailRepair = 1 << 20

// auditWarnings shows kept lost-tail heads in status until an operator
// removes them after the investigation.
func (s *core) auditWarnings(dir string) {
	kept, _ := filepath.Glob(filepath.Join(dir, audit.HeadFile+".lost-tail-*"))
	for _, k := range kept {
		s.warnings = append(s.warnings, newAlert(AlertAuditTailLost, "audit",
			fmt.Sprintf("audit records were lost at the end of the log (see %s and the auditTailLost record; compare with the syslog mirror); remove that file once investigated to clear this warning", k), time.Now().UTC()))
	}
}

// Alert is a condition an operator must see.
type Alert struct {
	Code      AlertCode `json:"code"`
	Component string    `json:"component"`
	Message   string    `json:"message"`
	Since     time.Time `json:"since"`
	// Runbook is the path, from the repository root, of what to do.
	Runbook string `json:"runbook,omitempty"`
}

// New opens the data dir (state, raft log) without opening the keystore.
func New(cfg Config) (*Service, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Name == "" {
		cfg.Name = "coffer"
	}
	if cfg.WriteRetryDelay <= 0 {
		cfg.WriteRetryDelay = 5 * time.Second
	}
	if cfg.ApplyTimeout <= 0 {
		cfg.ApplyTimeout = 10 * time.Second
	}
	if cfg.PasswordKDF == (PasswordKDF{}) {
		cfg.PasswordKDF = DefaultPasswordKDF
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = 8 * time.Hour
	}
	if cfg.Sleep == nil {
		cfg.Sleep = sleepCtx
	}
	if cfg.BackupTick <= 0 {
		cfg.BackupTick = 30 * time.Second
	}
	if cfg.ClusterBind != "" && cfg.Peers == nil {
		return nil, fmt.Errorf("%w: a cluster member needs a peer client (Config.Peers)", ErrInvalid)
	}
	if err := fsutil.EnsureDir(cfg.DataDir); err != nil {
		return nil, err
	}
	// Scratch space of object restores and verifications a crash cut short.
	if err := os.RemoveAll(datadir.RestoreTmpDir(cfg.DataDir)); err != nil {
		cfg.Logger.Warn("remove the scratch space of interrupted object restores", "error", err)
	}
	// Staging files of backups a crash cut short: no backup runs yet. A
	// node that opens as a follower never marks its interrupted backups
	// itself (the leader does), so this is the only removal it gets.
	backup.RemoveStaging(datadir.StagingDir(cfg.DataDir), cfg.Logger)
	nodeID, err := loadNodeID(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	st, err := state.Open(datadir.StatePath(cfg.DataDir), state.Options{Logger: cfg.Logger, RetryDelay: cfg.WriteRetryDelay, MirrorTimeout: cfg.MirrorTimeout})
	if err != nil {
		return nil, err
	}
	ccfg := cluster.Config{Dir: datadir.RaftDir(cfg.DataDir), NodeID: nodeID, Logger: cfg.Logger,
		SnapshotThreshold: cfg.SnapshotEvery, StableRetryDelay: cfg.WriteRetryDelay}
	if cfg.ClusterBind != "" {
		ccfg.Bind, ccfg.Advertise = cfg.ClusterBind, cfg.ClusterAdvertise
		ccfg.HeartbeatTimeout, ccfg.ElectionTimeout = raftTimeouts(cfg.FailoverThreshold)
	}
	keys := &nodeKeys{st: st}
	ccfg.PeerKey = keys.ok
	node, err := cluster.Open(ccfg)
	if err != nil {
		st.Close() // #nosec G104 -- closing after an earlier error, which is the one returned
		return nil, err
	}
	c := &core{
		cfg: cfg,
		log: cfg.Logger,
		ks: keystore.New(datadir.KeystoreDir(cfg.DataDir), keystore.Options{KDF: cfg.KDF, MachineIdentity: cfg.MachineIdentity,
			Warn: func(err error) { cfg.Logger.Warn("keystore", "warning", err) }}),
		st:      st,
		node:    node,
		bar:     barrier.New(),
		started: time.Now(),
		nodeID:  nodeID,
	}
	c.runlock = c.mu.RUnlock
	s := &Service{core: c,
		Objects: &Objects{core: c},
		Access:  &Access{core: c, pwSlots: make(chan struct{}, max(2, runtime.NumCPU()))},
		Backups: &Backups{core: c},
		Cluster: &Cluster{core: c, keys: keys},
	}
	c.svc = s
	s.audit, err = s.openAudit()
	if err != nil {
		s.Close() // #nosec G104 -- closing after an earlier error, which is the one returned
		return nil, fmt.Errorf("open the audit log (check it with coffer audit verify --data-dir; see the runbook \"audit log damaged\"): %w", err)
	}
	s.setStateLocked(StateSealed)
	if ok, err := s.ks.Exists(); err != nil {
		s.Close() // #nosec G104 -- closing after an earlier error, which is the one returned
		return nil, err
	} else if !ok {
		s.setStateLocked(StateUninitialized)
	}
	return s, nil
}

func loadNodeID(dir string) (string, error) {
	p := datadir.NodeIDPath(dir)
	b, err := os.ReadFile(p)
	if err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read node id: %w", err)
	}
	id := "node-" + randHex(6)
	if err := fsutil.WriteFile(p, []byte(id+"\n")); err != nil {
		return "", err
	}
	return id, nil
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// State is uninitialized, sealed or open. It never blocks, so health checks
// answer while an open or a rotation is in progress.
func (s *Service) State() string {
	if v, ok := s.stateV.Load().(string); ok {
		return v
	}
	return StateUninitialized
}

func (s *core) setStateLocked(st string) {
	s.state = st
	s.stateV.Store(st)
}

// Init creates the keystore with its first master key, opens it, and returns
// the root token (shown once; only its hash is stored). Only a local
// administrator (control socket or in-process) may initialise a server, so
// whoever first reaches the network port cannot take it over.
func (s *Service) Init(ctx context.Context, id Identity, passphrase []byte) (rootToken string, err error) {
	if !id.Local {
		return "", fmt.Errorf("%w: initialise through the local control socket: coffer init --data-dir DIR", ErrForbidden)
	}
	defer s.awaitWorkers() // those of a failed open, after the lock is released
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != StateUninitialized {
		return "", ErrAlreadyInit
	}
	ring, err := s.ks.Init(passphrase)
	if err != nil {
		return "", mapKeystoreErr(err)
	}
	// From here on the keystore exists: a failure leaves the node sealed
	// (open it and create a root token), never "uninitialised".
	s.setStateLocked(StateSealed)
	if err := s.openLocked(ctx, ring); err != nil {
		return "", fmt.Errorf("keystore created, but opening it failed (fix the cause, then coffer keystore open and coffer token create-root): %w", err)
	}
	tok, err := s.Access.createTokenLocked(ctx, "root", "root")
	if err != nil {
		return "", fmt.Errorf("keystore created and open, but the root token was not stored (retry with coffer token create-root --data-dir DIR): %w", err)
	}
	if _, err := s.applyResult(ctx, state.TypeWalletCreate, state.Wallet{Name: DefaultWallet, Description: "created at initialisation", CreatedBy: "init"}); err != nil {
		s.log.Warn("the default wallet was not created; create it with coffer wallet create", "error", err)
	}
	s.log.Info("keystore initialised", "generation", ring.Current())
	return tok, nil
}

// CreateRootToken issues a new root token. Local administrators only: it is
// how an operator recovers from a lost root token, or gets a short-lived
// one for a task (ttl > 0: it expires then; 0: it never does).
func (s *Service) CreateRootToken(ctx context.Context, id Identity, ttl time.Duration) (string, error) {
	if !id.Local {
		return "", fmt.Errorf("%w: root tokens are created only through the local control socket", ErrForbidden)
	}
	if ttl < 0 || ttl > MaxRootTokenTTL {
		return "", fmt.Errorf("%w: ttl %s: use 1m to %s, or 0 for a token that does not expire", ErrInvalid, ttl, MaxRootTokenTTL)
	}
	if ttl > 0 && ttl < time.Minute {
		return "", fmt.Errorf("%w: ttl %s: at least 1m", ErrInvalid, ttl)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.requireOpenLocked(); err != nil {
		return "", err
	}
	tok, h := newToken()
	t := state.Token{Hash: h, Kind: state.TokenRoot, Policy: "root", Name: "root", Created: time.Now().UTC()}
	if ttl > 0 {
		exp := t.Created.Add(ttl)
		t.Expires = &exp
	}
	if err := s.applyLocked(ctx, state.TypeTokenCreate, t); err != nil {
		return "", fmt.Errorf("store root token: %w", err)
	}
	s.log.Warn("root token created through the local control socket", "accessor", accessorOf(h), "ttl", ttl.String())
	return tok, nil
}

// Open opens the keystore with the passphrase and starts serving.
func (s *Service) Open(ctx context.Context, passphrase []byte) error {
	done, err := s.passphraseAttempt(ctx, "open")
	if err != nil {
		return err
	}
	err = s.open(ctx, func() (*keystore.Keyring, error) { return s.ks.Open(passphrase) })
	done(err)
	return err
}

// OpenAuto opens the keystore with keystore.aks. It takes no passphrase,
// so a request that came over a transport needs a system administrator
// (the control socket is one): otherwise anyone reaching the port could
// undo an administrator's seal. The server itself (no transport) may.
func (s *Service) OpenAuto(ctx context.Context) error {
	if c := CallFrom(ctx); c != nil && c.Transport != "" {
		if _, err := requireRole(ctx, RoleSystemAdmin, "opening the keystore with auto-open"); err != nil {
			return err
		}
	}
	return s.open(ctx, s.ks.OpenAuto)
}

func (s *core) open(ctx context.Context, get func() (*keystore.Keyring, error)) (err error) {
	// The goroutines of the last open end first (and those of this one if
	// it fails), so those of two opens never run side by side.
	s.awaitWorkers() // #nosec G104 -- awaitWorkers logs the tasks of the last open still running; this open goes on regardless (they were told to stop)
	defer func() {
		if err != nil {
			s.awaitWorkers() // #nosec G104 -- awaitWorkers logs the tasks still running itself; the seal stands either way
		}
	}()
	if s.closed.Load() {
		return ErrStopping
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.state {
	case StateUninitialized:
		return ErrUninitialized
	case StateOpen:
		return ErrAlreadyOpen
	}
	ring, err := get()
	if err != nil {
		return mapKeystoreErr(err)
	}
	return s.openLocked(ctx, ring)
}

// openLocked checks that the state and the raft log belong together, loads
// the data keys, repairs and completes the journal from the raft log, starts
// raft, and finishes an interrupted init or MEK rotation. On any error it
// undoes everything: the node stays sealed.
func (s *core) openLocked(ctx context.Context, ring *keystore.Keyring) (err error) {
	defer func() {
		if err != nil {
			ring.Wipe() // sealed: nothing may keep keys in memory
		}
	}()
	if err := s.reconcileLocked(); err != nil {
		return err
	}
	if nr, err := s.svc.Cluster.syncGenerations(ring); err != nil {
		// Open with what this keystore holds; a data key it cannot unwrap
		// is refused below with its generation named.
		s.log.Error("master key generations of the cluster not added", "error", err)
	} else {
		ring = replaceRing(ring, nr)
	}
	keys, current, err := s.st.DEKs()
	if err != nil {
		return fmt.Errorf("read data keys: %w", err)
	}
	if err := s.bar.Unseal(ring, keys, current); err != nil {
		return fmt.Errorf("load data keys: %w", err)
	}
	jr, err := s.openJournalLocked()
	if err != nil {
		s.bar.Drop()
		return err
	}
	if err := state.WriteTimelineFile(datadir.JournalDir(s.cfg.DataDir), s.st.Timeline()); err != nil {
		jr.Close() // #nosec G104 -- closing after an earlier error, which is the one returned; nothing was appended since it opened
		s.bar.Drop()
		return fmt.Errorf("journal: %w", err)
	}
	if r := jr.Repaired(); r != nil {
		s.log.Warn("journal torn tail repaired", "file", r.File, "offset", r.Offset, "dropped_bytes", r.DroppedBytes, "reason", r.Reason)
	}
	if last, err := s.node.LastIndex(); err != nil || jr.LastIndex() > max(last, s.st.AppliedIndex()) {
		jr.Close() // #nosec G104 -- closing after an earlier error, which is the one returned; nothing was appended since it opened
		s.bar.Drop()
		if err != nil {
			return err
		}
		return fmt.Errorf("%w: the journal in %s ends at index %d, beyond the raft log (%d) and the state (%d): state.db and raft/ were lost or replaced while the journal was kept; refusing to start, as new records would collide with old ones (restore from a backup, or move the journal aside to start a new history)",
			ErrUnavailable, datadir.JournalDir(s.cfg.DataDir), jr.LastIndex(), last, s.st.AppliedIndex())
	}
	w := newWorkers()
	defer func() {
		if err != nil {
			s.svc.Backups.stopBackups()
			s.svc.Backups.detachMirror()
			if s.workers != w {
				w.stop() // failed before it started anything
			}
			s.retireWorkersLocked() // the caller waits for them, without the lock
			s.st.Interrupt()
			if err := s.node.Stop(); err != nil {
				s.log.Error("stop raft after a failed open", "error", err)
			}
			s.st.Detach()
			if err := jr.Close(); err != nil {
				s.log.Error("close the journal after a failed open (the next open rebuilds it from the raft log)", "error", err)
			}
			s.bar.Drop()
			s.ring, s.jr = nil, nil
			s.setStateLocked(StateSealed)
		}
	}()
	s.st.Attach(jr, s.node.LogStore(), s.bar)
	if err := s.st.FillJournal(); err != nil {
		return fmt.Errorf("%w: complete the journal from the raft log: %w", ErrUnavailable, err)
	}
	s.snapshotAtStartLocked()
	if s.clustered() {
		conf, err := s.svc.Cluster.nodeTLSLocked()
		if err != nil {
			return err
		}
		s.node.SetTLS(conf)
	}
	if err := s.node.Start(s.st, s.svc.Cluster.joining()); err != nil {
		return err
	}
	if s.clustered() {
		// A member waits a little for a leader, but opens without one: a
		// node without quorum serves reads (read-only restricted mode).
		hb, _ := raftTimeouts(s.cfg.FailoverThreshold)
		wctx, cancel := context.WithTimeout(ctx, 6*hb+2*time.Second)
		err := s.node.WaitReady(wctx)
		cancel()
		if err != nil {
			s.log.Warn("no leader yet: open in read-only restricted mode until quorum returns", "error", err)
		}
	} else {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := s.node.WaitLeader(wctx); err != nil {
			return err
		}
	}
	s.ring, s.jr, s.workers = ring, jr, w
	s.setStateLocked(StateOpen)
	w.Go("journal maintenance", func(ctx context.Context) { s.maintenance(ctx, jr) })
	if s.clustered() {
		s.svc.Cluster.startLoops(w)
	}
	if s.clustered() && !s.node.IsLeader() {
		// Followers change nothing at open: the leader initialises,
		// re-wraps and records; its entries arrive through raft.
		s.svc.Backups.attachMirrorLocked() // #nosec G104 -- attachMirrorLocked records its failure as a status alert, and the loop retries
		s.svc.Backups.startBackups()
		s.tendCAKeyLocked(ctx)
		s.log.Info("keystore open (cluster member)", "role", s.svc.Cluster.Role(), "generation", ring.Current(), "applied_index", s.st.AppliedIndex())
		return nil
	}
	if s.st.ClusterID() == "" {
		wk, err := barrier.NewKey(ring, 1, time.Now())
		if err != nil {
			return err
		}
		if err := s.applyLocked(ctx, state.TypeClusterInit, state.ClusterInit{ClusterID: "cl-" + randHex(8), Key: wk}); err != nil {
			return fmt.Errorf("initialise cluster state: %w", err)
		}
	}
	if err := s.rewrapLocked(ctx); err != nil {
		return err
	}
	if err := s.svc.Backups.ensureLocal(ctx); err != nil {
		s.log.Warn("the LOCAL backup destination was not recorded; backups to it will retry", "error", err)
	}
	if err := s.svc.Backups.attachMirrorLocked(); err != nil {
		s.log.Error("journal mirror not attached", "error", err)
	}
	s.svc.Backups.startBackups()
	s.svc.Cluster.afterOpenClustered(ctx)
	s.tendCAKeyLocked(ctx)
	s.log.Info("keystore open", "generation", ring.Current(), "applied_index", s.st.AppliedIndex())
	return nil
}

// maxGapRebuilds bounds the gaps one open rebuilds (one per moved segment).
const maxGapRebuilds = 1000

// openJournalLocked opens the journal. Records missing between two segments
// (a damaged segment moved aside, as the runbook says) are rebuilt from the
// raft log when it still holds them; otherwise the open is refused with an
// error naming the segments to move aside and why. Other damage is refused
// with what to do. These are unavailable errors, never about the keystore:
// opening with the passphrase fails the same way until the journal is fixed.
// The barrier must be unsealed.
func (s *core) openJournalLocked() (*journal.Journal, error) {
	dir := datadir.JournalDir(s.cfg.DataDir)
	opts := journal.Options{Dir: dir, Name: s.cfg.Name, MaxSegmentBytes: s.cfg.JournalMaxBytes, MaxSegmentAge: s.cfg.JournalMaxAge}
	for rebuilt := 0; ; rebuilt++ {
		jr, err := journal.Open(opts)
		if err == nil {
			return jr, nil
		}
		var ce *journal.CorruptError
		if !errors.As(err, &ce) {
			return nil, fmt.Errorf("open journal: %w", err)
		}
		if ce.Gap == nil || rebuilt >= maxGapRebuilds {
			return nil, fmt.Errorf("%w: the journal in %s is damaged: %w; keep the damaged segment for analysis, move it aside and open again: its records still in the raft log are rebuilt (coffer check --data-dir says what the next open does; runbook \"The journal is damaged\")",
				ErrUnavailable, dir, err)
		}
		g := *ce.Gap
		first, err := s.node.FirstIndex()
		if err != nil {
			return nil, fmt.Errorf("open journal: read the raft log: %w", err)
		}
		rebuild, msg := g.Advice(first)
		if !rebuild {
			return nil, fmt.Errorf("%w: the journal in %s: %s", ErrUnavailable, dir, msg)
		}
		info, err := s.st.RebuildJournalGap(opts, g, s.node.LogStore(), s.bar)
		if err != nil {
			return nil, fmt.Errorf("%w: the journal in %s misses records %d-%d between %s and %s, and rebuilding them from the raft log failed: %w",
				ErrUnavailable, dir, g.From, g.To, g.Prev, g.Next, err)
		}
		s.log.Warn("journal records missing between two segments rebuilt from the raft log", "segment", info.Name,
			"from", g.From, "to", g.To, "after", g.Prev, "before", g.Next)
	}
}

// reconcileLocked makes sure state.db and the raft log describe the same
// history before raft starts. If the state is behind the latest raft snapshot
// (state.db lost or replaced by an older copy), it is restored from that
// snapshot; if the raft log ends before the state (raft dir lost or replaced)
// or disagrees on the term of the last applied entry, opening is refused:
// starting anyway would silently drop or overwrite acknowledged writes.
func (s *core) reconcileLocked() error {
	applied, appliedTerm := s.st.AppliedIndex(), s.st.AppliedTerm()
	snapIdx, err := s.node.SnapshotIndex()
	if err != nil {
		return err
	}
	// Raft's snapshot index also counts no-op and barrier entries, which the
	// state never applies: only a real gap needs a restore.
	if snapIdx > applied && s.node.HasFSMEntries(applied+1, snapIdx) {
		s.log.Warn("state.db is behind the raft snapshot: restoring it from the snapshot", "applied", applied, "snapshot", snapIdx)
		if err := s.node.RestoreLatestSnapshot(s.st); err != nil {
			return fmt.Errorf("state.db is at index %d, behind the raft snapshot at %d, and restoring it failed: %w", applied, snapIdx, err)
		}
		applied, appliedTerm = s.st.AppliedIndex(), s.st.AppliedTerm()
	}
	last, err := s.node.LastIndex()
	if err != nil {
		return err
	}
	if applied > last {
		return fmt.Errorf("%w: state.db has applied index %d but the raft log in %s ends at %d: the raft directory was lost or replaced; refusing to start, as new writes would be silently dropped (restore from a backup)", ErrUnavailable, applied, datadir.RaftDir(s.cfg.DataDir), last)
	}
	// Raft replays from its snapshot (or from 1); the log must still hold the
	// entries after what the state has.
	first, err := s.node.FirstIndex()
	if err != nil {
		return err
	}
	if first > 0 && first > max(applied, snapIdx)+1 {
		return fmt.Errorf("%w: state.db is at index %d and the latest raft snapshot at %d, but the raft log starts at %d: entries %d-%d are gone; refusing to start (restore from a backup)", ErrUnavailable, applied, snapIdx, first, max(applied, snapIdx)+1, first-1)
	}
	if applied > 0 {
		if term, ok := s.node.TermAt(applied); ok && appliedTerm != 0 && term != appliedTerm {
			return fmt.Errorf("%w: state.db and the raft log disagree at index %d (terms %d and %d): they come from different histories; refusing to start (restore from a backup)", ErrUnavailable, applied, appliedTerm, term)
		}
	}
	return nil
}

// rewrapLocked re-wraps every data key not wrapped by the current MEK
// generation (completes a rotation that was interrupted, or was just done).
func (s *core) rewrapLocked(ctx context.Context) error {
	keys, _, err := s.st.DEKs()
	if err != nil {
		return err
	}
	var out []barrier.WrappedKey
	for _, wk := range keys {
		if wk.MEKGen == s.ring.Current() {
			continue
		}
		nk, err := barrier.Rewrap(s.ring, wk)
		if err != nil {
			return err
		}
		out = append(out, nk)
	}
	if len(out) == 0 {
		return nil
	}
	if err := s.applyLocked(ctx, state.TypeDEKRewrap, out); err != nil {
		return fmt.Errorf("re-wrap data keys under MEK generation %d: %w", s.ring.Current(), err)
	}
	s.log.Info("data keys re-wrapped", "count", len(out), "generation", s.ring.Current())
	return nil
}

// Seal stops raft and drops every key from memory.
func (s *Service) Seal(ctx context.Context) error {
	if _, err := requireRole(ctx, RoleSystemAdmin, "sealing the keystore"); err != nil {
		return err
	}
	s.mu.Lock()
	var err error
	switch s.state {
	case StateUninitialized:
		err = ErrUninitialized
	case StateSealed:
		err = ErrSealed
	default:
		err = s.sealLocked()
	}
	s.mu.Unlock()
	// Sealed either way: goroutines that outlive SealWait are logged (and
	// the next open waits for them again before it starts its own).
	s.awaitWorkers() // #nosec G104 -- awaitWorkers logs the tasks still running itself; the seal stands either way
	return err
}

// sealLocked seals; the caller waits for the open's goroutines with
// awaitWorkers once it has released the lifecycle lock.
func (s *core) sealLocked() error {
	s.svc.Backups.stopBackups()
	s.svc.Backups.detachMirror()
	s.retireWorkersLocked()
	if s.state == StateOpen && !s.noStopSnapshot {
		s.snapshotAtStopLocked()
	}
	s.st.Interrupt() // a batch retrying a failed write must not block raft's shutdown
	err := s.node.Stop()
	s.st.Detach()
	if s.jr != nil {
		if cerr := s.jr.Close(); err == nil {
			err = cerr
		}
	}
	s.bar.Drop()
	s.ring.Wipe()
	s.ring, s.jr = nil, nil
	s.setStateLocked(StateSealed)
	s.log.Info("keystore sealed")
	return err
}

// stopSnapshotMin is how many raft entries since the last snapshot make a
// clean stop (or seal) take one: fewer cost the next start only milliseconds,
// while a snapshot writes the whole state.
const stopSnapshotMin = 1024

// snapshotAtStartLocked writes a raft snapshot at the applied index before
// raft starts, when the log since the last snapshot has reached raft's
// snapshot threshold. A node killed every few seconds never reaches that
// threshold while running, and raft reads every entry since the last
// snapshot at each start (a scan for configuration entries, then a replay the
// FSM skips): without this the restart time grows with the history. The
// snapshot's data (the whole state) is written in the background
// (cluster.SnapshotBeforeStart). The journal is complete up to the applied
// index here (FillJournal), which the state's snapshot requires. A failure
// only costs time: it is logged.
//
// A restored node's raft dir holds only the description of its snapshot
// (cluster.Seed): it is written at every start until one is written, since
// a node joining this one needs its data.
func (s *core) snapshotAtStartLocked() {
	applied := s.st.AppliedIndex()
	snapIdx, err := s.node.SnapshotIndex()
	seeded := err == nil && s.node.SeedUnwritten() && applied >= snapIdx
	if !seeded && (err != nil || applied <= snapIdx || applied-snapIdx < s.node.SnapshotThreshold()) {
		return
	}
	term := s.st.AppliedTerm()
	if term == 0 {
		term, _ = s.node.TermAt(applied)
	}
	ci, cd, ok := s.st.RaftConfiguration()
	if !ok {
		ci, cd, ok = s.node.ConfigurationAt(applied)
	} else if si, sd, sok := s.node.SnapshotConfiguration(); sok && si > ci {
		// The state did not apply the snapshot's configuration entry: a
		// restored state records that of the cluster its backup came
		// from, while the restore's snapshot names the new node.
		ci, cd = si, sd
	}
	if !ok {
		s.log.Warn("no raft snapshot at startup: the raft configuration is not known; raft reads its log since the last snapshot", "applied_index", applied, "snapshot_index", snapIdx)
		return
	}
	t0 := time.Now()
	if err := s.node.SnapshotBeforeStart(s.st, applied, term, ci, cd); err != nil {
		if seeded {
			s.log.Error("raft snapshot of the restored state not made at startup: a node joining this one cannot be sent it until raft takes one; the next start tries again", "error", err)
			return
		}
		s.log.Warn("raft snapshot at startup failed; raft reads its log since the last snapshot", "error", err)
		return
	}
	s.log.Info("raft snapshot taken at startup (its data is written in the background)", "index", applied, "entries_since_previous", applied-snapIdx, "took", time.Since(t0).Round(time.Millisecond))
}

// snapshotAtStopLocked takes a raft snapshot before a clean stop or seal when
// at least stopSnapshotMin entries were logged since the last one, so the
// next start reads only what comes after it, unless writes are failing. A
// failure is logged.
func (s *core) snapshotAtStopLocked() {
	if len(s.st.Health()) > 0 {
		// A state or journal write is failing and being retried: raft's
		// snapshot would wait for the FSM, which waits for the disk.
		return
	}
	snapIdx, err := s.node.SnapshotIndex()
	if err != nil {
		return
	}
	last, err := s.node.LastIndex()
	if err != nil || last < snapIdx+stopSnapshotMin {
		return
	}
	t0 := time.Now()
	if err := s.node.Snapshot(); err != nil {
		s.log.Warn("raft snapshot at stop failed; the next start reads the raft log since the last snapshot", "error", err)
		return
	}
	s.log.Info("raft snapshot taken at stop", "entries_since_previous", last-snapIdx, "took", time.Since(t0).Round(time.Millisecond))
}

// RotateMasterKey adds a new MEK generation and re-wraps the data keys.
func (s *Service) RotateMasterKey(ctx context.Context) (uint32, error) {
	if _, err := requireRole(ctx, RoleSystemAdmin, "rotating the master key"); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.requireOpenLocked(); err != nil {
		return 0, err
	}
	if err := s.writableLocked(); err != nil {
		return 0, err
	}
	var ring *keystore.Keyring
	var notDurable error
	if s.clustered() {
		// In a cluster the new generation is committed through raft first
		// (wrapped under the current one, which every node holds); only
		// then does any keystore, this one included, take it. A rotation
		// refused or cut off changes no keystore.
		if !s.node.IsLeader() {
			return 0, fmt.Errorf("%w: in a cluster the master key is rotated on the leader (writes reaching a follower are forwarded there)", ErrConflict)
		}
		w, err := s.ring.NewGeneration()
		if err != nil {
			return 0, err
		}
		if err := s.applyLocked(ctx, state.TypeMEKGen, w); err != nil {
			return 0, err
		}
		// With ErrNotDurable keystore.ks holds the new generation (only
		// its directory sync failed): its keyring is the one to hold.
		if ring, err = s.ks.AddGenerations(s.ring, []keystore.WrappedGen{w}); ring == nil {
			return 0, fmt.Errorf("the new master key generation %d is committed, but this node's keystore did not take it (it retries): %w", w.Gen, err)
		}
		notDurable = err
	} else {
		// With ErrNotDurable the rotated keystore.ks is in place (only its
		// directory sync failed): its keyring is the one to hold.
		r, err := s.ks.Rotate(s.ring)
		if r == nil {
			return 0, mapKeystoreErr(err)
		}
		ring, notDurable = r, err
	}
	s.bar.SetKeyring(ring)
	s.ring = replaceRing(s.ring, ring)
	if err := s.rewrapLocked(ctx); err != nil {
		// The keystore has the new generation; the next open finishes the re-wrap.
		return ring.Current(), err
	}
	s.log.Info("master key rotated", "generation", ring.Current())
	s.afterKeyChange(ctx, "master key rotated")
	return ring.Current(), notDurableErr(s.log, fmt.Sprintf("master key rotated to generation %d and in use", ring.Current()), notDurable)
}

// ChangePassphrase re-seals the keystore under a new passphrase.
func (s *Service) ChangePassphrase(ctx context.Context, old, new []byte) error {
	if _, err := requireRole(ctx, RoleSystemAdmin, "changing the passphrase"); err != nil {
		return err
	}
	// Throttled before the lifecycle lock: a delay never holds it.
	done, err := s.passphraseAttempt(ctx, "change-passphrase")
	if err != nil {
		return err
	}
	checked := errNotChecked
	defer func() { done(checked) }()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state == StateUninitialized {
		return ErrUninitialized
	}
	if s.clustered() && (s.state != StateOpen || !s.node.IsLeader()) {
		return fmt.Errorf("%w: in a cluster the keystore passphrase is changed on the open leader, and reaches every node from there (coffer cluster status names the leader)", ErrConflict)
	}
	// With ErrNotDurable keystore.ks is re-sealed (only its directory sync
	// failed): the passphrase was right and the keyring handed back is the
	// one to hold.
	ring, err := s.ks.ChangePassphrase(old, new)
	if ring == nil {
		checked = err
		return mapKeystoreErr(err)
	}
	checked = nil
	notDurable := err
	if s.state == StateOpen {
		s.bar.SetKeyring(ring)
		s.ring = replaceRing(s.ring, ring)
	} else {
		ring.Wipe() // sealed: nothing may keep keys in memory
	}
	if s.clustered() {
		if err := s.Cluster.replicatePassphraseLocked(ctx, new); err != nil {
			s.log.Error("the new keystore passphrase did not reach the other nodes; change it again", "error", err)
		}
	}
	s.log.Info("keystore passphrase changed")
	s.afterKeyChange(ctx, "keystore passphrase changed")
	return notDurableErr(s.log, "keystore passphrase changed and in use", notDurable)
}

// notDurableErr is nil for a nil err; else, for a keystore write that
// ErrNotDurable reports in place but not synced, it logs the fact and
// answers 503 saying that done is done.
func notDurableErr(log *slog.Logger, done string, err error) error {
	if err == nil {
		return nil
	}
	logNotDurable(log, done, err)
	return fmt.Errorf("%s, but: %w", done, mapKeystoreErr(err))
}

// logNotDurable logs that done is done but keystore.ks, written in place,
// was not synced (err).
func logNotDurable(log *slog.Logger, done string, err error) {
	log.Error(done+", but keystore.ks may not survive a power loss; check the data dir's disk", "error", err)
}

// ResetPassphrase re-seals the open keystore under a new passphrase without
// the old one (for a lost passphrase while the keystore is open). Transports
// allow it only to local administrators.
func (s *Service) ResetPassphrase(ctx context.Context, id Identity, new []byte) error {
	if !id.Local {
		return fmt.Errorf("%w: a passphrase reset is allowed only through the local control socket (coffer keystore reset-passphrase --data-dir DIR)", ErrForbidden)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.requireOpenLocked(); err != nil {
		return err
	}
	ring, err := s.ks.ResetPassphrase(s.ring, new)
	if ring == nil {
		return mapKeystoreErr(err)
	}
	s.bar.SetKeyring(ring)
	s.ring = replaceRing(s.ring, ring)
	s.log.Warn("keystore passphrase reset through the local control socket")
	s.afterKeyChange(ctx, "keystore passphrase reset")
	return notDurableErr(s.log, "keystore passphrase reset and in use", err)
}

// EnableAutoOpen writes keystore.aks for this machine.
func (s *Service) EnableAutoOpen(ctx context.Context) error {
	if _, err := requireRole(ctx, RoleSystemAdmin, "enabling auto-open"); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.requireOpenLocked(); err != nil {
		return err
	}
	if err := s.ks.EnableAutoOpen(s.ring); err != nil {
		return mapKeystoreErr(err)
	}
	s.log.Info("auto-open enabled")
	return nil
}

// DisableAutoOpen deletes keystore.aks.
func (s *Service) DisableAutoOpen(ctx context.Context) error {
	if _, err := requireRole(ctx, RoleSystemAdmin, "disabling auto-open"); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state == StateUninitialized {
		return ErrUninitialized
	}
	if err := s.ks.DisableAutoOpen(); err != nil {
		return mapKeystoreErr(err)
	}
	s.log.Info("auto-open disabled")
	return nil
}

// AutoOpenEnabled reports whether keystore.aks exists.
func (s *Service) AutoOpenEnabled() bool {
	ok, _ := s.ks.AutoOpenEnabled()
	return ok
}

// RotateDataKey creates a new data key used for new writes.
func (s *Service) RotateDataKey(ctx context.Context) (uint32, error) {
	if _, err := requireRole(ctx, RoleSystemAdmin, "rotating the data key"); err != nil {
		return 0, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.requireOpenLocked(); err != nil {
		return 0, err
	}
	keys, _, err := s.st.DEKs()
	if err != nil {
		return 0, err
	}
	var max uint32
	for _, k := range keys {
		if k.ID > max {
			max = k.ID
		}
	}
	wk, err := barrier.NewKey(s.ring, max+1, time.Now())
	if err != nil {
		return 0, err
	}
	if err := s.applyLocked(ctx, state.TypeDEKCreate, wk); err != nil {
		return 0, err
	}
	return wk.ID, nil
}

// RotateJournal closes the open segment and starts a new one.
func (s *Service) RotateJournal(ctx context.Context) (journal.SegmentInfo, error) {
	if _, err := requireRole(ctx, RoleSystemAdmin, "rotating the journal"); err != nil {
		return journal.SegmentInfo{}, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if err := s.requireOpenLocked(); err != nil {
		return journal.SegmentInfo{}, err
	}
	seg, err := s.jr.Rotate()
	if err == nil {
		s.log.Info("journal rotated", "closed", seg.Name, "last_index", seg.LastIndex)
	}
	return seg, err
}

// JournalSegments lists segments; it works sealed too (reads the files).
func (s *Service) JournalSegments(ctx context.Context) ([]journal.SegmentInfo, error) {
	if _, err := requireRole(ctx, RoleSystemAdmin, "listing journal segments"); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.jr != nil {
		return s.jr.Segments(), nil
	}
	segs, err := journal.ListSegments(datadir.JournalDir(s.cfg.DataDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil // never opened: no journal yet
	}
	return segs, err
}

func (s *core) requireOpenLocked() error {
	switch s.state {
	case StateUninitialized:
		return ErrUninitialized
	case StateSealed:
		return ErrSealed
	}
	return nil
}

// writableLocked refuses writes while storage is failing or the disk is
// nearly full, so that nothing is half-written and reads keep working.
func (s *core) writableLocked() error {
	if s.closed.Load() {
		return ErrStopping
	}
	if err := s.svc.Backups.frozenErr(); err != nil {
		return err
	}
	if hs := s.st.Health(); len(hs) > 0 {
		h := hs[0]
		return fmt.Errorf("%w: %s write failing since %s (%s); retrying every %s", ErrWriteUnavailable,
			h.Component, h.Since.Format(time.RFC3339), h.Error, s.cfg.WriteRetryDelay)
	}
	if err := s.checkDisk(); err != nil {
		return err
	}
	if a := s.writeErr.Load(); a != nil {
		if time.Since(a.Since) >= s.cfg.WriteRetryDelay {
			s.writeErr.CompareAndSwap(a, nil) // retry: let this write probe
		} else {
			return fmt.Errorf("%w: %s (since %s; retrying after %s)", ErrWriteUnavailable, a.Message, a.Since.Format(time.RFC3339), s.cfg.WriteRetryDelay)
		}
	}
	return nil
}

// maintenance runs while the keystore is open: it retries a failed journal
// write every WriteRetryDelay (so the node recovers once the disk has room
// even with no new writes), re-checks free space, and closes a journal
// segment that has outlived JournalMaxAge even when no write comes to
// trigger the rotation.
func (s *core) maintenance(ctx context.Context, jr *journal.Journal) {
	retry := time.NewTicker(s.cfg.WriteRetryDelay)
	defer retry.Stop()
	ageEvery := time.Hour
	if a := s.cfg.JournalMaxAge; a > 0 {
		ageEvery = min(max(a/4, 100*time.Millisecond), 10*time.Second)
	}
	age := time.NewTicker(ageEvery)
	defer age.Stop()
	pruneEvery := s.cfg.JournalPruneEvery
	if pruneEvery <= 0 {
		pruneEvery = time.Minute
	}
	prune := time.NewTicker(pruneEvery)
	defer prune.Stop()
	certs := time.NewTicker(time.Hour)
	defer certs.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-certs.C:
			s.tendServerCert()
		case <-prune.C:
			if s.cfg.JournalNoPrune {
				continue
			}
			if _, err := s.svc.Backups.pruneJournal(false); err != nil && !errors.Is(err, ErrConflict) && !errors.Is(err, ErrSealed) {
				s.log.Warn("journal prune failed; the next round retries", "error", err)
			}
		case <-retry.C:
			for _, h := range s.st.Health() {
				if h.Component == "journal" {
					s.st.FillJournal() // #nosec G104 -- FillJournal records its failure in Health (logged, shown in status) and the next tick retries
				}
			}
			s.st.ResyncMirror()
			s.checkDisk() // #nosec G104 -- checkDisk raises the disk-full alert itself; its error is for write paths to refuse with
		case <-age.C:
			if s.cfg.JournalMaxAge <= 0 {
				continue
			}
			segs := jr.Segments()
			if n := len(segs); n > 0 && segs[n-1].Records > 0 && time.Since(segs[n-1].Created) >= s.cfg.JournalMaxAge {
				if seg, err := jr.Rotate(); err != nil {
					s.log.Error("journal rotation by age failed", "error", err)
				} else {
					s.log.Info("journal rotated by age", "closed", seg.Name, "last_index", seg.LastIndex)
				}
			}
		}
	}
}

// checkDisk refuses writes while the data dir's filesystem is below
// MinFreeBytes, and clears the alert once space is back.
func (s *core) checkDisk() error {
	if s.cfg.MinFreeBytes == 0 {
		return nil
	}
	var fs syscall.Statfs_t
	if err := syscall.Statfs(s.cfg.DataDir, &fs); err != nil {
		return nil
	}
	free := fs.Bavail * uint64(fs.Bsize) // #nosec G115 -- the block size statfs reports is positive
	if free < s.cfg.MinFreeBytes {
		msg := fmt.Sprintf("data directory %s has %d bytes free, below min_free_bytes %d: writes paused until space is freed", s.cfg.DataDir, free, s.cfg.MinFreeBytes)
		s.raise(AlertDiskFull, "disk", msg)
		return fmt.Errorf("%w: %s", ErrWriteUnavailable, msg)
	}
	if a := s.writeErr.Load(); a != nil && a.Component == "disk" {
		s.writeErr.CompareAndSwap(a, nil)
		s.log.Info("disk space available again; writes resume")
	}
	return nil
}

func (s *core) raise(code AlertCode, component, msg string) {
	old := s.writeErr.Load()
	if old != nil && old.Component == component && old.Message == msg {
		return
	}
	a := newAlert(code, component, msg, time.Now().UTC())
	if s.writeErr.CompareAndSwap(old, &a) {
		s.log.Error("writes refused", "component", component, "reason", msg)
	}
}

// clustered: this node runs a cluster transport (ClusterBind is set);
// otherwise it is a standalone node on an in-memory raft transport.
func (s *core) clustered() bool { return s.cfg.ClusterBind != "" }

// apply proposes one command (lifecycle read-locked by the caller).
func (s *core) applyLocked(ctx context.Context, t state.Type, body any) error {
	_, err := s.applyResult(ctx, t, body)
	return err
}

func (s *core) applyResult(ctx context.Context, t state.Type, body any) (any, error) {
	if err := s.writableLocked(); err != nil {
		return nil, err
	}
	cmd, err := state.NewCommand(t, s.now(), body)
	if err != nil {
		return nil, err
	}
	actx, cancel := context.WithTimeout(ctx, s.cfg.ApplyTimeout)
	defer cancel()
	res, err := s.node.Apply(actx, cmd.Marshal())
	if err != nil {
		leaderKnown := false
		if s.clustered() {
			id, _ := s.node.Leader()
			leaderKnown = id != "" || s.node.IsLeader()
		}
		if e := applyError(err, ctx.Err() != nil, s.clustered(), leaderKnown); e != nil {
			return nil, e
		}
		if hs := s.st.Health(); len(hs) > 0 {
			// The entry is in the raft log; the state machine is retrying it.
			return nil, fmt.Errorf("%w: outcome unknown, the %s write is failing and being retried (%s)", ErrWriteUnavailable, hs[0].Component, hs[0].Error)
		}
		if errors.Is(err, cluster.ErrTimeout) {
			// Not confirmed in time (raft busy or stuck); not a storage error by itself.
			return nil, fmt.Errorf("%w: the write was not confirmed within %s (%v); check before sending it again", ErrOutcomeUnknown, s.cfg.ApplyTimeout, err)
		}
		s.raise(AlertRaftWriteFailed, "raft", "raft log write failed: "+err.Error())
		return nil, fmt.Errorf("%w: %v", ErrWriteUnavailable, err)
	}
	if e, ok := res.(error); ok {
		if errors.Is(e, state.ErrAbandoned) {
			// Committed, applied at the next start; this caller gets no result.
			return nil, fmt.Errorf("%w: %v", ErrOutcomeUnknown, e)
		}
		return nil, mapStateErr(e)
	}
	return res, nil
}

// applyError maps the cluster's answer to a proposed command to the
// service's sentinel errors, or returns nil for errors it does not
// classify (storage and timeouts, handled by the caller). callerGone: the
// caller's context ended; leaderKnown: some node leads (this one or another).
func applyError(err error, callerGone, clustered, leaderKnown bool) error {
	switch {
	case errors.Is(err, cluster.ErrStopped) && errors.Is(err, cluster.ErrUnconfirmed):
		return fmt.Errorf("%w: the server stopped while this write was being committed; check before sending it again", ErrOutcomeUnknown)
	case errors.Is(err, cluster.ErrStopped):
		return ErrStopping
	case callerGone:
		return fmt.Errorf("%w: the request was cancelled before the write was confirmed (%v); check before sending it again", ErrOutcomeUnknown, err)
	case errors.Is(err, cluster.ErrNotApplied) && clustered:
		if leaderKnown {
			return fmt.Errorf("%w: not applied; send it again (%v)", ErrNotLeaderNow, err)
		}
		return fmt.Errorf("%w: this node has no quorum (no leader known): reads are served, writes are refused until the cluster is whole again", ErrReadOnly)
	case errors.Is(err, cluster.ErrUnconfirmed):
		// Leadership lost while the entry was on its way: a majority may
		// have it, and the next leader would commit it.
		return fmt.Errorf("%w: the leadership was lost while this write was being committed; check before sending it again", ErrOutcomeUnknown)
	case errors.Is(err, cluster.ErrNotLeader):
		return fmt.Errorf("%w: no leader at the moment (election in progress): %v", ErrUnavailable, err)
	}
	return nil
}

func mapStateErr(err error) error {
	// The state's sentinel is replaced by the service's, not repeated:
	// "conflict: wallet w still holds objects", not "...: conflict".
	trim := func(sentinel error) string { return strings.TrimSuffix(err.Error(), ": "+sentinel.Error()) }
	switch {
	case errors.Is(err, state.ErrNotFound):
		return fmt.Errorf("%w: %s", ErrNotFound, trim(state.ErrNotFound))
	case errors.Is(err, state.ErrConflict):
		return fmt.Errorf("%w: %s", ErrConflict, trim(state.ErrConflict))
	case errors.Is(err, state.ErrExists):
		return fmt.Errorf("%w: %s", ErrConflict, err)
	case errors.Is(err, lifecycle.ErrIllegal):
		return fmt.Errorf("%w: %v", ErrState, err)
	case errors.Is(err, state.ErrBadCommand):
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return err
}

// replaceRing returns nr, the keyring that takes old's place, after wiping
// old when it is another keyring: its master keys (and the KEK of the
// passphrase it was opened with) must not stay in memory. Whoever held it
// under the lifecycle lock is done with it; it fails with
// keystore.ErrKeyringWiped if used after.
func replaceRing(old, nr *keystore.Keyring) *keystore.Keyring {
	if old != nr {
		old.Wipe()
	}
	return nr
}

func mapKeystoreErr(err error) error {
	switch {
	case errors.Is(err, keystore.ErrNotInitialized):
		return fmt.Errorf("%w: %w", ErrUninitialized, err)
	case errors.Is(err, keystore.ErrAlreadyInitialized):
		return fmt.Errorf("%w: %w", ErrAlreadyInit, err)
	case errors.Is(err, keystore.ErrWrongPassphrase), errors.Is(err, keystore.ErrPassphraseLength),
		errors.Is(err, keystore.ErrAutoOpenDisabled), errors.Is(err, keystore.ErrMachineMismatch),
		errors.Is(err, keystore.ErrAutoOpenStale):
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	case errors.Is(err, keystore.ErrCorrupt), errors.Is(err, keystore.ErrTruncated):
		return fmt.Errorf("%w: %w", ErrKeystoreDamaged, err)
	case errors.Is(err, keystore.ErrUnsupportedVersion):
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	case errors.Is(err, keystore.ErrNotDurable):
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	case errors.Is(err, keystore.ErrStaleKeyring):
		return fmt.Errorf("%w: %w", ErrConflict, err)
	}
	return err
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Authorize checks that the caller holds role for an operation a transport
// performs itself (stopping the server, for instance).
func (s *Service) Authorize(ctx context.Context, role Role, what string) error {
	_, err := requireRole(ctx, role, what)
	return err
}

// StatusFor is Status for an administrator of any role.
func (s *Service) StatusFor(ctx context.Context) (Status, error) {
	if _, err := requireAdmin(ctx, "reading the server status"); err != nil {
		return Status{}, err
	}
	return s.Status(), nil
}

// Close seals and closes everything (idempotent).
func (s *Service) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.mu.Lock()
	var err error
	if s.state == StateOpen {
		err = s.sealLocked()
	}
	s.mu.Unlock()
	s.awaitWorkers() // #nosec G104 -- awaitWorkers logs the tasks still running itself; the seal stands either way
	s.mu.Lock()
	defer s.mu.Unlock()
	if cerr := s.node.Close(); err == nil {
		err = cerr
	}
	if cerr := s.st.Close(); err == nil {
		err = cerr
	}
	if s.audit != nil {
		if cerr := s.audit.Close(); err == nil {
			err = cerr
		}
	}
	return err
}
