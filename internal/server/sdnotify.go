package server

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"time"
)

// The systemd notification protocol (sd_notify(3)): a datagram of
// "KEY=VALUE" lines sent to the unix socket named by $NOTIFY_SOCKET. Under
// a unit with Type=notify systemd considers the service started at READY=1,
// and with WatchdogSec= it restarts the service when WATCHDOG=1 stops
// arriving. Without $NOTIFY_SOCKET (not started by systemd) nothing is sent.

// sdNotify sends state to $NOTIFY_SOCKET. It reports whether a message was
// sent: false, nil when the variable is unset.
func sdNotify(state string) (bool, error) {
	name := os.Getenv("NOTIFY_SOCKET")
	if name == "" {
		return false, nil
	}
	addr := &net.UnixAddr{Name: name, Net: "unixgram"}
	// A leading '@' names a socket in the abstract namespace.
	if name[0] == '@' {
		addr.Name = "\x00" + name[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, addr)
	if err != nil {
		return false, fmt.Errorf("connect to the systemd notification socket %s: %w", name, err)
	}
	defer conn.Close()
	if err := conn.SetWriteDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return false, fmt.Errorf("systemd notification: %w", err)
	}
	if _, err := conn.Write([]byte(state)); err != nil {
		return false, fmt.Errorf("send %q to the systemd notification socket: %w", state, err)
	}
	return true, nil
}

// sdWatchdogInterval is how often WATCHDOG=1 must be sent: half of
// $WATCHDOG_USEC (as sd_watchdog_enabled(3) advises), 0 when the watchdog
// is off or meant for another process ($WATCHDOG_PID).
func sdWatchdogInterval() time.Duration {
	us, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64)
	if err != nil || us <= 0 {
		return 0
	}
	if p := os.Getenv("WATCHDOG_PID"); p != "" {
		if pid, err := strconv.Atoi(p); err != nil || pid != os.Getpid() {
			return 0
		}
	}
	return time.Duration(us) * time.Microsecond / 2
}

// notify sends state to systemd, logging (not failing on) an error: a
// service manager that cannot be told is no reason to stop serving.
func (s *Server) notify(state string) {
	if _, err := sdNotify(state); err != nil {
		s.Log.Warn("systemd notification failed", "state", state, "error", err)
	}
}

// watchdog sends WATCHDOG=1 at the interval systemd asked for, while the
// server runs.
func (s *Server) watchdog() {
	every := sdWatchdogInterval()
	if every <= 0 || os.Getenv("NOTIFY_SOCKET") == "" {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
			s.notify("WATCHDOG=1")
		}
	}
}
