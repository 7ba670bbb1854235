package service

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A freeze whose requester went away before it was put in place (during
// its dump) does not happen: nobody would get its answer to thaw it.
func TestFreezeWhoseClientWentAwayDoesNotStay(t *testing.T) {
	s, _ := backupSvc(t)
	ctx, cancel := context.WithCancel(rootCtx())
	cancel()
	_, err := s.Backups.Freeze(ctx, time.Hour)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("freeze for a client gone: %v", err)
	}
	if err := s.Backups.frozenErr(); err != nil {
		t.Fatalf("writes frozen for a client gone: %v", err)
	}
	// A freeze whose answer could not be delivered is ended at once.
	st, err := s.Backups.Freeze(rootCtx(), time.Hour)
	if err != nil || !st.Frozen {
		t.Fatalf("freeze: %+v %v", st, err)
	}
	if !s.Backups.CancelFreeze(st, "test") {
		t.Fatal("the freeze was not cancelled")
	}
	if err := s.Backups.frozenErr(); err != nil {
		t.Fatalf("writes still frozen: %v", err)
	}
	if s.Backups.CancelFreeze(st, "test") {
		t.Fatal("a freeze cancelled twice")
	}
}
