// Package procsec applies process-level protections for a server that holds
// keys in memory: no core dumps (a core file or a debugger attach would copy
// every key, token and passphrase in the heap) and, optionally, memory locked
// so that nothing is written to swap.
//
// What Go cannot promise: the garbage collector moves and copies values, so
// a secret may leave copies in freed heap memory that are only overwritten
// when the memory is reused. Zeroing a byte slice after use (as the keystore
// and barrier do) shortens that window but does not close it. These
// protections keep such remnants off disk (core files, swap); they do not
// protect against an attacker with root on the running machine.
package procsec

import (
	"errors"
	"fmt"
)

// Options says what to apply.
type Options struct {
	// AllowCoreDumps keeps the process dumpable with its inherited core
	// size limit (for debugging only: a core file holds every key in memory).
	AllowCoreDumps bool
	// LockMemory locks all current and future memory (mlockall) so that no
	// page is written to swap. Needs CAP_IPC_LOCK or a high enough
	// RLIMIT_MEMLOCK (systemd: LimitMEMLOCK=infinity).
	LockMemory bool
}

// State is what the kernel reports after Apply.
type State struct {
	Dumpable     bool   // PR_GET_DUMPABLE
	CoreLimit    uint64 // RLIMIT_CORE soft limit in bytes
	MemoryLocked bool   // mlockall succeeded
}

// ErrMemLock: locking memory failed (the limit is too low or the privilege
// is missing).
var ErrMemLock = errors.New("cannot lock memory")

// Apply applies opts to the current process and returns the resulting state
// read back from the kernel.
func Apply(opts Options) (State, error) {
	if !opts.AllowCoreDumps {
		if err := disableCoreDumps(); err != nil {
			return State{}, fmt.Errorf("disable core dumps: %w", err)
		}
	}
	locked := false
	if opts.LockMemory {
		if err := lockMemory(); err != nil {
			return State{}, err
		}
		locked = true
	}
	st, err := current()
	st.MemoryLocked = locked
	return st, err
}
