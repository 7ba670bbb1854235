// Package server runs one Coffer process: it locks the data dir, opens the
// service, serves HTTPS and the local control socket, and handles signals and
// the three stop modes (smart, fast, immediate) as a database server does.
package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coffer-kms/coffer/internal/api/forward"
	kmipapi "github.com/coffer-kms/coffer/internal/api/kmip"
	"github.com/coffer-kms/coffer/internal/api/peer"
	"github.com/coffer-kms/coffer/internal/api/rest"
	"github.com/coffer-kms/coffer/internal/api/ui"
	"github.com/coffer-kms/coffer/internal/api/vault"
	"github.com/coffer-kms/coffer/internal/audit"
	"github.com/coffer-kms/coffer/internal/config"
	"github.com/coffer-kms/coffer/internal/connlimit"
	"github.com/coffer-kms/coffer/internal/datadir"
	"github.com/coffer-kms/coffer/internal/fsutil"
	"github.com/coffer-kms/coffer/internal/keystore"
	"github.com/coffer-kms/coffer/internal/metrics"
	"github.com/coffer-kms/coffer/internal/procsec"
	"github.com/coffer-kms/coffer/internal/service"
	"github.com/coffer-kms/coffer/internal/tlsutil"
)

// Stop modes.
const (
	StopSmart     = "smart"
	StopFast      = "fast"
	StopImmediate = "immediate"
)

// Options for Run.
type Options struct {
	Config     config.Config
	ConfigPath string // re-read on SIGHUP (log level, TLS files); empty: no reload of settings
	LogOutput  io.Writer
	// OnReady runs once the listeners are up (dev mode initialises here).
	OnReady func(*Server) error
	// MachineIdentity overrides keystore.DefaultMachineIdentity (tests).
	MachineIdentity func() ([]byte, error)
}

// Server is a running Coffer process.
type Server struct {
	opts     Options
	cfg      config.Config
	Log      *slog.Logger
	level    *slog.LevelVar
	Service  *service.Service
	tlsCerts *tlsutil.Reloader
	CAFile   string
	URL      string
	Socket   string
	// KMIPAddr is the KMIP listener's address (empty: kmip.listen is off).
	KMIPAddr string
	// PProfAddr is the pprof listener's address (empty: debug.pprof is off).
	PProfAddr string

	baseCtx    context.Context
	cancelBase context.CancelFunc
	httpSrv    *http.Server
	sockSrv    *http.Server
	kmipSrv    *kmipapi.Server // nil: no KMIP listener
	pprofSrv   *http.Server    // nil: debug.pprof is off
	vfirst     *prefixFirst    // the Vault API's shortcut past the mux
	stopOnce   sync.Once
	stopMode   chan string
	done       chan struct{}
	lock       *os.File
	// rejected counts connections the listeners closed at once (over the
	// per-source or total limit).
	rejected struct{ https, kmip connlimit.Rejections }
}

// rejectLogger logs refused connections of a listener, at most once a
// minute (a flood must not flood the log too); metrics count every one.
func rejectLogger(log *slog.Logger, listener string) func(reason, source string) {
	var last atomic.Int64
	var n atomic.Uint64
	return func(reason, source string) {
		n.Add(1)
		now := time.Now().UnixNano()
		if prev := last.Load(); now-prev < int64(time.Minute) || !last.CompareAndSwap(prev, now) {
			return
		}
		log.Warn("connections refused: over the per-source or total limit (connections.per_source, connections.max)",
			"listener", listener, "reason", reason, "source", source, "refused_since_last_line", n.Swap(0))
	}
}

// Run starts the server and blocks until it stops.
func Run(opts Options) error {
	s, err := Start(opts)
	if err != nil {
		return err
	}
	return s.Wait()
}

// Start brings the server up and returns once it is listening.
func Start(opts Options) (_ *Server, err error) {
	cfg := opts.Config
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.LogOutput == nil {
		opts.LogOutput = os.Stderr
	}
	level := new(slog.LevelVar)
	level.Set(parseLevel(cfg.Log.Level))
	hopts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewJSONHandler(opts.LogOutput, hopts)
	if cfg.Log.Format == "text" {
		h = slog.NewTextHandler(opts.LogOutput, hopts)
	}
	log := slog.New(h)

	// Before any key is in memory: no core dumps, and memory locked.
	prot, err := procsec.Apply(procsec.Options{AllowCoreDumps: cfg.Debug.CoreDumps, LockMemory: cfg.Memory.Lock})
	if err != nil {
		return nil, fmt.Errorf("process protections: %w", err)
	}
	if cfg.Debug.CoreDumps {
		log.Warn("debug.core_dumps is on: a core dump of this process holds every key, token and passphrase in memory; turn it off after debugging",
			"dumpable", prot.Dumpable, "core_limit", prot.CoreLimit)
	}
	log.Info("process protections", "dumpable", prot.Dumpable, "core_limit", prot.CoreLimit, "memory_locked", prot.MemoryLocked)
	logGC(log, ApplyGC(cfg, os.LookupEnv))

	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	cfg.DataDir = dataDir
	// Everything this process creates — including files made by libraries,
	// such as raft snapshots — is private to its owner.
	syscall.Umask(0o077)
	if err := fsutil.EnsureDir(dataDir); err != nil {
		return nil, err
	}
	lock, err := LockDataDir(dataDir)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			lock.Close() // #nosec G104 -- closing after an earlier error, which is the one returned; closing releases the lock
		}
	}()

	// TLS first: the CA also signs endpoint client certificates.
	var (
		tlsConf  *tls.Config
		tlsCerts *tlsutil.Reloader
		caFile   string
		issuer   *tlsutil.CA
		caNow    = &swapCA{}
		// The CA a full backup carries, so that endpoints keep working
		// after a restore on a new machine.
		caCertFile, caKeyFile string
		// ownCA: the CA in <data-dir>/tls is Coffer's own; the service
		// keeps its key sealed in the replicated state and signs with it.
		ownCA bool
		// denied is set once the service exists (before any listener): the deny-list of revoked
		// and replaced endpoint certificates, checked at every handshake.
		denied atomic.Pointer[func(der []byte) bool]
	)
	if !cfg.TLS.Disable {
		certFile, keyFile := cfg.TLS.CertFile, cfg.TLS.KeyFile
		if certFile == "" {
			dir := datadir.TLSDir(dataDir)
			created, err := tlsutil.EnsureGenerated(dir, append(cfg.TLS.Hosts, hostOf(cfg.Listen)))
			if err != nil {
				return nil, fmt.Errorf("generate TLS certificates: %w", err)
			}
			if created {
				log.Info("generated a server certificate (and a CA, unless one was there, e.g. restored; self-signed until the keystore opens if the CA key is sealed in the state)", "dir", dir)
			}
			certFile, keyFile = filepath.Join(dir, tlsutil.CertFile), filepath.Join(dir, tlsutil.KeyFile)
			caFile = filepath.Join(dir, tlsutil.CAFile)
			caCertFile, caKeyFile = caFile, filepath.Join(dir, tlsutil.CAKey)
			// The certificate only: the key, sealed in the replicated
			// state, is the service's to use while the keystore is open.
			if issuer, err = tlsutil.LoadCACert(dir); err != nil {
				return nil, err
			}
			ownCA = true
		} else if cfg.TLS.ClientCAFile != "" && cfg.TLS.ClientCAKeyFile != "" {
			if issuer, err = tlsutil.LoadCAFiles(cfg.TLS.ClientCAFile, cfg.TLS.ClientCAKeyFile); err != nil {
				return nil, err
			}
			caCertFile, caKeyFile = cfg.TLS.ClientCAFile, cfg.TLS.ClientCAKeyFile
		}
		if tlsCerts, err = tlsutil.NewReloader(certFile, keyFile); err != nil {
			return nil, err
		}
		tlsConf = tlsCerts.ServerConfig()
		if issuer != nil {
			issuer.Valid = time.Duration(cfg.Auth.ClientCertDays) * 24 * time.Hour
			caNow.Store(issuer)
			// Endpoints may authenticate with a client certificate signed by
			// the CA; a token alone is also accepted, so a certificate is optional.
			tlsConf.ClientAuth = tls.VerifyClientCertIfGiven
			tlsConf.ClientCAs = issuer.Pool()
		} else if cfg.TLS.ClientCAFile != "" {
			pool, err := tlsutil.LoadPool(cfg.TLS.ClientCAFile)
			if err != nil {
				return nil, err
			}
			tlsConf.ClientAuth = tls.VerifyClientCertIfGiven
			tlsConf.ClientCAs = pool
		}
		// Revoked and renewed endpoint certificates end at the handshake,
		// on HTTPS and KMIP alike (KMIP derives its configuration from this).
		// VerifyConnection, not VerifyPeerCertificate: it also runs when a
		// client resumes a TLS session it got before the revocation.
		tlsConf.VerifyConnection = func(cs tls.ConnectionState) error {
			if f := denied.Load(); f != nil && len(cs.PeerCertificates) > 0 && (*f)(cs.PeerCertificates[0].Raw) {
				return errors.New("client certificate revoked or replaced (coffer endpoint revoke/renew)")
			}
			return nil
		}
	}
	var auditSyslog io.Writer
	if cfg.Audit.Syslog {
		w, err := audit.MirrorSyslog(cfg.Audit.SyslogTag)
		if err != nil {
			return nil, fmt.Errorf("audit.syslog: connect to the local syslog: %w", err)
		}
		auditSyslog = w
	}
	var certIssuer service.CertIssuer
	if issuer != nil {
		if !ownCA {
			certIssuer = caNow
		}
		// The CA can change at run time (a node joining a cluster takes the
		// cluster's): client certificates are checked against the current one.
		base := tlsConf
		tlsConf = base.Clone()
		tlsConf.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
			c := base.Clone()
			c.ClientCAs = caNow.Load().Pool()
			return c, nil
		}
	}
	tlsDir := datadir.TLSDir(dataDir)
	if cfg.Cluster.Listen != "" && (cfg.TLS.CertFile != "" || issuer == nil) {
		return nil, errors.New("cluster.listen needs Coffer's own CA in <data-dir>/tls (tls.cert_file must be unset): node certificates are issued by it")
	}

	svc, err := service.New(service.Config{
		DataDir:             dataDir,
		Name:                cfg.Name,
		KDF:                 keystore.KDFParams{Time: cfg.Keystore.KDF.Time, MemoryKiB: cfg.Keystore.KDF.MemoryKiB, Threads: cfg.Keystore.KDF.Threads},
		MachineIdentity:     opts.MachineIdentity,
		JournalMaxBytes:     cfg.Journal.MaxSegmentBytes,
		JournalMaxAge:       archiveAge(cfg),
		JournalKeepSegments: cfg.Journal.KeepSegments,
		MirrorTimeout:       cfg.Journal.MirrorTimeout.Duration,
		JournalNoPrune:      cfg.Journal.Prune != nil && !*cfg.Journal.Prune,
		WriteRetryDelay:     cfg.Storage.WriteRetryDelay.Duration,
		MinFreeBytes:        cfg.Storage.MinFreeBytes,
		SnapshotEvery:       cfg.Storage.SnapshotThreshold,
		Logger:              log,
		SessionTTL:          cfg.Auth.SessionTTL.Duration,
		CertIssuer:          certIssuer,
		AuditSyslog:         auditSyslog,
		AuditMaxFileBytes:   cfg.Audit.MaxFileBytes,
		AuditRetention:      cfg.Audit.Retention.Duration,
		DrillMaxAge:         cfg.Backup.DrillMaxAge.Duration,
		CACert:              caCertFile,
		CAKey:               caKeyFile,
		ClusterBind:         cfg.Cluster.Listen,
		ClusterAdvertise:    cfg.Cluster.Advertise,
		FailoverThreshold:   cfg.Cluster.FailoverThreshold.Duration,
		NoReadOnlyMode:      cfg.Cluster.AllowReadOnlyRestrictedMode != nil && !*cfg.Cluster.AllowReadOnlyRestrictedMode,
		APIURL:              cfg.Cluster.APIURL,
		TLSDir:              tlsDir,
		OwnCA:               ownCA,
		ClientCertValid:     time.Duration(cfg.Auth.ClientCertDays) * 24 * time.Hour,
		Peers:               peer.New(),
		OnCAChanged: func() error {
			// A join brought the cluster's CA and a server certificate
			// from it, or the service signed a server certificate once the
			// CA key became usable: serve it, and check client
			// certificates against the CA.
			ca, err := tlsutil.LoadCACert(tlsDir)
			if err != nil {
				return err
			}
			ca.Valid = time.Duration(cfg.Auth.ClientCertDays) * 24 * time.Hour
			caNow.Store(ca)
			if tlsCerts != nil {
				return tlsCerts.Reload()
			}
			return nil
		},
		BackupTick:    cfg.Backup.CheckInterval.Duration,
		NoAutoBackup:  !cfg.Backup.AutoFullAfterKeyChange,
		FreezeTimeout: cfg.Backup.FreezeTimeout.Duration,
	})
	if err != nil {
		return nil, err
	}
	deny := svc.Access.ClientCertDenied
	denied.Store(&deny)
	defer func() {
		if err != nil {
			svc.Close() // #nosec G104 -- closing after an earlier error, which is the one returned
		}
	}()

	s := &Server{opts: opts, cfg: cfg, Log: log, level: level, Service: svc, lock: lock,
		stopMode: make(chan string, 1), done: make(chan struct{})}
	s.baseCtx, s.cancelBase = context.WithCancel(context.Background())
	s.tlsCerts, s.CAFile = tlsCerts, caFile

	ropts := rest.Options{Logger: log, Stop: s.Stop}
	// Every route carries its facts (forward.WithFacts): forwarding asks
	// the route a request matches where it is served.
	mux := forward.NewServeMux()
	if !cfg.Metrics.Disable {
		m := metrics.New(svc)
		m.AddConnectionLimits("https", &s.rejected.https)
		m.AddConnectionLimits("kmip", &s.rejected.kmip)
		ropts.Metrics = m
		// Unauthenticated, as Prometheus scrapes: it carries no secrets,
		// object names or tokens (labels are route patterns).
		// Scraped often, like health: not audited.
		mh := m.Handler()
		mux.Handle("GET /metrics", forward.WithFacts(forward.Facts{Placement: forward.NodeLocal}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			service.MarkAudited(r.Context())
			mh.ServeHTTP(w, r)
		})))
	}
	mux.Handle("/", rest.Handler(svc, ropts))
	// Vault-compatible subset (KV v2, Transit, sys/health): docs/reference/vault.md.
	vopts := vault.Options{Logger: log}
	if ropts.Metrics != nil {
		vopts.Metrics = ropts.Metrics
	}
	vh := vault.Handler(svc, vopts)
	// prefixFirst serves its clean paths without the mux's matching while
	// no other pattern is under /v1/ (vfirst.check below).
	mux.Handle("/v1/", vh)
	// The web console: served by this node, its API calls go through the
	// whole handler below like a REST client's.
	console := ui.New(svc, ui.Options{IsLocal: rest.IsLocal})
	mux.Handle(ui.Prefix, forward.WithFacts(forward.Facts{Placement: forward.NodeLocal}, console))
	// Writes reaching a follower go to the leader, as their routes' facts say.
	// Every request gets an audit record: those no transport audits
	// (redirects to a clean path, unknown paths) are audited as "unrouted".
	vfirst := &prefixFirst{prefix: "/v1/", h: vh, mux: mux}
	s.vfirst = vfirst
	handler := forward.Handler(rest.AuditEvery(svc, vfirst), svc.Cluster, forward.Options{Logger: log, IsLocal: rest.IsLocal, Routes: mux})
	console.SetAPI(handler)
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	// Bounded per source address: one host cannot take every connection.
	limits := connlimit.Limits{PerSource: cfg.Connections.PerSource, Total: cfg.Connections.Max}
	ln = connlimit.Wrap(ln, limits, &s.rejected.https, rejectLogger(log, "https"))
	scheme := "http"
	if tlsConf != nil {
		ln = tls.NewListener(ln, tlsConf)
		scheme = "https"
	}
	s.URL = scheme + "://" + ln.Addr().String()
	svc.Cluster.SetAPIURL(s.URL)
	s.Socket = datadir.SocketPath(dataDir)
	os.Remove(s.Socket) // #nosec G104 -- a socket left by an earlier run; one that stays makes the Listen below fail with its own error
	sln, err := net.Listen("unix", s.Socket)
	if err != nil {
		ln.Close() // #nosec G104 -- closing after an earlier error, which is the one returned
		return nil, fmt.Errorf("listen on control socket %s: %w", s.Socket, err)
	}
	if err := os.Chmod(s.Socket, fsutil.FileMode); err != nil {
		ln.Close()  // #nosec G104 -- closing after an earlier error, which is the one returned
		sln.Close() // #nosec G104 -- closing after an earlier error, which is the one returned
		return nil, fmt.Errorf("restrict control socket %s: %w", s.Socket, err)
	}

	errLog := slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	s.httpSrv = &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second,
		BaseContext: func(net.Listener) context.Context { return s.baseCtx }, ErrorLog: errLog}
	s.sockSrv = &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second,
		BaseContext: func(net.Listener) context.Context { return s.baseCtx }, ErrorLog: errLog,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			// Local administration needs the same user as the server (or root),
			// on top of the data dir's 0700: checked with SO_PEERCRED.
			if peerIsTrusted(c) {
				return rest.WithLocal(ctx)
			}
			log.Warn("control socket connection from another user: treated as remote (token required)")
			return ctx
		}}
	// KMIP listener: mutual TLS with endpoint certificates.
	if cfg.KMIP.Listen != "" {
		kconf, err := kmipapi.TLSConfig(tlsConf)
		if err == nil {
			var kln net.Listener
			if kln, err = net.Listen("tcp", cfg.KMIP.Listen); err == nil {
				kln = connlimit.Wrap(kln, limits, &s.rejected.kmip, rejectLogger(log, "kmip"))
				s.kmipSrv = kmipapi.New(svc, kmipapi.Options{Logger: log, MaxConns: cfg.Connections.Max})
				// KMIP messages a follower relays to this node when it leads
				// (node certificates only; node-local, never forwarded on).
				// The HTTP server does not serve yet.
				mux.Handle("POST "+kmipapi.RelayPath, forward.WithFacts(forward.Facts{Placement: forward.NodeLocal}, s.kmipSrv.RelayHandler()))
				s.KMIPAddr = kln.Addr().String()
				go func() {
					if err := s.kmipSrv.Serve(kln, kconf); err != nil && err != kmipapi.ErrServerClosed {
						log.Error("kmip listener failed", "error", err)
					}
				}()
				log.Info("kmip listening", "addr", s.KMIPAddr)
			}
		}
		if err != nil {
			ln.Close()  // #nosec G104 -- closing after an earlier error, which is the one returned
			sln.Close() // #nosec G104 -- closing after an earlier error, which is the one returned
			return nil, fmt.Errorf("kmip.listen %s: %w", cfg.KMIP.Listen, err)
		}
	}
	if cfg.Debug.PProf {
		if err := s.startPProf(cfg.Debug.PProfListen); err != nil {
			ln.Close()  // #nosec G104 -- closing after an earlier error, which is the one returned
			sln.Close() // #nosec G104 -- closing after an earlier error, which is the one returned
			s.stopKMIP(StopFast)
			return nil, err
		}
	}
	vfirst.check(mux.Patterns()) // every pattern is registered
	go s.httpSrv.Serve(ln)
	go s.sockSrv.Serve(sln)

	if err := writePID(dataDir, s.URL, s.Socket); err != nil {
		s.httpSrv.Close() // #nosec G104 -- closing after an earlier error, which is the one returned
		s.sockSrv.Close() // #nosec G104 -- closing after an earlier error, which is the one returned
		s.stopKMIP(StopFast)
		if s.pprofSrv != nil {
			s.pprofSrv.Close() // #nosec G104 -- closing after an earlier error, which is the one returned
		}
		return nil, err
	}
	log.Info("coffer listening", "url", s.URL, "socket", s.Socket, "data_dir", dataDir, "state", svc.State(), "version", service.Version, "pid", os.Getpid())

	if cfg.Keystore.AutoOpen && svc.State() == service.StateSealed && svc.AutoOpenEnabled() {
		ctx, cancel := context.WithTimeout(s.baseCtx, time.Minute)
		if err := svc.OpenAuto(ctx); err != nil {
			log.Error(autoOpenFailed(err), "error", err)
		}
		cancel()
	}
	if opts.OnReady != nil {
		if err := opts.OnReady(s); err != nil {
			s.shutdown(StopFast)
			return nil, err
		}
	}
	// The listeners are up and the keystore state is known (auto-open
	// tried): a Type=notify unit counts the service as started now.
	s.notify(fmt.Sprintf("READY=1\nSTATUS=listening on %s, keystore %s\nMAINPID=%d", s.URL, svc.State(), os.Getpid()))
	go s.watchdog()
	go s.signals()
	go s.run()
	return s, nil
}

// autoOpenFailed is the log message for a failed auto-open: the passphrase
// is suggested only when it is auto-open itself that failed; when the node
// could not start (a damaged journal, a lost raft directory, ...) opening
// with the passphrase fails the same way.
func autoOpenFailed(err error) string {
	if errors.Is(err, service.ErrAutoOpenDisabled) || errors.Is(err, service.ErrMachineMismatch) || errors.Is(err, service.ErrAutoOpenStale) ||
		errors.Is(err, service.ErrAutoOpenDamaged) || errors.Is(err, service.ErrAutoOpenNewer) {
		return "auto-open failed; open the keystore with its passphrase"
	}
	return "auto-open failed; the node stays sealed until the error is fixed (opening with the passphrase fails the same way)"
}

func hostOf(addr string) string {
	h, _, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	return h
}

func parseLevel(s string) slog.Level {
	switch s {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// Stop requests a stop in the given mode and returns at once.
func (s *Server) Stop(mode string) error {
	switch mode {
	case StopSmart, StopFast, StopImmediate:
	default:
		return fmt.Errorf("unknown stop mode %q: use smart, fast or immediate", mode)
	}
	if mode == StopImmediate {
		s.Log.Warn("immediate stop: exiting without cleanup; the next start recovers from the raft log and journal")
		os.Exit(3)
	}
	select {
	case s.stopMode <- mode:
	default:
		// A stop is already under way; a fast request may upgrade a smart one.
		if mode == StopFast {
			s.cancelBase()
			s.httpSrv.Close() // #nosec G104 -- the server is stopping: the error would only be a listener's close error, with nothing left to do about it
			s.sockSrv.Close() // #nosec G104 -- the server is stopping: the error would only be a listener's close error, with nothing left to do about it
			go s.stopKMIP(StopFast)
		}
	}
	return nil
}

// stopKMIP stops the KMIP listener: fast closes its connections
// at once; smart lets requests in progress finish, bounded by
// shutdown.smart_timeout.
func (s *Server) stopKMIP(mode string) {
	if s.kmipSrv == nil {
		return
	}
	ctx, cancel := context.Background(), context.CancelFunc(func() {})
	switch d := s.cfg.Shutdown.SmartTimeout.Duration; {
	case mode == StopFast:
		ctx, cancel = context.WithCancel(ctx)
		cancel()
	case d > 0:
		ctx, cancel = context.WithTimeout(ctx, d)
	}
	defer cancel()
	if err := s.kmipSrv.Shutdown(ctx); err != nil {
		s.Log.Warn("kmip: stop closed connections with requests in progress", "error", err)
	}
}

// Wait blocks until the server has stopped.
func (s *Server) Wait() error {
	<-s.done
	return nil
}

func (s *Server) run() {
	mode := <-s.stopMode
	s.shutdown(mode)
}

func (s *Server) shutdown(mode string) {
	s.stopOnce.Do(func() {
		defer close(s.done)
		s.Log.Info("stopping", "mode", mode)
		s.notify("STOPPING=1\nSTATUS=stopping (" + mode + ")")
		s.stopKMIP(mode)
		if s.pprofSrv != nil {
			s.pprofSrv.Close() // #nosec G104 -- the profiling listener serves nothing a stop must finish
		}
		switch mode {
		case StopFast:
			s.cancelBase()
			s.httpSrv.Close() // #nosec G104 -- the server is stopping: the error would only be a listener's close error, with nothing left to do about it
			s.sockSrv.Close() // #nosec G104 -- the server is stopping: the error would only be a listener's close error, with nothing left to do about it
		default:
			ctx := context.Background()
			if d := s.cfg.Shutdown.SmartTimeout.Duration; d > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, d)
				defer cancel()
			}
			if err := s.httpSrv.Shutdown(ctx); err != nil {
				s.Log.Warn("smart stop timed out; cancelling remaining requests", "error", err)
				s.cancelBase()
				s.httpSrv.Close() // #nosec G104 -- the server is stopping: the error would only be a listener's close error, with nothing left to do about it
			}
			s.sockSrv.Shutdown(ctx) // #nosec G104 -- a timeout here is followed by the Close below
			s.sockSrv.Close()       // #nosec G104 -- the server is stopping: the error would only be a listener's close error, with nothing left to do about it
		}
		if err := s.Service.Close(); err != nil {
			s.Log.Error("close service", "error", err)
		}
		for _, p := range []string{s.Socket, datadir.PIDPath(s.cfg.DataDir)} {
			if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				s.Log.Warn("remove at stop", "error", err)
			}
		}
		s.lock.Close() // #nosec G104 -- the lock file holds no data, and the lock goes with the process at the latest
		s.Log.Info("stopped", "mode", mode)
	})
}

func (s *Server) signals() {
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGHUP, syscall.SIGUSR2, syscall.SIGUSR1, syscall.SIGCONT)
	defer signal.Stop(ch)
	for {
		select {
		case <-s.done:
			return
		case sig := <-ch:
			switch sig {
			case syscall.SIGTERM:
				s.Stop(StopSmart) // #nosec G104 -- Stop fails only for an unknown mode, and this is a constant
			case syscall.SIGINT:
				s.Stop(StopFast) // #nosec G104 -- Stop fails only for an unknown mode, and this is a constant
			case syscall.SIGQUIT:
				s.Stop(StopImmediate) // #nosec G104 -- Stop fails only for an unknown mode, and this is a constant
			case syscall.SIGHUP:
				s.Reload()
			case syscall.SIGUSR2:
				if seg, err := s.Service.RotateJournal(service.WithIdentity(context.Background(), service.LocalRoot())); err != nil {
					s.Log.Error("journal rotation on SIGUSR2 failed", "error", err)
				} else {
					s.Log.Info("journal rotated on SIGUSR2", "closed", seg.Name)
				}
			case syscall.SIGUSR1:
				// The dump can take a while: do not hold up other signals.
				go func() {
					ctx := service.WithIdentity(context.Background(), service.LocalRoot())
					if st, err := s.Service.Backups.Freeze(ctx, s.cfg.Backup.FreezeTimeout.Duration); err != nil {
						s.Log.Error("freeze on SIGUSR1 failed", "error", err)
					} else {
						s.Log.Warn("frozen on SIGUSR1: copy the data dir now, then send SIGCONT", "until", st.Until, "dump", st.Dump, "note", st.Note)
					}
				}()
			case syscall.SIGCONT:
				ctx := service.WithIdentity(context.Background(), service.LocalRoot())
				if st, err := s.Service.Backups.Thaw(ctx); err != nil {
					s.Log.Warn("SIGCONT: nothing to thaw", "reason", err)
				} else {
					s.Log.Info("thawed on SIGCONT", "note", st.Note)
				}
			}
		}
	}
}

// Reload re-reads the TLS certificate and the log level (SIGHUP).
func (s *Server) Reload() {
	s.notify("RELOADING=1")
	defer s.notify("READY=1")
	if s.opts.ConfigPath != "" {
		if c, err := config.Load(s.opts.ConfigPath); err != nil {
			s.Log.Error("reload: config not reloaded", "error", err)
		} else {
			s.level.Set(parseLevel(c.Log.Level))
			s.Log.Info("reload: log level set", "level", c.Log.Level)
		}
	}
	if s.tlsCerts != nil {
		if err := s.tlsCerts.Reload(); err != nil {
			s.Log.Error("reload: TLS certificate not reloaded; the old one stays in use", "error", err)
		} else {
			s.Log.Info("reload: TLS certificate reloaded")
		}
	}
}

// LockDataDir takes an exclusive lock so two servers never share a data dir.
func LockDataDir(dir string) (*os.File, error) {
	p := datadir.LockPath(dir)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, fsutil.FileMode)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", p, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close() // #nosec G104 -- closing after an earlier error, which is the one returned
		pid, _, _ := ReadPID(dir)
		return nil, fmt.Errorf("data dir %s is in use by another coffer process (pid %d): %w", dir, pid, err)
	}
	return f, nil
}

// Locked reports whether a server holds the data dir's lock.
func Locked(dir string) bool {
	f, err := os.Open(datadir.LockPath(dir))
	if err != nil {
		return false
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return true
	}
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN) // #nosec G104 -- the probe's lock is released by the deferred Close anyway
	return false
}

func writePID(dir, url, sock string) error {
	return fsutil.WriteFile(datadir.PIDPath(dir), []byte(fmt.Sprintf("%d\n%s\n%s\n", os.Getpid(), url, sock)))
}

// ReadPID returns the pid and URL written by a running server.
func ReadPID(dir string) (pid int, url string, err error) {
	b, err := os.ReadFile(datadir.PIDPath(dir))
	if err != nil {
		return 0, "", err
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	pid, err = strconv.Atoi(strings.TrimSpace(lines[0]))
	if err != nil {
		return 0, "", fmt.Errorf("malformed %s: %w", datadir.PIDFile, err)
	}
	if len(lines) > 1 {
		url = lines[1]
	}
	return pid, url, nil
}

// archiveAge is how old the open journal segment may get: backup.archive_timeout
// bounds in time the data not yet archived, when it is shorter than
// journal.max_segment_age.
func archiveAge(cfg config.Config) time.Duration {
	age := cfg.Journal.MaxSegmentAge.Duration
	if t := cfg.Backup.ArchiveTimeout.Duration; t > 0 && (age <= 0 || t < age) {
		age = t
	}
	return age
}

// swapCA is the CA endpoint certificates are issued by and checked
// against; a node joining a cluster replaces it with the cluster's.
type swapCA struct{ p atomic.Pointer[tlsutil.CA] }

func (s *swapCA) Store(c *tlsutil.CA) { s.p.Store(c) }
func (s *swapCA) Load() *tlsutil.CA   { return s.p.Load() }
func (s *swapCA) IssueClientCert(csr *x509.CertificateRequest, cn string) ([]byte, []byte, error) {
	return s.p.Load().IssueClientCert(csr, cn)
}
