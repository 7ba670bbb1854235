// Package connlimit bounds the connections a listener holds, per source
// address and in total, so that one address cannot take every slot: a
// flood of idle connections from one host (which never starts a TLS
// handshake) leaves room for every other client.
//
// A connection over its source's limit is closed as soon as it is
// accepted. The last Reserve slots of the total go only to sources that
// hold no connection yet, so even a flood from many addresses leaves new
// clients a way in while it lasts. IPv6 sources are counted per /64 (one
// host usually owns a whole /64).
package connlimit

import (
	"net"
	"sync"
	"sync/atomic"
)

// Limits of one listener. Zero values take the defaults.
type Limits struct {
	PerSource int // connections one source address may hold (default 64)
	Total     int // connections the listener holds at most (default 1024)
	Reserve   int // of Total, kept for sources holding none (default Total/8)
}

// Rejections counts the connections a listener closed at once, by reason.
type Rejections struct {
	PerSource atomic.Uint64 // the source held its PerSource limit
	Total     atomic.Uint64 // the listener was full (or only the reserve was left)
}

// Listener wraps a net.Listener with Limits.
type Listener struct {
	net.Listener
	lim      Limits
	rejected *Rejections

	mu      sync.Mutex // guards count and total
	count   map[string]int
	total   int
	onClose func(reason string, source string)
}

// Wrap returns ln bounded by lim; rejected (may be nil) counts what it
// closed; onReject (may be nil) is told of each closed connection, with
// its reason ("per_source" or "total") and source.
func Wrap(ln net.Listener, lim Limits, rejected *Rejections, onReject func(reason, source string)) *Listener {
	if lim.PerSource <= 0 {
		lim.PerSource = 64
	}
	if lim.Total <= 0 {
		lim.Total = 1024
	}
	if lim.Reserve <= 0 {
		lim.Reserve = lim.Total / 8
	}
	if lim.Reserve >= lim.Total {
		lim.Reserve = lim.Total - 1
	}
	if rejected == nil {
		rejected = &Rejections{}
	}
	return &Listener{Listener: ln, lim: lim, rejected: rejected, count: map[string]int{}, onClose: onReject}
}

// Accept returns the next connection within the limits; connections over
// them are closed and counted, never returned.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src := sourceKey(c.RemoteAddr())
		if reason := l.admit(src); reason != "" {
			// Counted and reported before the close: whoever sees the
			// refusal finds it in the counters.
			if reason == "per_source" {
				l.rejected.PerSource.Add(1)
			} else {
				l.rejected.Total.Add(1)
			}
			if l.onClose != nil {
				l.onClose(reason, src)
			}
			c.Close() // #nosec G104 -- refusing a connection over the limit: nothing was read or written on it
			continue
		}
		return &conn{Conn: c, l: l, src: src}, nil
	}
}

// admit counts a new connection from src, or says why it is refused.
func (l *Listener) admit(src string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := l.count[src]
	switch {
	case n >= l.lim.PerSource:
		return "per_source"
	case l.total >= l.lim.Total:
		return "total"
	case n > 0 && l.total >= l.lim.Total-l.lim.Reserve:
		// The reserve is for sources that hold nothing yet.
		return "total"
	}
	l.count[src] = n + 1
	l.total++
	return ""
}

func (l *Listener) release(src string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.count[src]--; l.count[src] <= 0 {
		delete(l.count, src)
	}
	l.total--
}

// Open is the number of connections the listener holds now.
func (l *Listener) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// conn releases its slot once, on the first Close.
type conn struct {
	net.Conn
	l    *Listener
	src  string
	once sync.Once
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.src) })
	return err
}

// sourceKey is what a source is counted by: the IP, or its /64 for IPv6.
func sourceKey(a net.Addr) string {
	var ip net.IP
	switch v := a.(type) {
	case *net.TCPAddr:
		ip = v.IP
	default:
		host, _, err := net.SplitHostPort(a.String())
		if err != nil {
			return a.String()
		}
		ip = net.ParseIP(host)
		if ip == nil {
			return host
		}
	}
	if ip4 := ip.To4(); ip4 != nil {
		return ip4.String()
	}
	return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}
