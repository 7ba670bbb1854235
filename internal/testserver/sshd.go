package testserver

import (
	"bufio"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/coffer-kms/coffer/internal/testutil"
)

const (
	sshdPath = "/usr/sbin/sshd"
	// TestUser is the system user the SFTP tests log in as. StartSSHD creates
	// it (useradd --system, no home, shell nologin) when missing, because
	// tests run as root and sshd should not let anyone log in as root; a
	// non-root user also makes "no write permission" testable with chmod.
	TestUser = "coffer-test"
)

const sshdMissing = "openssh-server not installed: apt-get install openssh-server (scripts/test.sh does)"

// SSHD is a running OpenSSH server (sshd -D) on 127.0.0.1 that offers only
// SFTP (internal-sftp), to TestUser, with a password and authorized keys.
type SSHD struct {
	Host     string // 127.0.0.1
	Port     int
	User     string // TestUser
	Password string // TestUser's password
	HostKey  string // the server's host key, authorized_keys format
	Dir      string // the SFTP root: an empty directory owned by User, absolute path

	UID, GID int // of User

	t       testing.TB
	etc     string
	mu      sync.Mutex
	p       *proc
	logPath string
}

// StartSSHD starts sshd with its own host key, config and authorized_keys in
// t.TempDir() and stops it when the test ends. It needs root (to run sshd and
// to create TestUser); without root or without sshd the test is skipped, or
// fails under CI=true.
func StartSSHD(t testing.TB) *SSHD {
	t.Helper()
	if _, err := os.Stat(sshdPath); err != nil {
		testutil.Unavailable(t, sshdMissing)
	}
	if os.Geteuid() != 0 {
		testutil.Unavailable(t, "StartSSHD needs root: it runs sshd and logs in as the system user %s", TestUser)
	}
	uid, gid, password, err := ensureTestUser()
	if err != nil {
		t.Fatalf("testserver: set up user %s: %v", TestUser, err)
	}
	// sshd's privilege separation directory; the package creates it only
	// when its service starts.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil { // #nosec G301 -- sshd requires its privilege separation directory to be 0755
		t.Fatal(err)
	}

	base := t.TempDir()
	s := &SSHD{
		Host: "127.0.0.1", User: TestUser, Password: password, UID: uid, GID: gid,
		Dir: filepath.Join(base, "sftp"), etc: filepath.Join(base, "etc"), t: t, logPath: filepath.Join(base, "sshd.log"),
	}
	if err := os.Mkdir(s.etc, 0o755); err != nil { // #nosec G301 -- sshd (StrictModes) requires its config directory readable, not group/world writable
		t.Fatal(err)
	}
	if err := os.Mkdir(s.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := s.Chown(s.Dir); err != nil {
		t.Fatal(err)
	}
	if err := s.newHostKey(); err != nil {
		t.Fatal(err)
	}
	// Read by sshd as the user: world-readable, in traversable directories.
	if err := os.WriteFile(filepath.Join(s.etc, "authorized_keys"), nil, 0o644); err != nil { // #nosec G306 -- sshd (StrictModes) reads authorized_keys as the test user; it holds public keys only
		t.Fatal(err)
	}
	if err := makeTraversable(s.etc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("sshd log:\n%s", s.Log())
		}
	})
	var lastErr error
	for try := 0; try < 3; try++ {
		s.Port = freePort(t)
		if lastErr = s.start(); lastErr == nil {
			return s
		}
	}
	t.Fatalf("testserver: start sshd: %v", lastErr)
	return nil
}

func (s *SSHD) newHostKey() error {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(s.etc, "host_ed25519"), pem.EncodeToMemory(block), 0o600); err != nil {
		return err
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return err
	}
	s.HostKey = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey())))
	return nil
}

func (s *SSHD) config() string {
	return strings.Join([]string{
		"ListenAddress 127.0.0.1",
		"HostKey " + filepath.Join(s.etc, "host_ed25519"),
		"PidFile none",
		"AuthorizedKeysFile " + filepath.Join(s.etc, "authorized_keys"),
		"StrictModes no",
		"UsePAM no",
		"PasswordAuthentication yes",
		"KbdInteractiveAuthentication no",
		"PubkeyAuthentication yes",
		"PermitRootLogin no",
		"AllowUsers " + TestUser,
		"MaxStartups 100",
		"MaxSessions 100",
		"LoginGraceTime 30",
		"AllowTcpForwarding no",
		"AllowAgentForwarding no",
		"X11Forwarding no",
		"PermitTTY no",
		"ForceCommand internal-sftp",
		"Subsystem sftp internal-sftp",
		"LogLevel VERBOSE",
		"",
	}, "\n")
}

func (s *SSHD) start() error {
	cfg := filepath.Join(s.etc, "sshd_config")
	if err := os.WriteFile(cfg, []byte(s.config()), 0o644); err != nil { // #nosec G306 -- the test sshd's config: no secrets, sshd must read it
		return err
	}
	p, err := startProc(sshdPath, []string{"-D", "-e", "-f", cfg, "-p", strconv.Itoa(s.Port)}, s.logPath)
	if err != nil {
		return err
	}
	addr := net.JoinHostPort(s.Host, strconv.Itoa(s.Port))
	err = waitReady(p, func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second)) // #nosec G104 -- SetDeadline fails only on a closed connection, whose read below then fails at once
		banner, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return err
		}
		if !strings.HasPrefix(banner, "SSH-2.0-") {
			return fmt.Errorf("port %d answers %q, not sshd", s.Port, banner)
		}
		return nil
	})
	if err != nil {
		p.stop()
		return err
	}
	s.mu.Lock()
	s.p = p
	s.mu.Unlock()
	return nil
}

// Stop stops sshd by its pid. Sessions already open end when their clients
// close them. Stop is also run by t.Cleanup.
func (s *SSHD) Stop() {
	s.mu.Lock()
	p := s.p
	s.p = nil
	s.mu.Unlock()
	p.stop()
}

// Restart stops sshd and starts it again on the same port, with a new host
// key if newHostKey (HostKey changes accordingly).
func (s *SSHD) Restart(newHostKey bool) {
	s.t.Helper()
	s.Stop()
	if newHostKey {
		if err := s.newHostKey(); err != nil {
			s.t.Fatal(err)
		}
	}
	var err error
	for try := 0; try < 20; try++ { // the old listener may linger a moment
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.t.Fatalf("testserver: restart sshd: %v", err)
}

// AddAuthorizedKey lets the public key (an authorized_keys line) log in.
func (s *SSHD) AddAuthorizedKey(line string) {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	f, err := os.OpenFile(filepath.Join(s.etc, "authorized_keys"), os.O_WRONLY|os.O_APPEND, 0)
	if err == nil {
		_, err = f.WriteString(strings.TrimSpace(line) + "\n")
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		s.t.Fatal(err)
	}
}

// Chown gives path (recursively) to User and makes its parents in the temp
// dir traversable, so the SFTP user can reach a directory made elsewhere,
// such as a SmallTmpfs.
func (s *SSHD) Chown(path string) error {
	err := filepath.Walk(path, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, s.UID, s.GID) // #nosec G122 -- test server setup in its own temporary directory, which no other user writes
	})
	if err != nil {
		return err
	}
	return makeTraversable(filepath.Dir(path))
}

// Log returns what sshd has logged so far.
func (s *SSHD) Log() string { return readLog(s.logPath) }

// ensureTestUser creates TestUser if missing and sets its password. The
// password is random, made once and kept (0600) in the cache dir, so test
// processes running at the same time agree on it; a file lock serializes
// them.
func ensureTestUser() (uid, gid int, password string, err error) {
	dir := filepath.Dir(CacheDir())
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return 0, 0, "", err
	}
	lock, err := os.OpenFile(filepath.Join(dir, "sshd-user.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return 0, 0, "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return 0, 0, "", err
	}

	uid, gid, err = ensureUser(TestUser)
	if err != nil {
		return 0, 0, "", err
	}
	pwFile := filepath.Join(dir, "sshd-user.password")
	b, err := os.ReadFile(pwFile)
	password = strings.TrimSpace(string(b))
	if err != nil || password == "" {
		password = "pw-" + randomHex(12)
		if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil { // #nosec G703 -- the test server's own temporary directory
			return 0, 0, "", err
		}
	}
	// Set every time: cheap, and repairs a password changed by hand.
	cmd := exec.Command("chpasswd")
	cmd.Stdin = strings.NewReader(TestUser + ":" + password + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		return 0, 0, "", fmt.Errorf("chpasswd: %v: %s", err, out)
	}
	return uid, gid, password, nil
}

// ensureUser looks up the system user name and creates it (no home, shell
// nologin) when it is missing. The caller serialises calls across processes.
func ensureUser(name string) (uid, gid int, err error) {
	u, err := user.Lookup(name)
	if errors.As(err, new(user.UnknownUserError)) {
		out, addErr := exec.Command("useradd", "--system", "--user-group", "--no-create-home", // #nosec G204 -- test server setup: a fixed command, arguments from the test
			"--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name).CombinedOutput()
		if addErr != nil {
			return 0, 0, fmt.Errorf("useradd %s: %v: %s", name, addErr, out)
		}
		u, err = user.Lookup(name)
	}
	if err != nil {
		return 0, 0, fmt.Errorf("look up user %s: %w", name, err)
	}
	if uid, err = strconv.Atoi(u.Uid); err != nil {
		return 0, 0, fmt.Errorf("user %s: uid %q: %w", name, u.Uid, err)
	}
	if gid, err = strconv.Atoi(u.Gid); err != nil {
		return 0, 0, fmt.Errorf("user %s: gid %q: %w", name, u.Gid, err)
	}
	return uid, gid, nil
}
