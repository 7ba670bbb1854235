package server

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// notifySocket listens on a unixgram socket and points $NOTIFY_SOCKET at
// it, as systemd does for a Type=notify unit.
func notifySocket(t *testing.T) *net.UnixConn {
	t.Helper()
	// A short path: unix socket names are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "sdn")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	name := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", name)
	return conn
}

// nextNotification reads one datagram (failing after a minute).
func nextNotification(t *testing.T, conn *net.UnixConn) string {
	t.Helper()
	buf := make([]byte, 4096)
	if err := conn.SetReadDeadline(time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("no notification: %v", err)
	}
	return string(buf[:n])
}

func TestSdNotifySendsToTheSocket(t *testing.T) {
	conn := notifySocket(t)
	sent, err := sdNotify("READY=1")
	if err != nil || !sent {
		t.Fatalf("sdNotify: %v %v", sent, err)
	}
	if got := nextNotification(t, conn); got != "READY=1" {
		t.Fatalf("got %q", got)
	}
}

func TestSdNotifyWithoutSocketSendsNothing(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if sent, err := sdNotify("READY=1"); sent || err != nil {
		t.Fatalf("sdNotify without $NOTIFY_SOCKET: %v %v", sent, err)
	}
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "absent"))
	if _, err := sdNotify("READY=1"); err == nil {
		t.Fatal("a missing socket was not reported")
	}
}

func TestSdWatchdogInterval(t *testing.T) {
	pid := strconv.Itoa(os.Getpid())
	for _, c := range []struct {
		usec, pid string
		want      time.Duration
	}{
		{"", "", 0},
		{"garbage", "", 0},
		{"0", "", 0},
		{"4000000", "", 2 * time.Second},
		{"4000000", pid, 2 * time.Second},
		{"4000000", "1", 0}, // meant for another process
	} {
		t.Setenv("WATCHDOG_USEC", c.usec)
		t.Setenv("WATCHDOG_PID", c.pid)
		if got := sdWatchdogInterval(); got != c.want {
			t.Errorf("WATCHDOG_USEC=%q WATCHDOG_PID=%q: %v, want %v", c.usec, c.pid, got, c.want)
		}
	}
}

// TestServerNotifiesSystemd: READY=1 once listening (with the keystore
// state), WATCHDOG=1 at half the watchdog interval, RELOADING=1 and READY=1
// around a reload, STOPPING=1 when stopping.
func TestServerNotifiesSystemd(t *testing.T) {
	conn := notifySocket(t)
	t.Setenv("WATCHDOG_USEC", "100000") // 100 ms: WATCHDOG=1 every 50 ms
	t.Setenv("WATCHDOG_PID", "")
	s := startServer(t, testConfig(t))
	ready := nextNotification(t, conn)
	if !strings.HasPrefix(ready, "READY=1\n") || !strings.Contains(ready, "keystore uninitialized") ||
		!strings.Contains(ready, "MAINPID="+strconv.Itoa(os.Getpid())) {
		t.Fatalf("first notification %q", ready)
	}
	if got := nextNotification(t, conn); got != "WATCHDOG=1" {
		t.Fatalf("after READY: %q, want WATCHDOG=1", got)
	}
	t.Setenv("WATCHDOG_USEC", "")
	s.Reload()
	// Watchdog pings may come between: skip them.
	next := func() string {
		for {
			if m := nextNotification(t, conn); m != "WATCHDOG=1" {
				return m
			}
		}
	}
	if got := next(); got != "RELOADING=1" {
		t.Fatalf("reload: %q", got)
	}
	if got := next(); got != "READY=1" {
		t.Fatalf("after reload: %q", got)
	}
	if err := s.Stop(StopSmart); err != nil {
		t.Fatal(err)
	}
	s.Wait()
	if got := next(); !strings.HasPrefix(got, "STOPPING=1\n") {
		t.Fatalf("stop: %q", got)
	}
}
