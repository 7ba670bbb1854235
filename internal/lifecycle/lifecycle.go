// Package lifecycle is the state machine of a security object, after KMIP's
// object states: pre-active, active, deactivated, compromised, destroyed.
// Both the service (to refuse early with a clear message) and the state
// machine (authoritative, at apply time) use it.
package lifecycle

import (
	"errors"
	"fmt"
)

// State of an object.
type State string

// The states. Values are stored: never rename.
const (
	PreActive   State = "pre-active"
	Active      State = "active"
	Deactivated State = "deactivated"
	Compromised State = "compromised"
	Destroyed   State = "destroyed"
)

// All states, in lifecycle order.
var All = []State{PreActive, Active, Deactivated, Compromised, Destroyed}

// ErrIllegal is returned for a transition the lifecycle does not allow.
var ErrIllegal = errors.New("illegal lifecycle transition")

// legal lists every allowed transition. Destroying needs the object to be
// out of use first (deactivated or compromised); destroyed is final.
var legal = map[State][]State{
	PreActive:   {Active, Deactivated, Compromised},
	Active:      {Deactivated, Compromised},
	Deactivated: {Compromised, Destroyed},
	Compromised: {Destroyed},
	Destroyed:   nil,
}

// Valid reports whether s is a known state.
func Valid(s State) bool {
	_, ok := legal[s]
	return ok
}

// Allowed reports whether from → to is a legal transition.
func Allowed(from, to State) bool {
	for _, t := range legal[from] {
		if t == to {
			return true
		}
	}
	return false
}

// Next lists the states reachable from s.
func Next(s State) []State { return append([]State(nil), legal[s]...) }

// Check returns nil for a legal transition and otherwise an error wrapping
// ErrIllegal that says what is allowed instead.
func Check(from, to State) error {
	if !Valid(from) {
		return fmt.Errorf("%w: unknown current state %q", ErrIllegal, from)
	}
	if !Valid(to) {
		return fmt.Errorf("%w: unknown target state %q", ErrIllegal, to)
	}
	if Allowed(from, to) {
		return nil
	}
	switch {
	case from == to:
		return fmt.Errorf("%w: object is already %s", ErrIllegal, from)
	case from == Destroyed:
		return fmt.Errorf("%w: object is destroyed; nothing can change it", ErrIllegal)
	case to == Destroyed:
		return fmt.Errorf("%w: cannot destroy an object that is %s: deactivate it (or revoke it as compromised) first", ErrIllegal, from)
	}
	next := legal[from]
	return fmt.Errorf("%w: %s -> %s is not allowed; from %s the object can become %v", ErrIllegal, from, to, from, next)
}

// Usable reports whether material of an object in state s may be returned
// to a client. Pre-active material is readable (KMIP allows Get), so a client
// can create, fetch and activate; destroyed material no longer exists.
func Usable(s State) bool { return s != Destroyed }

// CanProtect reports whether an object in state s may be used to protect new
// data (encrypt, sign, wrap): only when active.
func CanProtect(s State) bool { return s == Active }
