// Package e2e runs the real coffer binary: durability under kill -9, disk
// full, signals, stop modes, and the CLI.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/client"
	"github.com/coffer-kms/coffer/internal/testutil"
)

var cofferBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "coffer-e2e-bin")
	if err != nil {
		panic(err)
	}
	cofferBin = filepath.Join(dir, "coffer")
	out, err := exec.Command("go", "build", "-o", cofferBin, "../../cmd/coffer").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build coffer: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// testPassphrase is used by every e2e server; the secret-leak checks look for it.
const testPassphrase = "e2e-passphrase-0123"

// node is one coffer server process.
type node struct {
	t       testing.TB
	dataDir string
	config  string
	cmd     *exec.Cmd
	logs    *syncBuf
	url     string
	caFile  string
	token   string
	exited  chan error
	env     []string // extra environment of the server process
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// newNode writes a config for dataDir (cheap KDF for speed) with extra YAML appended.
func newNode(t testing.TB, dataDir, extra string) *node {
	t.Helper()
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`data_dir: %s
listen: 127.0.0.1:0
log:
  level: info
  format: json
keystore:
  kdf: {time: 1, memory_kib: 1024, threads: 1}
%s`, dataDir, extra)
	p := filepath.Join(filepath.Dir(dataDir), filepath.Base(dataDir)+".yaml")
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return &node{t: t, dataDir: dataDir, config: p, logs: &syncBuf{}}
}

// start launches the server and waits until its pid file names a URL.
func (n *node) start() {
	n.t.Helper()
	os.Remove(filepath.Join(n.dataDir, "coffer.pid"))
	n.cmd = exec.Command(cofferBin, "server", "--config", n.config)
	n.cmd.Env = append(os.Environ(), n.env...)
	n.cmd.Stdout, n.cmd.Stderr = n.logs, n.logs
	if err := n.cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	n.exited = make(chan error, 1)
	go func(c *exec.Cmd, ch chan error) { ch <- c.Wait() }(n.cmd, n.exited)
	if err := testutil.Poll(30*time.Second, func() error {
		b, err := os.ReadFile(filepath.Join(n.dataDir, "coffer.pid"))
		if err == nil {
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			if len(lines) >= 2 && lines[0] == fmt.Sprint(n.cmd.Process.Pid) {
				n.url = lines[1]
				return nil
			}
		}
		select {
		case err := <-n.exited:
			n.t.Fatalf("server exited during start: %v\n%s", err, n.logs)
		default:
		}
		return fmt.Errorf("no pid file of pid %d: %v", n.cmd.Process.Pid, err)
	}); err != nil {
		n.t.Fatalf("server did not start: %v\n%s", err, n.logs)
	}
	n.caFile = filepath.Join(n.dataDir, "tls", "ca.crt")
}

// local is a client on the control socket.
func (n *node) local() *client.Client {
	c, err := client.New(client.Config{Addresses: []string{"unix://" + filepath.Join(n.dataDir, "coffer.sock")}})
	if err != nil {
		n.t.Fatal(err)
	}
	return c
}

// https is a client over TLS with the root token.
func (n *node) https() *client.Client {
	c, err := client.New(client.Config{Addresses: []string{n.url}, CACert: n.caFile, Token: n.token, Timeout: 15 * time.Second})
	if err != nil {
		n.t.Fatal(err)
	}
	return c
}

// initialise creates the keystore and enables auto-open.
func (n *node) initialise() {
	n.t.Helper()
	ctx := context.Background()
	tok, err := n.local().Init(ctx, testPassphrase)
	if err != nil {
		n.t.Fatalf("init: %v\n%s", err, n.logs)
	}
	n.token = tok
	if err := n.local().SetAutoOpen(ctx, true); err != nil {
		n.t.Fatal(err)
	}
}

// initialisedNode starts a server on dataDir (extra YAML appended to its
// config), initialises it with auto-open, and stops it when the test ends.
func initialisedNode(t *testing.T, dataDir, extra string) *node {
	t.Helper()
	n := newNode(t, dataDir, extra)
	n.start()
	t.Cleanup(n.stop)
	n.initialise()
	return n
}

// putMany writes count secrets "<prefix>-<i>" with value "v-<name>" and
// returns them as acknowledged.
func putMany(t *testing.T, c *client.Client, prefix string, count int) map[string]string {
	t.Helper()
	acked := make(map[string]string, count)
	for i := 0; i < count; i++ {
		name := fmt.Sprintf("%s-%d", prefix, i)
		if _, err := c.PutSecret(context.Background(), "default", name, []byte("v-"+name)); err != nil {
			t.Fatal(err)
		}
		acked[name] = "v-" + name
	}
	return acked
}

// waitState polls health until the server reports state.
func (n *node) waitState(state string) {
	n.t.Helper()
	if err := testutil.Poll(30*time.Second, func() error {
		h, err := n.local().Health(context.Background())
		if err == nil && h.State == state {
			return nil
		}
		return fmt.Errorf("health %+v, %v", h, err)
	}); err != nil {
		n.t.Fatalf("server not %s: %v\n%s", state, err, n.logs)
	}
}

// running reports whether the process was started and has not exited.
func (n *node) running() bool { return n.cmd != nil && n.cmd.ProcessState == nil }

func (n *node) kill9() {
	n.cmd.Process.Signal(syscall.SIGKILL)
	<-n.exited
}

func (n *node) signal(sig syscall.Signal) { n.cmd.Process.Signal(sig) }

// waitExit waits for the process to exit and returns its exit code.
func (n *node) waitExit(d time.Duration) int {
	n.t.Helper()
	select {
	case <-n.exited:
		return n.cmd.ProcessState.ExitCode()
	case <-time.After(d):
		n.cmd.Process.Kill()
		n.t.Fatalf("server did not exit within %s\n%s", d, n.logs)
	}
	return -1
}

func (n *node) stop() {
	if n.cmd != nil && n.cmd.ProcessState == nil {
		n.signal(syscall.SIGINT)
		select {
		case <-n.exited:
		case <-time.After(20 * time.Second):
			n.cmd.Process.Kill()
		}
	}
}

// coffer runs the CLI and returns stdout+stderr and the error.
func coffer(t testing.TB, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(cofferBin, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// requireRoot fails under CI and skips locally when a test needs root.
func requireRoot(t *testing.T, why string) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	testutil.Unavailable(t, "this test needs root (%s); run the test suite as root", why)
}
