package cluster

import (
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// downSet is the peers n has recorded as not answering its heartbeats.
func downSet(n *Node) map[raft.ServerID]bool {
	n.downMu.Lock()
	defer n.downMu.Unlock()
	out := map[raft.ServerID]bool{}
	for id := range n.down {
		out[id] = true
	}
	return out
}

// TestLateHeartbeatFailureOfAnEarlierLeadershipIsIgnored: a heartbeat of
// an earlier leadership of this node that fails only after the node leads
// again (its RPC blocked up to the transport timeout, say across a healed
// partition) is no failure of this leadership's heartbeats: raft's new
// heartbeat to that peer succeeds at once and never reports it resumed, so
// recording it would count a live peer unreachable for the whole term
// (refusing a legitimate removal or switchover, and warning of it). A
// removed peer is forgotten.
func TestLateHeartbeatFailureOfAnEarlierLeadershipIsIgnored(t *testing.T) {
	n := &Node{}
	before := time.Now().Add(-time.Second) // the old heartbeat's last contact
	n.observeHeartbeats(&raft.Observation{Data: raft.LeaderObservation{LeaderID: "self", LeaderAddr: "127.0.0.1:1"}})
	n.observeHeartbeats(&raft.Observation{Data: raft.FailedHeartbeatObservation{PeerID: "b", LastContact: before}})
	if downSet(n)["b"] {
		t.Fatal("a heartbeat failure of an earlier leadership recorded as one of this leadership")
	}
	// A failure of this leadership's heartbeats is recorded.
	n.observeHeartbeats(&raft.Observation{Data: raft.FailedHeartbeatObservation{PeerID: "c", LastContact: time.Now().Add(time.Millisecond)}})
	if !downSet(n)["c"] {
		t.Fatal("a failing heartbeat of this leadership not recorded")
	}
	// A peer taken out of the configuration is forgotten: its heartbeats
	// stop without ever resuming.
	n.observeHeartbeats(&raft.Observation{Data: raft.PeerObservation{Removed: true, Peer: raft.Server{ID: "c"}}})
	if downSet(n)["c"] {
		t.Fatal("a removed peer still recorded unreachable")
	}
}
