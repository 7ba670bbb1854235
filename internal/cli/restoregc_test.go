package cli

import (
	"runtime/debug"
	"testing"

	"github.com/coffer-kms/coffer/internal/config"
)

// coffer restore runs with the server's collector target unless GOGC says
// otherwise.
func TestRestoreGC(t *testing.T) {
	old := debug.SetGCPercent(100)
	defer debug.SetGCPercent(old)

	t.Setenv("GOGC", "")
	restoreGC(config.DefaultGCPercent)
	if got := debug.SetGCPercent(100); got != config.DefaultGCPercent {
		t.Errorf("GC percent %d, want memory.gc_percent's default %d", got, config.DefaultGCPercent)
	}
	restoreGC(150) // a --config file's memory.gc_percent
	if got := debug.SetGCPercent(100); got != 150 {
		t.Errorf("GC percent %d, want the configured 150", got)
	}

	t.Setenv("GOGC", "100")
	restoreGC(config.DefaultGCPercent)
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("GC percent %d with GOGC=100 set, want 100", got)
	}
}
