package procsec

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

func disableCoreDumps() error {
	if err := unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{Cur: 0, Max: 0}); err != nil {
		return fmt.Errorf("set RLIMIT_CORE to 0: %w", err)
	}
	// Not dumpable: no core file even if a limit is raised again, and no
	// ptrace attach or /proc/<pid>/mem read by other processes of the same
	// user.
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_DUMPABLE, 0): %w", err)
	}
	return nil
}

func lockMemory() error {
	// MCL_ONFAULT locks pages as they are touched instead of populating
	// every reserved mapping at once (Go reserves large arenas).
	err := unix.Mlockall(unix.MCL_CURRENT | unix.MCL_FUTURE | unix.MCL_ONFAULT)
	if errors.Is(err, unix.EINVAL) { // a kernel older than 4.4
		err = unix.Mlockall(unix.MCL_CURRENT | unix.MCL_FUTURE)
	}
	if err == nil {
		return nil
	}
	var lim unix.Rlimit
	limit := "unknown"
	if unix.Getrlimit(unix.RLIMIT_MEMLOCK, &lim) == nil {
		limit = formatLimit(lim.Cur)
	}
	return fmt.Errorf("%w: mlockall: %v (RLIMIT_MEMLOCK is %s): raise the limit (systemd: LimitMEMLOCK=infinity; shell: ulimit -l unlimited) or grant CAP_IPC_LOCK, or set memory.lock: false to run without it (memory may then be swapped to disk)", ErrMemLock, err, limit)
}

func current() (State, error) {
	d, err := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0)
	if err != nil {
		return State{}, fmt.Errorf("prctl(PR_GET_DUMPABLE): %w", err)
	}
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_CORE, &lim); err != nil {
		return State{}, fmt.Errorf("getrlimit(RLIMIT_CORE): %w", err)
	}
	return State{Dumpable: d != 0, CoreLimit: lim.Cur}, nil
}

func formatLimit(v uint64) string {
	if v == unix.RLIM_INFINITY {
		return "unlimited"
	}
	return fmt.Sprintf("%d bytes", v)
}
