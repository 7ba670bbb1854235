package audit

import (
	"fmt"
	"io"
	"log/slog"
	"log/syslog"
	"sync/atomic"
	"time"
)

// syslogPriority is the facility and severity of mirrored records.
const syslogPriority = syslog.LOG_AUTH | syslog.LOG_INFO

// MirrorSyslog connects to the local syslog daemon (LOG_AUTH|LOG_INFO, with
// tag) for Options.Syslog. The writer is a *syslog.Writer; the caller closes it.
func MirrorSyslog(tag string) (io.Writer, error) {
	w, err := syslog.New(syslogPriority, tag)
	if err != nil {
		return nil, fmt.Errorf("audit: connect to local syslog: %w", err)
	}
	return w, nil
}

// DialSyslog connects to a syslog daemon at addr over network ("udp", "tcp",
// "unixgram", ...; "" for the local daemon) for Options.Syslog. The writer is
// a *syslog.Writer; the caller closes it.
func DialSyslog(network, addr, tag string) (io.Writer, error) {
	w, err := syslog.Dial(network, addr, syslogPriority, tag)
	if err != nil {
		return nil, fmt.Errorf("audit: connect to syslog %s %s: %w", network, addr, err)
	}
	return w, nil
}

// mirrorQueue is how many lines may wait for a slow mirror before new ones are dropped.
const mirrorQueue = 4096

// mirrorCloseWait is how long Close waits for the mirror to drain.
var mirrorCloseWait = 2 * time.Second

// mirror copies lines to a writer from its own goroutine.
type mirror struct {
	w    io.Writer
	log  *slog.Logger
	ch   chan []byte
	done chan struct{}

	sent, failed, dropped atomic.Uint64
}

func startMirror(w io.Writer, lg *slog.Logger) *mirror {
	m := &mirror{w: w, log: lg, ch: make(chan []byte, mirrorQueue), done: make(chan struct{})}
	go m.run()
	return m
}

func (m *mirror) run() {
	defer close(m.done)
	failing := false
	for line := range m.ch {
		if _, err := m.w.Write(line); err != nil {
			m.failed.Add(1)
			if !failing {
				m.log.Warn("audit: syslog mirror write failed; records are still written to the audit log", "err", err)
				failing = true
			}
			continue
		}
		m.sent.Add(1)
		if failing {
			m.log.Info("audit: syslog mirror works again", "failed_so_far", m.failed.Load())
			failing = false
		}
	}
}

// send queues line without blocking (called under Log.mu, so in seq order).
func (m *mirror) send(line []byte) {
	select {
	case m.ch <- line:
	default:
		if n := m.dropped.Add(1); n == 1 || n%1000 == 0 {
			m.log.Warn("audit: syslog mirror is not keeping up; records dropped from the mirror (not from the audit log)", "dropped", n)
		}
	}
}

// close stops the mirror after it has written the queued lines, waiting at
// most mirrorCloseWait for a stuck writer.
func (m *mirror) close() {
	close(m.ch)
	select {
	case <-m.done:
	case <-time.After(mirrorCloseWait):
		m.log.Warn("audit: syslog mirror did not drain before close", "queued", len(m.ch))
	}
}

func (m *mirror) stats() MirrorStats {
	return MirrorStats{Sent: m.sent.Load(), Failed: m.failed.Load(), Dropped: m.dropped.Load()}
}
