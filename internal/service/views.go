package service

import (
	"time"

	"github.com/coffer-kms/coffer/internal/state"
)

// The node's timeline and journal mirror as the service answers them: types
// of the service, converted from what the state stores, so a change to the
// stored records never changes an API by accident.

// Timeline is the node's timeline: 1 unless it was restored.
type Timeline struct {
	ID      uint32           `json:"id"`
	History []TimelineBranch `json:"history,omitempty"`
	// Restored describes the restore that started this timeline.
	Restored *RestoreInfo `json:"restored,omitempty"`
}

// TimelineBranch says that timeline ID's history was used up to index Upto
// (inclusive) before its child branched off.
type TimelineBranch struct {
	ID   uint32 `json:"id"`
	Upto uint64 `json:"upto"`
}

// RestoreInfo describes the restore that started a timeline. Held: the
// restored node writes to no backup destination until an operator releases
// it (Released, with TakeOver when it then claimed every destination).
type RestoreInfo struct {
	From     string     `json:"from"`
	Target   string     `json:"target"`
	Index    uint64     `json:"index"`
	Time     time.Time  `json:"time"`
	At       time.Time  `json:"at"`
	Held     bool       `json:"held,omitempty"`
	Released *time.Time `json:"released,omitempty"`
	TakeOver bool       `json:"take_over,omitempty"`
}

// MirrorState is the attached journal mirror: InSync means writes wait for
// its fsync before they are acknowledged; otherwise it is Behind by that
// many records after LastIndex.
type MirrorState struct {
	Attached  bool   `json:"attached"`
	InSync    bool   `json:"in_sync"`
	LastIndex uint64 `json:"last_index"`
	Behind    uint64 `json:"behind"`
}

func timelineView(tl state.Timeline) Timeline {
	v := Timeline{ID: tl.ID}
	for _, b := range tl.History {
		v.History = append(v.History, TimelineBranch{ID: b.ID, Upto: b.Upto})
	}
	if r := tl.Restored; r != nil {
		v.Restored = &RestoreInfo{From: r.From, Target: r.Target, Index: r.Index, Time: r.Time, At: r.At,
			Held: r.Held, Released: r.Released, TakeOver: r.TakeOver}
	}
	return v
}

func mirrorView(m state.MirrorState) *MirrorState {
	return &MirrorState{Attached: m.Attached, InSync: m.InSync, LastIndex: m.LastIndex, Behind: m.Behind}
}
