package service

import (
	"bytes"
	"log/slog"
	"os"
	"runtime/pprof"
	"strconv"
	"sync"
	"testing"
	"time"
)

// benchObjects is the number of objects BenchmarkRestart writes (one raft
// entry each): COFFER_BENCH_OBJECTS, 1,000,000 by default.
func benchObjects(b *testing.B) int {
	if v := os.Getenv("COFFER_BENCH_OBJECTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			b.Fatalf("COFFER_BENCH_OBJECTS=%q: want a positive number", v)
		}
		return n
	}
	return 1_000_000
}

// BenchmarkRestart measures the restart after a crash, from New to an open
// keystore with a leader (healthy), of a data dir holding N objects whose
// raft log has N entries since the last snapshot: a server killed before it
// ever reached the snapshot threshold. Run it with -benchtime 1x (each
// iteration builds its own data dir); COFFER_BENCH_OBJECTS sets N and
// COFFER_BENCH_CPUPROFILE writes a CPU profile of the restart.
// COFFER_BENCH_DATA_DIR reuses (or, when it holds no keystore, builds into)
// that data dir instead of a temporary one: copy it first, the restart
// changes it; COFFER_BENCH_BUILD_ONLY=1 only builds. COFFER_BENCH_LOG=1 prints the restart's service log.
// COFFER_BENCH_NO_STARTUP_SNAPSHOT=1 restarts with the snapshot threshold out
// of reach, as before the snapshot at startup existed (for comparison).
func BenchmarkRestart(b *testing.B) {
	n := benchObjects(b)
	ctx := rootCtx()
	cfg := func(dir string, snapEvery uint64) Config {
		return testConfig(Config{DataDir: dir, SnapshotEvery: snapEvery})
	}
	var total time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		dir := os.Getenv("COFFER_BENCH_DATA_DIR")
		if dir == "" {
			dir = b.TempDir()
		}
		// Never snapshot while writing: the whole history stays in the log.
		s, err := New(cfg(dir, 1<<40))
		if err != nil {
			b.Fatal(err)
		}
		if s.State() != StateUninitialized {
			b.Logf("reusing %s", dir)
			s.Close()
			restart(b, dir, cfg, &total)
			continue
		}
		if _, err := s.Init(ctx, local, []byte(pass)); err != nil {
			b.Fatal(err)
		}
		val := bytes.Repeat([]byte("k"), 32)
		const writers = 64
		start := time.Now()
		var wg sync.WaitGroup
		for w := 0; w < writers; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				for k := w; k < n; k += writers {
					if _, err := s.Objects.PutSecret(ctx, "default", "o"+strconv.Itoa(k), val); err != nil {
						b.Error(err)
						return
					}
				}
			}(w)
		}
		wg.Wait()
		applied := s.st.AppliedIndex()
		s.crashClose()
		b.Logf("built %d objects (applied index %d, no snapshot) in %v", n, applied, time.Since(start).Round(time.Second))
		if os.Getenv("COFFER_BENCH_BUILD_ONLY") == "1" {
			continue
		}
		restart(b, dir, cfg, &total)
	}
	b.ReportMetric(total.Seconds()/float64(b.N), "restart-s")
	b.ReportMetric(float64(n), "objects")
}

// restart times New + Open of dir, adding it to total.
func restart(b *testing.B, dir string, cfg func(string, uint64) Config, total *time.Duration) {
	ctx := rootCtx()
	if f := os.Getenv("COFFER_BENCH_CPUPROFILE"); f != "" {
		pf, err := os.Create(f)
		if err != nil {
			b.Fatal(err)
		}
		pprof.StartCPUProfile(pf)
	}
	b.StartTimer()
	t0 := time.Now()
	var every uint64
	if os.Getenv("COFFER_BENCH_NO_STARTUP_SNAPSHOT") == "1" {
		every = 1 << 40
	}
	c := cfg(dir, every)
	if os.Getenv("COFFER_BENCH_LOG") == "1" {
		c.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	s, err := New(c)
	if err != nil {
		b.Fatal(err)
	}
	dNew := time.Since(t0)
	if err := s.Open(ctx, []byte(pass)); err != nil {
		b.Fatal(err)
	}
	d := time.Since(t0)
	b.StopTimer()
	if os.Getenv("COFFER_BENCH_CPUPROFILE") != "" {
		pprof.StopCPUProfile()
	}
	*total += d
	snap, _ := s.node.SnapshotIndex()
	b.Logf("restart to healthy: %v (New, which opens state.db and the raft log: %v; then Open; raft snapshot now at %d)",
		d.Round(time.Millisecond), dNew.Round(time.Millisecond), snap)
	s.crashClose()
}

// crashClose closes s leaving the raft log as a kill -9 would: no snapshot
// at stop.
func (s *Service) crashClose() {
	s.noStopSnapshot = true
	s.Close()
}
