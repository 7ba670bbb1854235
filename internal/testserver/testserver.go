// Package testserver starts real servers for tests: Debian's OpenSSH sshd
// (StartSSHD), a versitygw S3 gateway (StartS3) and a tiny tmpfs that fills
// up (SmallTmpfs). Each runs as a child process on 127.0.0.1 with its state
// in t.TempDir() and is stopped by pid in t.Cleanup.
//
// What they need is installed by scripts/testservers.sh. When something is
// missing a test is skipped, except under CI=true, where it fails: CI must
// never count a skipped server test as passing.
package testserver

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// CacheDir is where testservers.sh keeps built binaries: $COFFER_TEST_BIN,
// else ${XDG_CACHE_HOME:-$HOME/.cache}/coffer-test/bin.
func CacheDir() string {
	if d := os.Getenv("COFFER_TEST_BIN"); d != "" {
		return d
	}
	base := os.Getenv("XDG_CACHE_HOME")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			home = os.TempDir()
		}
		base = filepath.Join(home, ".cache")
	}
	return filepath.Join(base, "coffer-test", "bin")
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// freePort asks the kernel for a free port on 127.0.0.1. Another process can
// take it before the server binds it; callers retry a failed start.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// proc is a started child process. Its output goes to a file: a pipe would
// make Wait block until every process holding its write end (sshd's
// per-connection children) has exited.
type proc struct {
	cmd     *exec.Cmd
	done    chan struct{}
	logPath string
}

func startProc(name string, args []string, logPath string) (*proc, error) {
	log, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer log.Close()
	cmd := exec.Command(name, args...) // #nosec G204 -- test servers: the binary and arguments come from the test harness
	cmd.Stdout, cmd.Stderr = log, log
	// Own process group: a Ctrl-C of go test does not reach it first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, done: make(chan struct{}), logPath: logPath}
	go func() { cmd.Wait(); close(p.done) }() // #nosec G104 -- the exit status is not needed: stop ends the process, and a failed start shows in its log
	return p, nil
}

func readLog(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 64<<10 {
		b = append([]byte("...\n"), b[len(b)-64<<10:]...)
	}
	return string(b)
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop ends the process and the processes it started (found by parent pid
// before any is signalled: sshd's per-connection children, so that open
// connections drop as in a real restart), all by pid: SIGTERM, then SIGKILL
// after 5s.
func (p *proc) stop() {
	if p == nil || p.exited() {
		return
	}
	pid := p.cmd.Process.Pid
	kids := descendants(pid)
	syscall.Kill(pid, syscall.SIGTERM) // #nosec G104 -- a process already gone (ESRCH) is the outcome wanted
	for _, k := range kids {
		syscall.Kill(k, syscall.SIGTERM) // #nosec G104 -- a process already gone (ESRCH) is the outcome wanted
	}
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		syscall.Kill(pid, syscall.SIGKILL) // #nosec G104 -- a process already gone (ESRCH) is the outcome wanted
		<-p.done
	}
	for _, k := range kids {
		syscall.Kill(k, syscall.SIGKILL) // #nosec G104 -- gone by now, or stuck: a process already gone (ESRCH) is the outcome wanted
	}
}

// descendants lists the pids below pid, from /proc.
func descendants(pid int) []int {
	children := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// "pid (comm) state ppid ...": comm may hold spaces and parens.
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) < 2 {
			continue
		}
		if ppid, err := strconv.Atoi(f[1]); err == nil {
			children[ppid] = append(children[ppid], child)
		}
	}
	var out []int
	queue := children[pid]
	for len(queue) > 0 {
		c := queue[0]
		queue = append(queue[1:], children[c]...)
		out = append(out, c)
	}
	return out
}

// waitReady polls ready until it succeeds, the process exits or 15s pass.
func waitReady(p *proc, ready func() error) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := ready()
		if err == nil {
			return nil
		}
		if p.exited() {
			return errors.New("exited: " + strings.TrimSpace(readLog(p.logPath)))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after 15s: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// makeTraversable gives "others" search (x) permission on dir and on each of
// its parents below the temp dir, so a server running as another user can
// reach it through t.TempDir()'s 0700 directories.
func makeTraversable(dir string) error {
	tmp := filepath.Clean(os.TempDir())
	for d := filepath.Clean(dir); strings.HasPrefix(d, tmp+string(filepath.Separator)); d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err != nil {
			return err
		}
		if err := os.Chmod(d, st.Mode().Perm()|0o011); err != nil {
			return err
		}
	}
	return nil
}
