package e2e

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/client"
	"github.com/coffer-kms/coffer/internal/testutil"
)

// TestDebianPackage builds the .deb (scripts/deb.sh, as make deb does),
// installs it with dpkg, checks the files, the user and the modes, checks
// the unit with systemd-analyze, runs the server as the coffer user the way
// the unit does (systemd need not be PID 1: setpriv and prlimit stand in
// for User=, LimitCORE= and LimitMEMLOCK=, a unixgram socket for systemd's
// notification socket), initialises and stops it, and purges the package,
// leaving the machine as it was.
func TestDebianPackage(t *testing.T) {
	requireRoot(t, "dpkg -i installs the package system-wide")
	for _, tool := range []string{"dpkg", "dpkg-query", "systemd-analyze", "setpriv", "prlimit", "getent"} {
		if _, err := exec.LookPath(tool); err != nil {
			testutil.Unavailable(t, "%s is missing (apt-get install dpkg systemd util-linux)", tool)
		}
	}
	// Never disturb an installed Coffer or its data.
	if out, err := exec.Command("dpkg-query", "-W", "-f=${Status}", "coffer").Output(); err == nil && strings.Contains(string(out), "installed") {
		testutil.Unavailable(t, "a coffer package is already installed on this machine")
	}
	for _, p := range []string{"/var/lib/coffer", "/etc/coffer", "/usr/bin/coffer"} {
		if _, err := os.Lstat(p); err == nil {
			testutil.Unavailable(t, "%s exists on this machine: the package test needs a machine without Coffer", p)
		}
	}
	if _, err := user.Lookup("coffer"); err == nil {
		testutil.Unavailable(t, "a coffer user exists on this machine")
	}

	build := exec.Command("../../scripts/deb.sh")
	build.Env = append(os.Environ(), "DEB_OUT="+t.TempDir())
	out, err := build.Output()
	if err != nil {
		t.Fatalf("scripts/deb.sh: %v\n%s", err, exitStderr(err))
	}
	deb := strings.TrimSpace(string(out))
	if !regexp.MustCompile(`/coffer_[0-9][^/_]*_amd64\.deb$`).MatchString(deb) {
		t.Fatalf("package name %q", deb)
	}

	run(t, "dpkg", "-i", deb)
	t.Cleanup(func() {
		// Whatever happened: the machine as before.
		exec.Command("dpkg", "--purge", "coffer").Run()
		os.RemoveAll("/var/lib/coffer")
		os.RemoveAll("/etc/coffer")
		exec.Command("userdel", "coffer").Run()
		exec.Command("groupdel", "coffer").Run()
	})

	u, err := user.Lookup("coffer")
	if err != nil {
		t.Fatalf("the package created no coffer user: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if uid == 0 || uid >= 1000 {
		t.Errorf("coffer uid %d is not a system uid", uid)
	}
	if pw := run(t, "getent", "passwd", "coffer"); !strings.HasSuffix(strings.TrimSpace(pw), ":/var/lib/coffer:/usr/sbin/nologin") {
		t.Errorf("passwd entry %q: want home /var/lib/coffer, shell nologin", pw)
	}
	for _, f := range []struct {
		path      string
		mode      fs.FileMode
		uid, gid  int
		directory bool
	}{
		{"/usr/bin/coffer", 0o755, 0, 0, false},
		{"/etc/coffer/coffer.yaml", 0o640, 0, gid, false},
		{"/var/lib/coffer", 0o700, uid, gid, true},
		{"/lib/systemd/system/coffer.service", 0o644, 0, 0, false},
		{"/usr/share/man/man1/coffer.1.gz", 0o644, 0, 0, false},
		{"/usr/share/man/man1/coffer-server.1.gz", 0o644, 0, 0, false},
		{"/usr/share/man/man1/coffer-debug-bundle.1.gz", 0o644, 0, 0, false},
		{"/usr/share/bash-completion/completions/coffer", 0o644, 0, 0, false},
		{"/usr/share/zsh/vendor-completions/_coffer", 0o644, 0, 0, false},
		{"/usr/share/fish/vendor_completions.d/coffer.fish", 0o644, 0, 0, false},
	} {
		fi, err := os.Stat(f.path)
		if err != nil {
			t.Errorf("%s: %v", f.path, err)
			continue
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode().Perm() != f.mode || fi.IsDir() != f.directory || int(st.Uid) != f.uid || int(st.Gid) != f.gid {
			t.Errorf("%s: mode %v owner %d:%d, want %v %d:%d (directory %v)", f.path, fi.Mode(), st.Uid, st.Gid, f.mode, f.uid, f.gid, f.directory)
		}
	}
	if cf := run(t, "dpkg-query", "-W", "-f=${Conffiles}", "coffer"); !strings.Contains(cf, "/etc/coffer/coffer.yaml") {
		t.Errorf("/etc/coffer/coffer.yaml is not a conffile: %q", cf)
	}
	if v := run(t, "/usr/bin/coffer", "version"); !strings.Contains(v, "state-schema") || strings.Contains(v, "commit:   unknown") {
		t.Errorf("coffer version of the package has no build stamp or formats:\n%s", v)
	}

	// The unit: systemd-analyze verify is silent on a correct unit.
	if out, err := exec.Command("systemd-analyze", "verify", "/lib/systemd/system/coffer.service").CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	sec, _ := exec.Command("systemd-analyze", "security", "--offline=yes", "/lib/systemd/system/coffer.service").CombinedOutput()
	m := regexp.MustCompile(`Overall exposure level for coffer\.service: ([0-9.]+)`).FindSubmatch(sec)
	if m == nil {
		t.Fatalf("systemd-analyze security: no exposure level in\n%s", sec)
	}
	score, _ := strconv.ParseFloat(string(m[1]), 64)
	t.Logf("systemd-analyze security --offline=yes: exposure %.1f", score)
	if score > 2.0 {
		t.Errorf("exposure level %.1f: the unit lost hardening (docs/operations/systemd.md records 1.4)", score)
	}

	// The operator's edit: a free port instead of 8200 (other servers may
	// run on this machine).
	port := strconv.Itoa(freePort(t))
	conf, err := os.ReadFile("/etc/coffer/coffer.yaml")
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(conf), "listen: 127.0.0.1:8200", "listen: 127.0.0.1:"+port, 1)
	if edited == string(conf) {
		t.Fatal("the packaged coffer.yaml has no listen: 127.0.0.1:8200 line")
	}
	// LimitMEMLOCK=infinity needs CAP_SYS_RESOURCE where the hard limit is
	// lower (a container): without it the server runs with memory.lock off.
	limits := []string{"--core=0:0", "--memlock=unlimited:unlimited"}
	if out, err := exec.Command("prlimit", "--memlock=unlimited:unlimited", "true").CombinedOutput(); err != nil {
		t.Logf("cannot raise RLIMIT_MEMLOCK here (%s): memory.lock off for this run", strings.TrimSpace(string(out)))
		limits = limits[:1]
		edited = strings.Replace(edited, "  lock: true", "  lock: false", 1)
	}
	if err := os.WriteFile("/etc/coffer/coffer.yaml", []byte(edited), 0o640); err != nil {
		t.Fatal(err)
	}

	// The notification socket systemd would offer (writable by coffer).
	sockDir, err := os.MkdirTemp("", "coffer-notify")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	notifyPath := filepath.Join(sockDir, "notify")
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	for _, p := range []string{sockDir, notifyPath} {
		if err := os.Chown(p, uid, gid); err != nil {
			t.Fatal(err)
		}
	}

	// As the unit runs it: User=coffer, NoNewPrivileges, no capabilities,
	// LimitCORE=0, LimitMEMLOCK=infinity.
	srv := exec.Command("prlimit", append(limits, "--",
		"setpriv", "--reuid=coffer", "--regid=coffer", "--init-groups", "--no-new-privs",
		"--inh-caps=-all", "--bounding-set=-all",
		"/usr/bin/coffer", "server", "--config", "/etc/coffer/coffer.yaml")...)
	srv.Env = []string{"PATH=/usr/bin:/bin", "NOTIFY_SOCKET=" + notifyPath}
	logs := &syncBuf{}
	srv.Stdout, srv.Stderr = logs, logs
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- srv.Wait() }()
	defer func() {
		if srv.ProcessState == nil {
			srv.Process.Kill()
			<-exited
		}
	}()
	ready := readNotify(t, notify, logs)
	if !strings.HasPrefix(ready, "READY=1\n") || !strings.Contains(ready, "keystore uninitialized") {
		t.Fatalf("first notification %q\n%s", ready, logs)
	}

	// Initialise over the control socket (root may use it).
	local, err := client.New(client.Config{Addresses: []string{"unix:///var/lib/coffer/coffer.sock"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := local.Init(ctx, testPassphrase); err != nil {
		t.Fatalf("init: %v\n%s", err, logs)
	}
	if h, err := local.Health(ctx); err != nil || h.State != "open" {
		t.Fatalf("health after init: %+v %v", h, err)
	}

	// systemctl stop: KillSignal=SIGTERM, the smart stop.
	if err := srv.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if m := readNotify(t, notify, logs); !strings.HasPrefix(m, "STOPPING=1") {
		t.Errorf("on SIGTERM: %q", m)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("server exit: %v\n%s", err, logs)
		}
	case <-time.After(90 * time.Second): // the unit's TimeoutStopSec
		t.Fatalf("no exit within TimeoutStopSec after SIGTERM\n%s", logs)
	}

	// Everything the server wrote belongs to coffer and is private.
	err = filepath.WalkDir("/var/lib/coffer", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		if int(st.Uid) != uid {
			return fmt.Errorf("%s is owned by uid %d, not coffer", p, st.Uid)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			return fmt.Errorf("%s has mode %v: group or others have access", p, fi.Mode())
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}

	// Purge: the package, its user and /etc/coffer go; the data dir, which
	// holds keys, is kept with a message and removed by hand.
	purge, err := exec.Command("dpkg", "--purge", "coffer").CombinedOutput()
	if err != nil {
		t.Fatalf("dpkg --purge: %v\n%s", err, purge)
	}
	if !strings.Contains(string(purge), "/var/lib/coffer is not empty and was kept") {
		t.Errorf("purge did not say it kept the data dir:\n%s", purge)
	}
	if err := os.RemoveAll("/var/lib/coffer"); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/usr/bin/coffer", "/etc/coffer", "/lib/systemd/system/coffer.service", "/usr/share/man/man1/coffer.1.gz"} {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s after purge: %v", p, err)
		}
	}
	if _, err := user.Lookup("coffer"); err == nil {
		t.Error("the coffer user is still there after purge")
	}
	if _, err := user.LookupGroup("coffer"); err == nil {
		t.Error("the coffer group is still there after purge")
	}
}

// run runs a command and returns its standard output, failing t on error.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out, exitStderr(err))
	}
	return string(out)
}

func exitStderr(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(ee.Stderr)
	}
	return ""
}

// readNotify reads one systemd notification (failing after a minute).
func readNotify(t *testing.T, conn *net.UnixConn, logs *syncBuf) string {
	t.Helper()
	buf := make([]byte, 4096)
	if err := conn.SetReadDeadline(time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("no systemd notification: %v\n%s", err, logs)
	}
	return string(buf[:n])
}
