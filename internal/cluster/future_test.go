package cluster

import (
	"context"
	"errors"
	"testing"

	"github.com/hashicorp/raft"
)

type doneFuture struct{ err error }

func (f doneFuture) Error() error { return f.err }

// TestWaitFutureAppliedOrNot: raft's refusals before the log are
// ErrNotApplied; a lost leadership or a shutdown while the entry was in
// flight is ErrUnconfirmed, never ErrNotApplied.
func TestWaitFutureAppliedOrNot(t *testing.T) {
	for _, tc := range []struct {
		raftErr             error
		notApplied, unknown bool
		also                error
	}{
		{raft.ErrNotLeader, true, false, ErrNotLeader},
		{raft.ErrLeadershipTransferInProgress, true, false, ErrNotLeader},
		{raft.ErrLeadershipLost, false, true, ErrNotLeader},
		{raft.ErrRaftShutdown, false, true, ErrStopped},
	} {
		err := waitFuture(context.Background(), doneFuture{tc.raftErr})
		if errors.Is(err, ErrNotApplied) != tc.notApplied || errors.Is(err, ErrUnconfirmed) != tc.unknown || !errors.Is(err, tc.also) {
			t.Errorf("%v: got %v (not applied %v, unconfirmed %v, want %v/%v and %v)", tc.raftErr, err,
				errors.Is(err, ErrNotApplied), errors.Is(err, ErrUnconfirmed), tc.notApplied, tc.unknown, tc.also)
		}
	}
}
