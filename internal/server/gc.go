package server

import (
	"log/slog"
	"math"
	"runtime/debug"

	"github.com/coffer-kms/coffer/internal/config"
)

// gcSettings is what the garbage collector runs with, and where each value
// came from: the configuration, or the environment the runtime read.
type gcSettings struct {
	Percent     int // -1: collection off (GOGC=off)
	PercentFrom string
	Limit       int64 // math.MaxInt64: no soft limit
	LimitFrom   string
}

// ApplyGC sets the collector's target (memory.gc_percent) and soft memory
// limit (memory.gc_soft_limit_bytes) unless GOGC or GOMEMLIMIT is set in
// the environment: the runtime has then applied it already, and it wins,
// so an operator can always go back to Go's defaults (GOGC=100). The
// server applies it at start, coffer restore before a restore.
func ApplyGC(cfg config.Config, lookupEnv func(string) (string, bool)) gcSettings {
	var g gcSettings
	if v, ok := lookupEnv("GOGC"); ok && v != "" {
		g.Percent = debug.SetGCPercent(100)
		debug.SetGCPercent(g.Percent)
		g.PercentFrom = "GOGC"
	} else {
		debug.SetGCPercent(cfg.Memory.GCPercent)
		g.Percent, g.PercentFrom = cfg.Memory.GCPercent, "memory.gc_percent"
	}
	if v, ok := lookupEnv("GOMEMLIMIT"); ok && v != "" {
		g.LimitFrom = "GOMEMLIMIT"
	} else {
		g.LimitFrom = "memory.gc_soft_limit_bytes"
		if cfg.Memory.GCSoftLimitBytes > 0 {
			debug.SetMemoryLimit(cfg.Memory.GCSoftLimitBytes)
		} else {
			debug.SetMemoryLimit(math.MaxInt64)
		}
	}
	g.Limit = debug.SetMemoryLimit(-1) // a negative limit reads it
	return g
}

// logGC logs the collector's settings at start (soft_limit_bytes 0: none).
func logGC(log *slog.Logger, g gcSettings) {
	limit := g.Limit
	if limit == math.MaxInt64 {
		limit = 0
	}
	log.Info("garbage collector", "gc_percent", g.Percent, "gc_percent_from", g.PercentFrom,
		"soft_limit_bytes", limit, "soft_limit_from", g.LimitFrom)
}
