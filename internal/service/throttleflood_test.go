package service

import (
	"fmt"
	"testing"
	"time"
)

// A flood of attempts from many sources or user names fills the throttle
// to its bound. Making room must not forget the counts that slow guessing
// down: a key already past its free attempts (the all-sources passphrase
// counter, a user under attack) stays, and fresh entries go first.
func TestThrottleFloodKeepsTheCountsThatThrottle(t *testing.T) {
	var th throttle
	now := time.Now()
	th.mu.Lock()
	guarded := th.entry("open:all", now)
	guarded.n, guarded.last = 50, now
	user := th.entry("user:admin", now)
	user.n, user.last = throttleFree, now
	for i := 0; len(th.fails) < throttleMaxKeys; i++ {
		f := th.entry(fmt.Sprintf("open:source:10.%d.%d.%d", i>>16&255, i>>8&255, i&255), now)
		f.n, f.last = 1, now
	}
	// The flood goes on: twice the bound of new sources.
	for i := 0; i < 2*throttleMaxKeys; i++ {
		f := th.entry(fmt.Sprintf("open:source:172.%d.%d.%d", i>>16&255, i>>8&255, i&255), now)
		f.n, f.last = 1, now
	}
	th.mu.Unlock()
	if len(th.fails) > throttleMaxKeys {
		t.Fatalf("%d keys held, the bound is %d", len(th.fails), throttleMaxKeys)
	}
	if f := th.fails["open:all"]; f == nil || f.n != 50 {
		t.Fatalf("the all-sources passphrase counter was evicted by a flood of new sources: %+v", f)
	}
	if f := th.fails["user:admin"]; f == nil || f.n != throttleFree {
		t.Fatalf("a throttled user's count was evicted by a flood of new sources: %+v", f)
	}
}
