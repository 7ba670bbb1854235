package testutil

import (
	"sync"
	"time"
)

// Clock is a clock for code that takes a Now func (service.Config.Now):
// the wall clock plus an offset that Advance moves forward, so a test makes
// time pass without sleeping. It never goes back.
type Clock struct {
	mu     sync.Mutex
	offset time.Duration
	last   time.Time
}

// Now is the wall clock plus the offset, never earlier than a time it
// returned before.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := time.Now().Add(c.offset)
	if t.Before(c.last) {
		t = c.last
	}
	c.last = t
	return t
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}
