package cluster

import "testing"

// TestUnknownMembershipIsNotMembership: a node whose raft is not running
// knows no members, so the API trusts no node certificate as a member; only
// the raft transport of a joining node admits its first contact.
func TestUnknownMembershipIsNotMembership(t *testing.T) {
	n := &Node{}
	if n.IsMember("n1") {
		t.Fatal("IsMember is true with raft stopped")
	}
	if !n.admitsPeer("n1") {
		t.Fatal("a node not yet in raft refuses the leader's first contact")
	}
}
