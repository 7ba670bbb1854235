// Package testutil holds small helpers shared by the module's tests: WaitFor
// polls a condition instead of sleeping, Unavailable skips a test that needs
// something missing locally but fails it under CI. Only test code imports it.
package testutil

import (
	"errors"
	"fmt"
	"net"
	"os"
	"testing"
	"time"
)

// PollInterval is how often WaitFor checks its condition.
const PollInterval = 10 * time.Millisecond

// CI reports whether the tests run under CI (CI=true), where a test that
// needs a missing component fails instead of skipping.
func CI() bool { return os.Getenv("CI") == "true" }

// Unavailable is for a test that needs something this machine lacks: it
// skips t, or under CI=true fails it, with the message, which should say
// what to install. CI must never count a skipped test as passing.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if CI() {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// WaitFor polls cond until it returns nil, failing t if that has not
// happened within timeout. cond describes what it saw in the error it
// returns; the last one is in the failure message, after what.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	if err := Poll(timeout, cond); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// Poll calls cond every PollInterval until it returns nil, and returns nil
// then; after timeout it returns the last error cond returned. It is
// WaitFor for callers that must not call t.Fatal (other goroutines than the
// test's, or tests that expect the condition never to hold).
func Poll(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if !time.Now().Before(deadline) {
			return fmt.Errorf("not within %v: %w", timeout, err)
		}
		time.Sleep(PollInterval)
	}
}

// ErrNotYet is a plain "not yet" for conditions with nothing more to say.
var ErrNotYet = errors.New("not yet")

// FreeAddr is a 127.0.0.1 address with a port the kernel had free; another
// process could take it before the caller binds it, which is unlikely
// within a test.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}
