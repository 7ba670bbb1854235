package service

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/coffer-kms/coffer/internal/cluster"
)

// TestApplyErrorNotAppliedVersusUnknown: a write the cluster refused before
// its log is "not applied" (safe to send again); one proposed whose result
// never came back is "outcome unknown", never the same sentinel.
func TestApplyErrorNotAppliedVersusUnknown(t *testing.T) {
	notApplied := fmt.Errorf("%w: %w: %v", cluster.ErrNotLeader, cluster.ErrNotApplied, raft.ErrNotLeader)
	transfer := fmt.Errorf("%w: %w: %v", cluster.ErrNotLeader, cluster.ErrNotApplied, raft.ErrLeadershipTransferInProgress)
	lost := fmt.Errorf("%w: %w: %v", cluster.ErrNotLeader, cluster.ErrUnconfirmed, raft.ErrLeadershipLost)
	timeout := fmt.Errorf("%w: %v", cluster.ErrTimeout, context.DeadlineExceeded)
	for _, tc := range []struct {
		name        string
		err         error
		callerGone  bool
		clustered   bool
		leaderKnown bool
		want        error
	}{
		{"not leader, leader elsewhere", notApplied, false, true, true, ErrNotLeaderNow},
		{"transfer in progress", transfer, false, true, true, ErrNotLeaderNow},
		{"no leader known", notApplied, false, true, false, ErrReadOnly},
		{"leadership lost while committing", lost, false, true, true, ErrOutcomeUnknown},
		{"leadership lost, no leader known yet", lost, false, true, false, ErrOutcomeUnknown},
		{"leadership lost on a standalone node", lost, false, false, true, ErrOutcomeUnknown},
		{"caller went away", timeout, true, true, true, ErrOutcomeUnknown},
		{"caller went away on a standalone node", timeout, true, false, false, ErrOutcomeUnknown},
		{"raft stopped while the write was in flight", fmt.Errorf("%w: %w: %v", cluster.ErrStopped, cluster.ErrUnconfirmed, raft.ErrRaftShutdown), false, true, true, ErrOutcomeUnknown},
	} {
		got := applyError(tc.err, tc.callerGone, tc.clustered, tc.leaderKnown)
		if !errors.Is(got, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
		unknown := errors.Is(got, ErrOutcomeUnknown)
		notApp := errors.Is(got, ErrNotLeaderNow) || errors.Is(got, ErrReadOnly)
		if unknown == notApp {
			t.Errorf("%s: %v is both or neither of not applied / outcome unknown", tc.name, got)
		}
	}
	// Raft not running at all: refused before anything.
	if got := applyError(cluster.ErrStopped, false, true, true); !errors.Is(got, ErrStopping) || errors.Is(got, ErrOutcomeUnknown) {
		t.Errorf("raft not running: got %v, want %v", got, ErrStopping)
	}
	// Not the cluster's to classify: storage errors and the confirmation
	// timeout are the caller's (it looks at the state machine's health).
	if got := applyError(timeout, false, true, true); got != nil {
		t.Errorf("timeout classified as %v; the caller handles it", got)
	}
}
