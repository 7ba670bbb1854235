package service

import (
	"net"
	"sync"
)

// maxPollers bounds the callers pollAudit remembers; past it, it forgets
// them all (each then gets one more record).
const maxPollers = 4096

// pollAudit keeps the audit log to one record per change of what a caller
// sees when it polls a running backup: the first poll, and each poll whose
// answer names another backup (or none any more). The polls in between
// (a progress bar asks several times a second) are not audited; refused
// polls always are.
type pollAudit struct {
	mu   sync.Mutex
	seen map[string]string // caller -> running backup id ("" for none)
}

// observe records that c saw the backup id (empty: none running) and marks
// c quiet when it had seen the same at its previous poll.
func (p *pollAudit) observe(c *Call, id string) {
	if c == nil {
		return
	}
	host := c.Source
	if h, _, err := net.SplitHostPort(c.Source); err == nil {
		host = h
	}
	key := c.Identity.Actor() + "\x00" + c.Transport + "\x00" + host
	p.mu.Lock()
	defer p.mu.Unlock()
	if prev, ok := p.seen[key]; ok && prev == id {
		c.mu.Lock()
		c.quiet = true
		c.mu.Unlock()
		return
	}
	if p.seen == nil || len(p.seen) >= maxPollers {
		p.seen = map[string]string{}
	}
	p.seen[key] = id
}

// isQuiet: the call repeated what its caller already had audited.
func (c *Call) isQuiet() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.quiet
}
