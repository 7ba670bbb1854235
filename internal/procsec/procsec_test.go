package procsec

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// The protections change the whole process, so each case runs in a child
// process of the test binary.
func TestMain(m *testing.M) {
	switch os.Getenv("PROCSEC_CHILD") {
	case "":
		os.Exit(m.Run())
	case "harden":
		st, err := Apply(Options{})
		report(st, err)
	case "allow":
		st, err := Apply(Options{AllowCoreDumps: true})
		report(st, err)
	case "lock-low-limit":
		// A limit of one page cannot hold the process.
		if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &unix.Rlimit{Cur: 4096, Max: 4096}); err != nil {
			os.Stdout.WriteString("setrlimit: " + err.Error())
			os.Exit(3)
		}
		// Root's CAP_IPC_LOCK ignores the limit: become nobody, which
		// clears the effective capabilities.
		if os.Geteuid() == 0 {
			if err := syscall.Setuid(65534); err != nil {
				os.Stdout.WriteString("setuid: " + err.Error())
				os.Exit(3)
			}
		}
		st, err := Apply(Options{LockMemory: true})
		report(st, err)
	case "lock":
		st, err := Apply(Options{LockMemory: true})
		report(st, err)
	}
	os.Exit(0)
}

func report(st State, err error) {
	if err != nil {
		os.Stdout.WriteString("error: " + err.Error() + "\n")
	}
	status, _ := os.ReadFile("/proc/self/status")
	var vmlck string
	for _, l := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(l, "VmLck:") {
			vmlck = strings.Join(strings.Fields(l)[1:], " ")
		}
	}
	os.Stdout.WriteString("dumpable=" + yes(st.Dumpable) + " core=" + itoa(st.CoreLimit) + " locked=" + yes(st.MemoryLocked) + " vmlck=" + vmlck + "\n")
}

func yes(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func itoa(v uint64) string {
	if v == unix.RLIM_INFINITY {
		return "unlimited"
	}
	return strconv.FormatUint(v, 10)
}

func child(t *testing.T, mode string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "PROCSEC_CHILD="+mode)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child %s: %v\n%s", mode, err, out)
	}
	return string(out)
}

func TestHardenDisablesCoreDumps(t *testing.T) {
	// Start the child with core dumps allowed, as a shell with ulimit -c
	// unlimited would.
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_CORE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Max > 0 {
		old := lim
		lim.Cur = lim.Max
		if err := unix.Setrlimit(unix.RLIMIT_CORE, &lim); err == nil {
			t.Cleanup(func() { unix.Setrlimit(unix.RLIMIT_CORE, &old) })
		}
	}
	out := child(t, "harden")
	if !strings.Contains(out, "dumpable=no core=0 ") || strings.Contains(out, "error:") {
		t.Fatalf("after Apply: %s", out)
	}
	if out := child(t, "allow"); !strings.Contains(out, "dumpable=yes") {
		t.Fatalf("with AllowCoreDumps: %s", out)
	}
}

func TestLockMemory(t *testing.T) {
	if os.Geteuid() != 0 {
		var lim unix.Rlimit
		if unix.Getrlimit(unix.RLIMIT_MEMLOCK, &lim) != nil || lim.Cur != unix.RLIM_INFINITY {
			t.Skip("locking all memory needs root or an unlimited RLIMIT_MEMLOCK; the low-limit case below still runs")
		}
	}
	out := child(t, "lock")
	if strings.Contains(out, "error:") || !strings.Contains(out, "locked=yes") {
		t.Fatalf("lock: %s", out)
	}
}

func TestLockMemoryLowLimitNamesTheLimit(t *testing.T) {
	out := child(t, "lock-low-limit")
	if !strings.Contains(out, "error: cannot lock memory") || !strings.Contains(out, "LimitMEMLOCK") || !strings.Contains(out, "memory.lock: false") {
		t.Fatalf("want an error naming LimitMEMLOCK and the switch, got: %s", out)
	}
	if !strings.Contains(out, "locked=no") {
		t.Fatalf("reported locked after a failure: %s", out)
	}
}
