package service

import (
	"context"
	"fmt"
	"time"
)

// A follower that was down (or just joined) serves stale data until raft
// has brought it up to date. It learns how far it must go from the
// leader: the leader's commit index, read from the leader's health over
// the node-to-node channel. Until its applied index has reached the commit
// index the leader reported after this node opened, the node is not
// caught up: health and status say so, and the transports send its
// default reads to the leader (RouteRead).

// CaughtUp reports whether this node serves current data: a standalone
// node and the leader always do; a follower once it has, since its
// keystore was opened, applied everything the leader had committed when
// the follower asked.
func (s *Cluster) CaughtUp() bool {
	if !s.Clustered() || s.node.IsLeader() {
		return true
	}
	return s.caughtUp.Load()
}

// CatchUp is how far this node is from the leader, as health shows it.
type CatchUp struct {
	CaughtUp bool `json:"caught_up"`
	// LeaderCommit is the leader's commit index as this node last learnt
	// it (its own on the leader); 0 when not known yet.
	LeaderCommit uint64 `json:"leader_commit_index,omitempty"`
	// RaftApplied is the last raft index this node applied (commands and
	// raft's own entries, or the state's applied index if larger).
	RaftApplied uint64 `json:"raft_applied_index"`
}

// CatchUpStatus reports CaughtUp with the indexes behind it.
func (s *Cluster) CatchUpStatus() CatchUp {
	st := s.node.Status()
	// raft counts from its log again after a restart while the state
	// keeps its applied index: the larger is what this node has applied.
	c := CatchUp{CaughtUp: s.CaughtUp(), RaftApplied: max(st.AppliedIndex, s.st.AppliedIndex()), LeaderCommit: s.leaderCommit.Load()}
	if !s.Clustered() || s.node.IsLeader() {
		c.LeaderCommit = st.CommitIndex
	}
	return c
}

// catchUpLoop runs on a follower from open until it has caught up (or the
// keystore is sealed): it asks the leader for its commit index and waits
// until this node has applied up to it.
func (s *Cluster) catchUpLoop(ctx context.Context) {
	wait := func(d time.Duration) bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(d):
			return true
		}
	}
	for !s.closed.Load() {
		if s.node.IsLeader() {
			s.caughtUp.Store(true)
			return
		}
		url, self, ok := s.LeaderAPI()
		if !ok || self {
			if !wait(250 * time.Millisecond) {
				return
			}
			continue
		}
		hctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		h, err := s.peerHealth(hctx, url)
		cancel()
		if err != nil || h.Role != "leader" || h.LeaderCommit == 0 {
			if err == nil {
				err = fmt.Errorf("%s answers as %q, not as the leader", url, h.Role)
			}
			s.log.Debug("leader commit index not known yet", "error", err)
			if !wait(500 * time.Millisecond) {
				return
			}
			continue
		}
		s.leaderCommit.Store(h.LeaderCommit)
		// Wait for this node to apply up to it; ask again after a while
		// (a leader change, or a leader far ahead).
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
			if s.appliedThrough(h.LeaderCommit) {
				s.caughtUp.Store(true)
				s.log.Info("caught up with the leader: serving reads locally", "leader_commit_index", h.LeaderCommit, "applied_index", s.st.AppliedIndex())
				return
			}
			if !wait(50 * time.Millisecond) {
				return
			}
		}
	}
}

// appliedThrough reports whether the state has applied every entry up to
// idx that the state machine applies (raft's own entries, such as a new
// leader's barrier, never reach the state's applied index).
func (s *Cluster) appliedThrough(idx uint64) bool {
	sa := s.st.AppliedIndex()
	if sa >= idx {
		return true
	}
	if s.node.Status().AppliedIndex < idx {
		return false
	}
	return !s.node.HasFSMEntries(sa+1, idx)
}

// startLoops starts, in an open's worker group w, the loops of a cluster
// member: the key sync, the catch-up with the leader (which starts over:
// not caught up, no leader commit known) and, on a node that joined and
// is not a voter yet, its promotion.
func (s *Cluster) startLoops(w *workers) {
	w.Go("key sync", s.syncKeysLoop)
	s.caughtUp.Store(false)
	s.leaderCommit.Store(0)
	w.Go("catch-up with the leader", s.catchUpLoop)
	w.Go("promotion to voter", s.promoteLoop)
}

// ForwardTo is the leader-forwarding decision for transports that do not
// go through the HTTP forwarding (KMIP): whether a request that arrived
// here must be served by the leader instead, and the leader's API address.
// Writes on a follower go to the leader, and so do reads on a follower
// still catching up. With no leader known (read-only restricted mode)
// nothing goes anywhere: reads are served here and the service refuses
// writes. A read on a follower still catching up whose leader's address is
// not known yet is refused (ErrUnavailable) rather than answered stale.
// With cluster.allow_read_only_restricted_mode false a node without quorum
// refuses everything, reads too (ErrReadOnly), as the HTTP forwarding does.
func (s *Cluster) ForwardTo(write bool) (url string, forward bool, err error) {
	if !s.AllowReadOnly() && s.ReadOnlyRestricted() {
		return "", false, fmt.Errorf("%w is off (cluster.allow_read_only_restricted_mode: false) and this node has no quorum: every request is refused until it returns", ErrReadOnly)
	}
	if !s.Clustered() || s.node.IsLeader() || !write && s.CaughtUp() {
		return "", false, nil
	}
	u, self, ok := s.LeaderAPI()
	switch {
	case self:
		return "", false, nil
	case ok:
		return u, true, nil
	case write || s.Role() == "read-only":
		return "", false, nil
	}
	return "", false, fmt.Errorf("%w: this node has not caught up with the leader since it started and does not know the leader's address yet: its data may be stale, so the read is not served here; retry shortly", ErrUnavailable)
}

// WaitApplied waits until this node has applied everything up to idx (a
// commit index the leader reported for a write it did on this node's
// behalf), so that a client reads its own writes here next; ctx bounds it.
func (s *Cluster) WaitApplied(ctx context.Context, idx uint64) error {
	for !s.appliedThrough(idx) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for index %d to be applied here: %w", idx, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}

// CommitIndex is raft's commit index as this node knows it: on the leader,
// everything it has acknowledged; on a follower, the leader's last report.
func (s *Cluster) CommitIndex() uint64 { return s.CatchUpStatus().LeaderCommit }
