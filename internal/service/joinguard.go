package service

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"time"
)

// joinGuard limits cluster join attempts per source address. The join
// endpoint is the only one a stranger can call with a secret to guess (the
// token): after joinFreeFails attempts that did not succeed a source is
// refused outright, for a time that doubles with each further attempt,
// without even looking at the token. Refusing (429) instead of sleeping
// holds nothing on the server. An attempt counts when it starts (so
// parallel guesses count too) and a success clears the source.
type joinGuard struct {
	mu sync.Mutex
	m  map[string]*joinFails
}

type joinFails struct {
	n     int
	last  time.Time
	until time.Time
}

const (
	joinFreeFails = 5
	joinBaseWait  = 2 * time.Second
	joinMaxWait   = 5 * time.Minute
	joinForget    = 30 * time.Minute
	joinMaxKeys   = 10000
)

// attempt counts an attempt from source, or refuses it while the source
// must wait.
func (g *joinGuard) attempt(source string, now time.Time) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	k := sourceHost(source)
	f := g.m[k]
	if f != nil && now.Before(f.until) {
		return fmt.Errorf("%w: %d failed join attempts from %s; try again in %s", ErrThrottled, f.n, k, f.until.Sub(now).Round(time.Second))
	}
	if g.m == nil {
		g.m = map[string]*joinFails{}
	}
	if f == nil || now.Sub(f.last) > joinForget {
		if len(g.m) >= joinMaxKeys {
			g.evict(now)
		}
		f = &joinFails{}
		g.m[k] = f
	}
	f.n++
	f.last = now
	if f.n >= joinFreeFails {
		f.until = now.Add(min(joinBaseWait<<min(f.n-joinFreeFails, 20), joinMaxWait))
	}
	return nil
}

// evict makes room: sources quiet for joinForget go, and if none did, the
// least recently seen one (memory stays bounded under a flood).
func (g *joinGuard) evict(now time.Time) {
	var oldest string
	for k, f := range g.m {
		if now.Sub(f.last) > joinForget {
			delete(g.m, k)
		} else if oldest == "" || f.last.Before(g.m[oldest].last) {
			oldest = k
		}
	}
	if len(g.m) >= joinMaxKeys && oldest != "" {
		delete(g.m, oldest)
	}
}

// succeed forgets a source's attempts.
func (g *joinGuard) succeed(source string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.m, sourceHost(source))
}

// sourceHost is what a source is counted as: its IP without the port or
// the forwarding node ("ip:port via node"), and an IPv6 address's /64 (one
// host usually has a whole /64).
func sourceHost(source string) string {
	if i := strings.Index(source, " via "); i >= 0 {
		source = source[:i]
	}
	if h, _, err := net.SplitHostPort(source); err == nil {
		source = h
	}
	source = strings.Trim(source, "[]")
	if ip := net.ParseIP(source); ip != nil && ip.To4() == nil {
		return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
	}
	return source
}
