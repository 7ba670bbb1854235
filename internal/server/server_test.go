package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/config"
	"github.com/coffer-kms/coffer/internal/datadir"
	"github.com/coffer-kms/coffer/internal/service"
	"github.com/coffer-kms/coffer/internal/testutil"
	"github.com/coffer-kms/coffer/internal/tlsutil"
)

// testConfig is a valid configuration for a server on 127.0.0.1 with a
// cheap KDF and no memory locking (tests run without CAP_IPC_LOCK).
func testConfig(t *testing.T) config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = filepath.Join(t.TempDir(), "data")
	cfg.Listen = "127.0.0.1:0"
	cfg.Memory.Lock = false
	cfg.Keystore.KDF.Time, cfg.Keystore.KDF.MemoryKiB, cfg.Keystore.KDF.Threads = 1, 64, 1
	cfg.Storage.MinFreeBytes = 0
	return cfg
}

// startServer starts a server with cfg; it is stopped fast at cleanup
// unless the test stopped it.
func startServer(t *testing.T, cfg config.Config) *Server {
	t.Helper()
	s, err := Start(Options{Config: cfg, LogOutput: io.Discard,
		MachineIdentity: func() ([]byte, error) { return []byte("server-test"), nil }})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() {
		s.Stop(StopFast)
		s.Wait()
	})
	return s
}

// clientTLS trusts the server's generated CA.
func clientTLS(t *testing.T, s *Server) *tls.Config {
	t.Helper()
	pool, err := tlsutil.LoadPool(s.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
}

func hostPort(t *testing.T, s *Server) string {
	t.Helper()
	return strings.TrimPrefix(s.URL, "https://")
}

// ownCert is a server certificate and key not in the data dir.
func ownCert(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	dir := t.TempDir()
	if _, err := tlsutil.EnsureGenerated(dir, nil); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, tlsutil.CertFile), filepath.Join(dir, tlsutil.KeyFile)
}

// TestStartRefusesAnInvalidConfig: a configuration error stops the start
// with a message naming the setting, and leaves the data dir unlocked.
func TestStartRefusesAnInvalidConfig(t *testing.T) {
	for name, c := range map[string]struct {
		mod  func(*config.Config)
		want string
	}{
		"log level":        {func(c *config.Config) { c.Log.Level = "loud" }, "log.level"},
		"no data dir":      {func(c *config.Config) { c.DataDir = "" }, "data_dir"},
		"cert without key": {func(c *config.Config) { c.TLS.CertFile = "/x.crt" }, "tls.cert_file and tls.key_file"},
		"cluster no TLS":   {func(c *config.Config) { c.Cluster.Listen = "127.0.0.1:0"; c.TLS.Disable = true }, "cluster.listen needs TLS"},
		"kmip no TLS":      {func(c *config.Config) { c.KMIP.Listen = "127.0.0.1:0"; c.TLS.Disable = true }, "kmip.listen needs TLS"},
		"cluster own certs": {func(c *config.Config) {
			c.Cluster.Listen = "127.0.0.1:0"
			c.TLS.CertFile, c.TLS.KeyFile = ownCert(t)
		}, "cluster.listen needs Coffer's own CA"},
		"connections":        {func(c *config.Config) { c.Connections.PerSource = 0 }, "connections.per_source"},
		"listen in use":      {nil, "listen on"},
		"session ttl":        {func(c *config.Config) { c.Auth.SessionTTL.Duration = time.Second }, "auth.session_ttl"},
		"freeze timeout":     {func(c *config.Config) { c.Backup.FreezeTimeout.Duration = 0 }, "backup.freeze_timeout"},
		"keep segments zero": {func(c *config.Config) { c.Journal.KeepSegments = 0 }, "journal.keep_segments"},
		"pprof not loopback": {func(c *config.Config) { c.Debug.PProf = true; c.Debug.PProfListen = "0.0.0.0:0" }, "debug.pprof_listen"},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := testConfig(t)
			if c.mod != nil {
				c.mod(&cfg)
			} else {
				busy, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				defer busy.Close()
				cfg.Listen = busy.Addr().String()
			}
			s, err := Start(Options{Config: cfg, LogOutput: io.Discard,
				MachineIdentity: func() ([]byte, error) { return []byte("server-test"), nil }})
			if err == nil {
				s.Stop(StopFast)
				s.Wait()
				t.Fatal("started")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not name %q", err, c.want)
			}
			if cfg.DataDir != "" && Locked(cfg.DataDir) {
				t.Fatal("a failed start left the data dir locked")
			}
		})
	}
}

// TestLockDataDir: one lock per data dir; the refusal names the pid of the
// holder; closing the lock frees the dir.
func TestLockDataDir(t *testing.T) {
	dir := t.TempDir()
	if Locked(dir) {
		t.Fatal("a dir without a lock file is locked")
	}
	f, err := LockDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := writePID(dir, "https://127.0.0.1:1", "/s"); err != nil {
		t.Fatal(err)
	}
	if !Locked(dir) {
		t.Fatal("Locked is false while the lock is held")
	}
	_, err = LockDataDir(dir)
	if err == nil {
		t.Fatal("a second lock of the same data dir succeeded")
	}
	if want := fmt.Sprintf("in use by another coffer process (pid %d)", os.Getpid()); !strings.Contains(err.Error(), want) {
		t.Fatalf("second lock: %q, want it to say %q", err, want)
	}
	if fi, err := os.Stat(datadir.LockPath(dir)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("lock file: %v, %v", fi, err)
	}
	f.Close()
	if Locked(dir) {
		t.Fatal("Locked is true after the lock was closed")
	}
	f, err = LockDataDir(dir)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	f.Close()
}

func TestReadPID(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := ReadPID(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("no pid file: %v", err)
	}
	if err := writePID(dir, "https://127.0.0.1:8200", "/d/coffer.sock"); err != nil {
		t.Fatal(err)
	}
	pid, url, err := ReadPID(dir)
	if err != nil || pid != os.Getpid() || url != "https://127.0.0.1:8200" {
		t.Fatalf("ReadPID: %d %q %v", pid, url, err)
	}
	os.WriteFile(datadir.PIDPath(dir), []byte("not a pid\n"), 0o600)
	if _, _, err := ReadPID(dir); err == nil || !strings.Contains(err.Error(), "malformed") {
		t.Fatalf("malformed pid file: %v", err)
	}
}

// TestServerListensAndStops: a started server holds the data dir's lock,
// writes its pid file, serves HTTPS with the generated CA and the control
// socket (owner only); a smart stop releases all of it.
func TestServerListensAndStops(t *testing.T) {
	cfg := testConfig(t)
	s := startServer(t, cfg)
	if !strings.HasPrefix(s.URL, "https://127.0.0.1:") {
		t.Fatalf("URL %q", s.URL)
	}
	if _, err := Start(Options{Config: cfg, LogOutput: io.Discard}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("a second server on the same data dir: %v", err)
	}
	pid, url, err := ReadPID(cfg.DataDir)
	if err != nil || pid != os.Getpid() || url != s.URL {
		t.Fatalf("pid file: %d %q %v", pid, url, err)
	}
	if fi, err := os.Stat(s.Socket); err != nil || fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("control socket: %v %v", fi, err)
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: clientTLS(t, s)}}
	resp, err := client.Get(s.URL + "/api/v1/sys/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotImplemented { // 501: not initialised
		t.Fatalf("health of a new server: %d", resp.StatusCode)
	}
	sock := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", s.Socket)
		}}}
	resp, err = sock.Get("http://coffer/api/v1/sys/health")
	if err != nil {
		t.Fatalf("control socket: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotImplemented {
		t.Fatalf("health on the control socket: %d", resp.StatusCode)
	}
	if s.Service.State() != service.StateUninitialized {
		t.Fatalf("state %q", s.Service.State())
	}
	if !s.vfirst.on {
		t.Fatal("the Vault API's clean paths go through the mux: a pattern registered under /v1/ turned the shortcut off (see prefixFirst)")
	}
	if err := s.Stop("sideways"); err == nil {
		t.Fatal("an unknown stop mode was accepted")
	}
	if err := s.Stop(StopSmart); err != nil {
		t.Fatal(err)
	}
	s.Wait()
	if Locked(cfg.DataDir) {
		t.Fatal("the data dir is still locked after the stop")
	}
	for _, p := range []string{s.Socket, datadir.PIDPath(cfg.DataDir)} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after the stop: %v", p, err)
		}
	}
	if c, err := net.DialTimeout("tcp", hostPort(t, s), 5*time.Second); err == nil {
		c.Close()
		t.Fatal("the HTTPS port still accepts connections after the stop")
	}
}

// TestPProfOnlyWhenAskedAndOnItsOwnListener: debug.pprof serves profiles on
// its loopback listener, never on the API listener; off by default.
func TestPProfOnlyWhenAskedAndOnItsOwnListener(t *testing.T) {
	off := startServer(t, testConfig(t))
	if off.PProfAddr != "" {
		t.Fatalf("pprof listener %q without debug.pprof", off.PProfAddr)
	}
	cfg := testConfig(t)
	cfg.Debug.PProf = true
	cfg.Debug.PProfListen = "127.0.0.1:0"
	s := startServer(t, cfg)
	if s.PProfAddr == "" {
		t.Fatal("no pprof listener with debug.pprof on")
	}
	plain := &http.Client{Timeout: 30 * time.Second}
	resp, err := plain.Get("http://" + s.PProfAddr + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "goroutine profile") {
		t.Fatalf("goroutine profile: %d %.100s", resp.StatusCode, body)
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: clientTLS(t, s)}}
	resp, err = client.Get(s.URL + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		t.Fatal("the API listener serves pprof")
	}
}

// TestServerOffersOnlyAEADSuites: a TLS 1.2 client offering only CBC
// suites is refused; one offering an AEAD suite gets it.
func TestServerOffersOnlyAEADSuites(t *testing.T) {
	s := startServer(t, testConfig(t))
	dial := func(suites []uint16) (uint16, error) {
		c := clientTLS(t, s)
		c.MaxVersion = tls.VersionTLS12
		c.CipherSuites = suites
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", hostPort(t, s), c)
		if err != nil {
			return 0, err
		}
		defer conn.Close()
		return conn.ConnectionState().CipherSuite, nil
	}
	for _, cbc := range []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
		tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA, tls.TLS_RSA_WITH_AES_128_GCM_SHA256} {
		if got, err := dial([]uint16{cbc}); err == nil {
			t.Errorf("a client offering only %s got %s", tls.CipherSuiteName(cbc), tls.CipherSuiteName(got))
		}
	}
	for _, aead := range tlsutil.AEADSuites() {
		got, err := dial([]uint16{aead})
		if err != nil {
			if strings.Contains(tls.CipherSuiteName(aead), "_RSA_") {
				continue // the generated server key is ECDSA
			}
			t.Errorf("%s: %v", tls.CipherSuiteName(aead), err)
			continue
		}
		if got != aead {
			t.Errorf("offered %s, got %s", tls.CipherSuiteName(aead), tls.CipherSuiteName(got))
		}
	}
}

// TestSmartStopFinishesARequestInProgress: a smart stop closes the
// listener at once but lets a request whose handler is running finish; a
// fast stop drops it or answers it cancelled.
func TestSmartStopFinishesARequestInProgress(t *testing.T) {
	for _, mode := range []string{StopSmart, StopFast} {
		t.Run(mode, func(t *testing.T) {
			cfg := testConfig(t)
			cfg.Shutdown.SmartTimeout.Duration = time.Minute
			s := startServer(t, cfg)
			conn, err := tls.Dial("tcp", hostPort(t, s), clientTLS(t, s))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(time.Minute))
			// The handler asks for the body with "100 Continue": from then
			// on it is running, waiting for the body.
			body := `{"passphrase":"server-test-passphrase"}`
			fmt.Fprintf(conn, "POST /api/v1/sys/open HTTP/1.1\r\nHost: coffer\r\nContent-Type: application/json\r\n"+
				"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n", len(body))
			br := bufio.NewReader(conn)
			cont, err := http.ReadResponse(br, nil)
			if err != nil || cont.StatusCode != http.StatusContinue {
				t.Fatalf("waiting for 100 Continue: %v %v", cont, err)
			}
			if err := s.Stop(mode); err != nil {
				t.Fatal(err)
			}
			testutil.WaitFor(t, 30*time.Second, "the listener to close", func() error {
				c, err := net.DialTimeout("tcp", hostPort(t, s), time.Second)
				if err != nil {
					return nil
				}
				c.Close()
				return errors.New("still accepting connections")
			})
			io.WriteString(conn, body)
			resp, err := http.ReadResponse(br, nil)
			switch mode {
			case StopSmart:
				if err != nil {
					t.Fatalf("the request in progress was dropped by a smart stop: %v", err)
				}
				raw, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusNotImplemented || !bytes.Contains(raw, []byte(`"uninitialized"`)) {
					t.Fatalf("open of an uninitialised server during the smart stop: %d %s", resp.StatusCode, raw)
				}
			case StopFast:
				// Dropped, or, when the body arrives between the listener's
				// close and the connections' (http.Server.Close waits for
				// its Serve loops in between), refused as cancelled; never
				// served.
				if err == nil {
					raw, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusServiceUnavailable || !bytes.Contains(raw, []byte(`"canceled"`)) {
						t.Fatalf("a fast stop served the request in progress: %d %s", resp.StatusCode, raw)
					}
				}
			}
			s.Wait()
		})
	}
}

func TestArchiveAge(t *testing.T) {
	for _, c := range []struct{ segAge, archive, want time.Duration }{
		{time.Hour, 0, time.Hour},
		{time.Hour, 10 * time.Minute, 10 * time.Minute},
		{10 * time.Minute, time.Hour, 10 * time.Minute},
		{0, time.Hour, time.Hour},
		{0, 0, 0},
	} {
		var cfg config.Config
		cfg.Journal.MaxSegmentAge.Duration, cfg.Backup.ArchiveTimeout.Duration = c.segAge, c.archive
		if got := archiveAge(cfg); got != c.want {
			t.Errorf("max_segment_age %v, archive_timeout %v: %v, want %v", c.segAge, c.archive, got, c.want)
		}
	}
}

func TestParseLevelAndHostOf(t *testing.T) {
	for in, want := range map[string]slog.Level{"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn,
		"error": slog.LevelError, "": slog.LevelInfo} {
		if got := parseLevel(in); got != want {
			t.Errorf("parseLevel(%q) = %v, want %v", in, got, want)
		}
	}
	for in, want := range map[string]string{"127.0.0.1:8200": "127.0.0.1", "[::1]:1": "::1", ":8200": "", "nohost": ""} {
		if got := hostOf(in); got != want {
			t.Errorf("hostOf(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestRejectLoggerLogsOncePerMinute: a flood of refused connections gives
// one log line, which counts them, not one line each.
func TestRejectLoggerLogsOncePerMinute(t *testing.T) {
	var buf bytes.Buffer
	log := rejectLogger(slog.New(slog.NewTextHandler(&buf, nil)), "https")
	for i := 0; i < 100; i++ {
		log("per-source", "10.0.0.1")
	}
	if n := strings.Count(buf.String(), "connections refused"); n != 1 {
		t.Fatalf("%d log lines for 100 refusals, want 1:\n%s", n, buf.String())
	}
	if !strings.Contains(buf.String(), "listener=https") || !strings.Contains(buf.String(), "source=10.0.0.1") {
		t.Fatalf("log line %q", buf.String())
	}
}

// TestReloadTakesNewCertificateAndLevel: Reload (SIGHUP) serves a server
// certificate replaced on disk and sets the log level from the config file;
// a config file that does not load changes nothing.
func TestReloadTakesNewCertificateAndLevel(t *testing.T) {
	cfg := testConfig(t)
	confPath := filepath.Join(t.TempDir(), "coffer.yaml")
	s, err := Start(Options{Config: cfg, ConfigPath: confPath, LogOutput: io.Discard,
		MachineIdentity: func() ([]byte, error) { return []byte("server-test"), nil }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Stop(StopFast)
		s.Wait()
	})
	served := func() []byte {
		t.Helper()
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", hostPort(t, s), clientTLS(t, s))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].Raw
	}
	before := served()
	tlsDir := filepath.Join(cfg.DataDir, "tls")
	os.Remove(filepath.Join(tlsDir, tlsutil.CertFile))
	os.Remove(filepath.Join(tlsDir, tlsutil.KeyFile))
	if _, err := tlsutil.EnsureGenerated(tlsDir, []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(confPath, []byte("data_dir: "+cfg.DataDir+"\nmemory:\n  lock: false\nlog:\n  level: debug\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(served(), before) {
		t.Fatal("the new certificate is served before the reload")
	}
	s.Reload()
	if bytes.Equal(served(), before) {
		t.Fatal("the old certificate is still served after the reload")
	}
	if got := s.level.Level(); got != slog.LevelDebug {
		t.Fatalf("log level after the reload: %v, want debug", got)
	}
	if err := os.WriteFile(confPath, []byte("log:\n  level: loud\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.Reload()
	if got := s.level.Level(); got != slog.LevelDebug {
		t.Fatalf("an invalid config file changed the log level to %v", got)
	}
}
