package service

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestJoinGuard(t *testing.T) {
	var g joinGuard
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	a, b := "192.0.2.1:40000", "192.0.2.1:40001" // one host, two ports
	for i := 0; i < joinFreeFails-1; i++ {
		if err := g.attempt(a, now); err != nil {
			t.Fatalf("attempt %d refused: %v", i+1, err)
		}
	}
	if err := g.attempt(b, now); err != nil { // the fifth is still served...
		t.Fatalf("attempt %d: %v", joinFreeFails, err)
	}
	err := g.attempt(a, now) // ...then the host waits, whatever its port
	if !errors.Is(err, ErrThrottled) || !strings.Contains(err.Error(), "5 failed join attempts from 192.0.2.1; try again in 2s") {
		t.Fatalf("after %d attempts: %v", joinFreeFails, err)
	}
	if err := g.attempt("198.51.100.7:1", now); err != nil {
		t.Fatalf("another host is refused: %v", err)
	}
	// A client forwarded by a follower counts as itself, not as the follower.
	if err := g.attempt("192.0.2.1:0 via node-2", now); !errors.Is(err, ErrThrottled) {
		t.Fatalf("forwarded attempt from a waiting host: %v", err)
	}
	if err := g.attempt("203.0.113.9:0 via node-2", now); err != nil {
		t.Fatalf("forwarded attempt from another host: %v", err)
	}
	// Each further attempt after the wait doubles it, up to the cap.
	if err := g.attempt(a, now.Add(2*time.Second)); err != nil {
		t.Fatalf("after the wait: %v", err)
	}
	if err := g.attempt(a, now.Add(5*time.Second)); err == nil {
		t.Fatal("the second wait is not longer")
	}
	for i := 0; i < 40; i++ {
		g.attempt(a, now.Add(time.Duration(i)*joinMaxWait))
	}
	if f := g.m["192.0.2.1"]; f.until.Sub(f.last) != joinMaxWait {
		t.Fatalf("wait %s, want the cap %s", f.until.Sub(f.last), joinMaxWait)
	}
	// A success forgets.
	g.succeed(a)
	if err := g.attempt(a, now.Add(time.Hour)); err != nil {
		t.Fatalf("after a success: %v", err)
	}
	// IPv6: one /64 is one source; quiet sources are forgotten.
	for i := 0; i < joinFreeFails; i++ {
		g.attempt(fmt.Sprintf("[2001:db8::%x]:5", i+1), now)
	}
	if err := g.attempt("[2001:db8::ffff]:6", now); err == nil {
		t.Fatal("an IPv6 /64 not limited as one source")
	}
	if err := g.attempt("[2001:db8:0:1::1]:6", now); err != nil {
		t.Fatalf("another /64: %v", err)
	}
	if err := g.attempt("[2001:db8::1]:6", now.Add(joinForget+time.Minute)); err != nil {
		t.Fatalf("not forgotten after a quiet time: %v", err)
	}
	// Memory stays bounded under a flood of sources.
	var h joinGuard
	for i := 0; i < joinMaxKeys+500; i++ {
		h.attempt(fmt.Sprintf("10.%d.%d.%d:1", i>>16&255, i>>8&255, i&255), now.Add(time.Duration(i)*time.Millisecond))
	}
	if len(h.m) > joinMaxKeys {
		t.Fatalf("%d sources kept, the cap is %d", len(h.m), joinMaxKeys)
	}
}
