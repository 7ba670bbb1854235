package backup

import (
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/state"
)

// A periodic schedule keeps its cadence: the time its runs take does not
// push the next run later, and a run that ended late does not cause
// catch-up runs for the periods it missed.
func TestPeriodicScheduleKeepsItsCadence(t *testing.T) {
	created := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := state.Schedule{Name: "hourly", Type: "periodic", Every: "1h", State: "ACTIVE", Created: created}
	if due, next := Due(s, created); !due || !next.Equal(created) {
		t.Fatalf("first run: due %v next %v", due, next)
	}
	// Runs that take 10 minutes, started 30s late by the check interval.
	for i := 0; i < 48; i++ {
		slot := created.Add(time.Duration(i) * time.Hour)
		end := slot.Add(30*time.Second + 10*time.Minute)
		s.LastRun = &end
		due, next := Due(s, end)
		if want := slot.Add(time.Hour); due || !next.Equal(want) {
			t.Fatalf("run %d ended %v: next %v (due %v), want %v", i, end, next, due, want)
		}
	}
	// A run that ended 3h25m after its slot (the destination was held):
	// one run comes next at the next whole period, none for those missed.
	end := created.Add(3*time.Hour + 25*time.Minute)
	s.LastRun = &end
	if due, next := Due(s, end.Add(time.Minute)); due || !next.Equal(created.Add(4*time.Hour)) {
		t.Fatalf("after a late run: next %v due %v", next, due)
	}
	// A schedule resumed long after its last run runs once, at once.
	if due, _ := Due(s, end.Add(30*24*time.Hour)); !due {
		t.Fatal("a schedule past its next run is not due")
	}
	// A cron schedule keeps its cron times, counted after the last run.
	c := state.Schedule{Name: "nightly", Type: "cron", Cron: "0 2 * * *", State: "ACTIVE", Created: created}
	ran := created.Add(2*time.Hour + 40*time.Minute)
	c.LastRun = &ran
	if _, next := Due(c, ran); !next.Equal(created.Add(26 * time.Hour)) {
		t.Fatalf("cron next %v", next)
	}
}
