package testutil

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestPollReturnsOnceTheConditionHolds(t *testing.T) {
	var calls atomic.Int32
	err := Poll(10*time.Second, func() error {
		if calls.Add(1) < 3 {
			return fmt.Errorf("calls %d", calls.Load())
		}
		return nil
	})
	if err != nil || calls.Load() != 3 {
		t.Fatalf("Poll: %v after %d calls, want nil after 3", err, calls.Load())
	}
}

func TestPollReportsTheLastSeenAfterTheTimeout(t *testing.T) {
	n := 0
	start := time.Now()
	err := Poll(50*time.Millisecond, func() error { n++; return fmt.Errorf("seen %d", n) })
	if err == nil {
		t.Fatal("Poll of a condition that never holds returned nil")
	}
	if time.Since(start) < 50*time.Millisecond {
		t.Fatalf("Poll gave up after %v, before its timeout", time.Since(start))
	}
	if want := fmt.Sprintf("seen %d", n); !strings.HasSuffix(err.Error(), want) {
		t.Fatalf("Poll error %q does not end with the last condition error %q", err, want)
	}
	if n < 2 {
		t.Fatalf("condition called %d times in 50ms", n)
	}
}

func TestPollChecksAtLeastOnceWithoutTimeout(t *testing.T) {
	if err := Poll(0, func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	if err := Poll(0, func() error { return ErrNotYet }); !errors.Is(err, ErrNotYet) {
		t.Fatalf("Poll(0) of a false condition: %v", err)
	}
}

func TestUnavailableSkipsLocallyAndFailsUnderCI(t *testing.T) {
	for _, ci := range []string{"", "true"} {
		t.Run("CI="+ci, func(t *testing.T) {
			t.Setenv("CI", ci)
			rec := &recorder{TB: t}
			done := make(chan struct{})
			go func() { // Skip and Fatal end the goroutine that calls them
				defer close(done)
				Unavailable(rec, "needs %s: apt-get install %s", "x", "x")
			}()
			<-done
			want := "skip"
			if ci == "true" {
				want = "fatal"
			}
			if rec.how != want || rec.msg != "needs x: apt-get install x" {
				t.Fatalf("Unavailable with CI=%q: %s %q, want %s with the message", ci, rec.how, rec.msg, want)
			}
		})
	}
}

// recorder notes how a test helper ended the test instead of ending it.
type recorder struct {
	testing.TB
	how, msg string
}

func (r *recorder) Helper() {}
func (r *recorder) Fatal(args ...any) {
	r.how, r.msg = "fatal", fmt.Sprint(args...)
	runtime.Goexit()
}
func (r *recorder) Skip(args ...any) {
	r.how, r.msg = "skip", fmt.Sprint(args...)
	runtime.Goexit()
}

func TestClockAdvancesWithoutSleeping(t *testing.T) {
	var c Clock
	t0 := c.Now()
	c.Advance(time.Hour)
	t1 := c.Now()
	if d := t1.Sub(t0); d < time.Hour || d > time.Hour+time.Minute {
		t.Fatalf("after Advance(1h) the clock moved %v", d)
	}
	if t2 := c.Now(); t2.Before(t1) {
		t.Fatalf("the clock went back: %v after %v", t2, t1)
	}
}
