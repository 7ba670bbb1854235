package server

import (
	"math"
	"runtime/debug"
	"testing"

	"github.com/coffer-kms/coffer/internal/config"
)

// TestApplyGC: the configuration sets the collector's target and soft limit;
// GOGC and GOMEMLIMIT in the environment (already applied by the runtime)
// win over it.
func TestApplyGC(t *testing.T) {
	prevPercent, prevLimit := debug.SetGCPercent(100), debug.SetMemoryLimit(-1)
	debug.SetGCPercent(prevPercent)
	t.Cleanup(func() { debug.SetGCPercent(prevPercent); debug.SetMemoryLimit(prevLimit) })
	cfg := config.Default()
	env := map[string]string{}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	readPercent := func() int { p := debug.SetGCPercent(100); debug.SetGCPercent(p); return p }

	g := ApplyGC(cfg, lookup)
	if g.Percent != config.DefaultGCPercent || g.PercentFrom != "memory.gc_percent" || readPercent() != config.DefaultGCPercent {
		t.Fatalf("default: %+v, runtime %d", g, readPercent())
	}
	if g.Limit != math.MaxInt64 || debug.SetMemoryLimit(-1) != math.MaxInt64 {
		t.Fatalf("default soft limit: %+v", g)
	}

	cfg.Memory.GCPercent, cfg.Memory.GCSoftLimitBytes = 150, 1<<30
	g = ApplyGC(cfg, lookup)
	if g.Percent != 150 || readPercent() != 150 || g.Limit != 1<<30 || debug.SetMemoryLimit(-1) != 1<<30 {
		t.Fatalf("configured: %+v", g)
	}

	// The runtime applied GOGC=100 and GOMEMLIMIT at start: they stay.
	debug.SetGCPercent(100)
	debug.SetMemoryLimit(2 << 30)
	env["GOGC"], env["GOMEMLIMIT"] = "100", "2GiB"
	g = ApplyGC(cfg, lookup)
	if g.Percent != 100 || g.PercentFrom != "GOGC" || readPercent() != 100 {
		t.Fatalf("GOGC: %+v, runtime %d", g, readPercent())
	}
	if g.Limit != 2<<30 || g.LimitFrom != "GOMEMLIMIT" || debug.SetMemoryLimit(-1) != 2<<30 {
		t.Fatalf("GOMEMLIMIT: %+v", g)
	}
}
