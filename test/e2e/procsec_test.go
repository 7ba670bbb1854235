package e2e

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestServerProcessProtections: a started server cannot dump core (RLIMIT_CORE
// 0, not dumpable) and has its memory locked (memory.lock defaults to on),
// whatever limits it inherited.
func TestServerProcessProtections(t *testing.T) {
	n := initialisedNode(t, t.TempDir()+"/data", "")
	pid := n.cmd.Process.Pid
	limits, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		t.Fatal(err)
	}
	core := regexp.MustCompile(`(?m)^Max core file size\s+(\S+)\s+(\S+)`).FindStringSubmatch(string(limits))
	if core == nil || core[1] != "0" || core[2] != "0" {
		t.Fatalf("core size limit of the server: %v\n%s", core, limits)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^VmLck:\s+(\d+) kB`).FindStringSubmatch(string(status))
	if m == nil {
		t.Fatalf("no VmLck in /proc/%d/status:\n%s", pid, status)
	}
	if kb, _ := strconv.Atoi(m[1]); kb == 0 {
		t.Fatalf("server memory is not locked (VmLck 0 kB)")
	}
	// Dumpability is not in /proc for a process of the same user; the server
	// reads it back from the kernel (PR_GET_DUMPABLE) and logs it.
	if !strings.Contains(n.logs.String(), `"msg":"process protections","dumpable":false,"core_limit":0,"memory_locked":true`) {
		t.Fatalf("no process protections line saying not dumpable, core 0, memory locked:\n%s", n.logs)
	}
}
