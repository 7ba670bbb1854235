package backup

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/state"
)

// schedHost keeps schedules in memory; a backup's destination cannot be
// opened (the backup fails at once), and during calls what an operator
// does while the backup runs.
type schedHost struct {
	loopHost
	scheds map[string]state.Schedule // guarded by loopHost.mu
	during func(destination string)
}

func (h *schedHost) Schedules() ([]state.Schedule, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []state.Schedule
	for _, s := range h.scheds {
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b state.Schedule) int {
		if a.Name < b.Name {
			return -1
		}
		return 1
	})
	return out, nil
}
func (h *schedHost) PutSchedule(_ context.Context, s state.Schedule) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.scheds[s.Name] = s
	return nil
}
func (h *schedHost) NewID() string { return "00000001" }
func (h *schedHost) OpenTarget(_ context.Context, name string) (*Target, error) {
	if h.during != nil {
		h.during(name)
	}
	return nil, errors.New("no destinations here")
}
func (h *schedHost) schedule(name string) (state.Schedule, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s, ok := h.scheds[name]
	return s, ok
}

// What an operator does to the schedules while a scheduled backup runs
// stays done: a schedule removed meanwhile is not written back, one edited
// meanwhile keeps the edit (and gets the run's result), and one paused
// meanwhile does not run.
func TestSchedulesChangedDuringARunKeepTheChange(t *testing.T) {
	created := time.Now().Add(-time.Hour).UTC()
	h := &schedHost{loopHost: loopHost{journal: t.TempDir(), records: map[string]state.BackupRecord{}}, scheds: map[string]state.Schedule{
		"a-removed": {Name: "a-removed", Destination: "d1", Type: "periodic", Every: "1h", State: "ACTIVE", Created: created},
		"b-edited":  {Name: "b-edited", Destination: "d2", Type: "periodic", Every: "1h", State: "ACTIVE", Created: created},
		"c-paused":  {Name: "c-paused", Destination: "d3", Type: "periodic", Every: "1h", State: "ACTIVE", Created: created},
	}}
	h.during = func(destination string) {
		h.mu.Lock()
		defer h.mu.Unlock()
		switch destination {
		case "d1": // coffer backup schedule rm a-removed
			delete(h.scheds, "a-removed")
		case "d2": // coffer backup schedule edit b-edited --every 2h; pause c-paused
			s := h.scheds["b-edited"]
			s.Every, s.State = "2h", "ACTIVE"
			h.scheds["b-edited"] = s
			c := h.scheds["c-paused"]
			c.State = "PAUSED"
			h.scheds["c-paused"] = c
		case "d3":
			t.Error("a schedule paused meanwhile ran")
		}
	}
	m := NewManager(h, t.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	m.RunSchedules(context.Background(), time.Now())
	if s, ok := h.schedule("a-removed"); ok {
		t.Errorf("a schedule removed during its run came back: %+v", s)
	}
	if s, _ := h.schedule("b-edited"); s.Every != "2h" || s.State != "ACTIVE" || s.LastRun == nil || s.LastResult == "" {
		t.Errorf("the schedule edited during its run: %+v", s)
	}
	if s, _ := h.schedule("c-paused"); s.State != "PAUSED" || s.LastRun != nil {
		t.Errorf("the schedule paused during another's run: %+v", s)
	}
}
