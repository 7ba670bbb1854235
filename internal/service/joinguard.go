package service

import (
	"fmt"
	"strings"
	"sync"
	"time"
)

// joinGuard limits failed cluster join attempts per source address. The
// join endpoint is the only one a stranger can call with a secret to guess
// (the token): after joinFreeFails failures a source is refused outright,
// for a time that doubles with each further failure, without even looking
// at the token. Refusing (429) instead of sleeping holds nothing on the
// server.
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

// allow reports an error while source must wait.
func (g *joinGuard) allow(source string, now time.Time) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	f := g.m[sourceHost(source)]
	if f == nil || !now.Before(f.until) {
		return nil
	}
	return fmt.Errorf("%w: %d failed join attempts from %s; try again in %s", ErrThrottled, f.n, sourceHost(source), f.until.Sub(now).Round(time.Second))
}

// fail counts a refused attempt.
func (g *joinGuard) fail(source string, now time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.m == nil {
		g.m = map[string]*joinFails{}
	}
	if len(g.m) >= joinMaxKeys {
		for k, f := range g.m {
			if now.Sub(f.last) > joinForget || len(g.m) >= joinMaxKeys && !now.Before(f.until) {
				delete(g.m, k)
			}
		}
	}
	k := sourceHost(source)
	f := g.m[k]
	if f == nil || now.Sub(f.last) > joinForget {
		f = &joinFails{}
		g.m[k] = f
	}
	f.n++
	f.last = now
	if f.n >= joinFreeFails {
		f.until = now.Add(min(joinBaseWait<<min(f.n-joinFreeFails, 20), joinMaxWait))
	}
}

// succeed forgets a source's failures.
func (g *joinGuard) succeed(source string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.m, sourceHost(source))
}

// sourceHost is the address without its port.
func sourceHost(source string) string {
	if i := strings.LastIndex(source, ":"); i > 0 && !strings.HasSuffix(source, "]") {
		return strings.Trim(source[:i], "[]")
	}
	return source
}
