package cli

import (
	"math"
	"runtime/debug"
	"testing"

	"github.com/coffer-kms/coffer/internal/config"
)

// coffer restore runs with the server's collector target and soft limit
// unless GOGC and GOMEMLIMIT say otherwise.
func TestRestoreGC(t *testing.T) {
	old, oldLimit := debug.SetGCPercent(100), debug.SetMemoryLimit(-1)
	defer debug.SetGCPercent(old)
	defer debug.SetMemoryLimit(oldLimit)
	debug.SetMemoryLimit(math.MaxInt64)

	t.Setenv("GOGC", "")
	restoreGC(config.DefaultGCPercent, 0)
	if got := debug.SetGCPercent(100); got != config.DefaultGCPercent {
		t.Errorf("GC percent %d, want memory.gc_percent's default %d", got, config.DefaultGCPercent)
	}
	restoreGC(150, 0) // a --config file's memory.gc_percent
	if got := debug.SetGCPercent(100); got != 150 {
		t.Errorf("GC percent %d, want the configured 150", got)
	}

	t.Setenv("GOGC", "100")
	restoreGC(config.DefaultGCPercent, 0)
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("GC percent %d with GOGC=100 set, want 100", got)
	}

	t.Setenv("GOMEMLIMIT", "")
	restoreGC(config.DefaultGCPercent, 1<<30) // memory.gc_soft_limit_bytes
	if got := debug.SetMemoryLimit(-1); got != 1<<30 {
		t.Errorf("soft limit %d, want the configured %d", got, 1<<30)
	}
	debug.SetMemoryLimit(math.MaxInt64)
	t.Setenv("GOMEMLIMIT", "4GiB")
	restoreGC(config.DefaultGCPercent, 1<<30)
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Errorf("soft limit %d with GOMEMLIMIT set, want it left alone", got)
	}
}
