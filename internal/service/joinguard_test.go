package service

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestJoinGuard(t *testing.T) {
	var g joinGuard
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	a, b := "192.0.2.1:40000", "192.0.2.1:40001" // one host, two ports
	for i := 0; i < joinFreeFails-1; i++ {
		if err := g.allow(a, now); err != nil {
			t.Fatalf("attempt %d refused: %v", i+1, err)
		}
		g.fail(a, now)
	}
	if err := g.allow(b, now); err != nil {
		t.Fatalf("before the limit: %v", err)
	}
	g.fail(b, now) // the limit: now the host waits, whatever its port
	err := g.allow(a, now)
	if !errors.Is(err, ErrThrottled) || !strings.Contains(err.Error(), "5 failed join attempts from 192.0.2.1; try again in 2s") {
		t.Fatalf("after %d failures: %v", joinFreeFails, err)
	}
	if err := g.allow("198.51.100.7:1", now); err != nil {
		t.Fatalf("another host is refused: %v", err)
	}
	if err := g.allow(a, now.Add(2*time.Second)); err != nil {
		t.Fatalf("after the wait: %v", err)
	}
	// Each further failure doubles the wait, up to the cap.
	g.fail(a, now.Add(2*time.Second))
	if err := g.allow(a, now.Add(5*time.Second)); err == nil {
		t.Fatal("the second wait is not longer")
	}
	for i := 0; i < 30; i++ {
		g.fail(a, now.Add(10*time.Second))
	}
	if err := g.allow(a, now.Add(10*time.Second+joinMaxWait)); err != nil {
		t.Fatalf("wait above the cap: %v", err)
	}
	// A success forgets; so does a long quiet time.
	g.succeed(a)
	if err := g.allow(a, now.Add(11*time.Second)); err != nil {
		t.Fatalf("after a success: %v", err)
	}
	for i := 0; i < joinFreeFails; i++ {
		g.fail("[2001:db8::1]:5", now)
	}
	if err := g.allow("[2001:db8::1]:6", now); err == nil {
		t.Fatal("IPv6 host not limited")
	}
	g.fail("[2001:db8::1]:5", now.Add(joinForget+time.Minute))
	if err := g.allow("[2001:db8::1]:6", now.Add(joinForget+time.Minute)); err != nil {
		t.Fatalf("failures not forgotten after a quiet time: %v", err)
	}
}
