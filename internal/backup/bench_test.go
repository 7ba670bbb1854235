package backup

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/coffer-kms/coffer/internal/backup/bundle"
	"github.com/coffer-kms/coffer/internal/backup/dest"
	"github.com/coffer-kms/coffer/internal/state"
	"github.com/coffer-kms/coffer/internal/testutil"
)

// benchSource is a Source over a real state database (no journal, no CA).
type benchSource struct {
	st  *state.Store
	dir string
}

func (b benchSource) ClusterID() string        { return "cl-bench" }
func (b benchSource) NodeID() string           { return "node-bench" }
func (b benchSource) Software() string         { return "bench" }
func (b benchSource) Timeline() state.Timeline { return state.Timeline{ID: 1} }
func (b benchSource) WriteState(open func(state.BackupPoint, int64) (io.Writer, error)) (state.BackupPoint, error) {
	return b.st.WriteBackup(open)
}
func (b benchSource) ExportKeys() ([]byte, error)    { return make([]byte, 100), nil }
func (b benchSource) CAFiles() (string, string)      { return "", "" }
func (b benchSource) RotateJournal() (uint64, error) { return 0, nil }
func (b benchSource) JournalDir() string             { return filepath.Join(b.dir, "journal") }

// buildState fills a state with n AES-256 key objects (sealed material of
// the size the barrier produces), in batches as raft would apply them.
func buildState(tb testing.TB, path string, n int) *state.Store {
	st, err := state.Open(path, state.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	cmd := func(idx uint64, t state.Type, body any) *raft.Log {
		c, err := state.NewCommand(t, time.Unix(1700000000, 0), body)
		if err != nil {
			tb.Fatal(err)
		}
		return &raft.Log{Index: idx, Term: 1, Type: raft.LogCommand, Data: c.Marshal()}
	}
	st.ApplyBatch([]*raft.Log{cmd(1, state.TypeWalletCreate, state.Wallet{Name: "w"})})
	material := make([]byte, 32+29) // ciphertext + tag + header, as the barrier seals a 32-byte key
	// Sealed material does not compress: random bytes, the same in every
	// run (a fixed seed), so that runs compare.
	rnd := rand.NewChaCha8([32]byte{'c', 'o', 'f', 'f', 'e', 'r'})
	idx := uint64(2)
	for i := 0; i < n; {
		var batch []*raft.Log
		for j := 0; j < 5000 && i < n; j, i = j+1, i+1 {
			rnd.Read(material) // #nosec G104 -- ChaCha8.Read never fails
			batch = append(batch, cmd(idx, state.TypeObjectCreate, state.ObjectCreate{Object: state.Object{
				ID: fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i), Wallet: "w", Name: fmt.Sprintf("db/tde/key-%07d", i),
				Type: state.TypeSymmetricKey, Algorithm: "AES", Length: 256, State: "active", CreatedBy: "user:bench"},
				Material: append([]byte(nil), material...)}))
			idx++
		}
		for _, r := range st.ApplyBatch(batch) {
			if e, ok := r.(error); ok {
				tb.Fatal(e)
			}
		}
	}
	return st
}

// BenchmarkFullBackup takes a full backup of a state holding
// COFFER_BENCH_OBJECTS objects (default 20,000; scripts/bench.sh uses
// 1,000,000) to a dir destination, and beside it runs `tar | zstd | age` on
// the same data dir in the same run. It reports MB/s of both, the ratio,
// and the peak memory of each.
func BenchmarkFullBackup(b *testing.B) {
	n := 20000
	if v, err := strconv.Atoi(os.Getenv("COFFER_BENCH_OBJECTS")); err == nil && v > 0 {
		n = v
	}
	dir := b.TempDir()
	data := filepath.Join(dir, "data")
	os.MkdirAll(data, 0o700)
	st := buildState(b, filepath.Join(data, "state.db"), n)
	defer st.Close()
	fi, _ := os.Stat(filepath.Join(data, "state.db"))
	src := benchSource{st: st, dir: data}
	_, rcpt, _ := bundle.GenerateIdentity()
	d, err := dest.NewDir(filepath.Join(dir, "dest"))
	if err != nil {
		b.Fatal(err)
	}
	var peak atomic.Uint64
	stop := make(chan struct{})
	go func() { // sample the heap while the backup runs
		var ms runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
				runtime.ReadMemStats(&ms)
				if ms.HeapInuse > peak.Load() {
					peak.Store(ms.HeapInuse)
				}
			}
		}
	}()
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	b.ResetTimer()
	cpu0 := selfCPU()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if _, err := Run(context.Background(), src, d, KindFull, Options{ID: fmt.Sprintf("bench-%d", i),
			Encryption: bundle.Encryption{Recipients: []string{rcpt}}, StagingDir: filepath.Join(dir, "staging")}); err != nil {
			b.Fatal(err)
		}
	}
	coffer := time.Since(start) / time.Duration(b.N)
	cofferCPU := (selfCPU() - cpu0) / time.Duration(b.N)
	b.StopTimer()
	close(stop)
	mb := float64(fi.Size()) / 1e6
	b.ReportMetric(float64(n), "objects")
	b.ReportMetric(mb, "state-MB")
	b.ReportMetric(mb/coffer.Seconds(), "coffer-MB/s")
	b.ReportMetric(cofferCPU.Seconds(), "coffer-cpu-s")
	if files, err := filepath.Glob(filepath.Join(dir, "dest", "backups", "bench-0-*")); err == nil && len(files) == 1 {
		if fi, err := os.Stat(files[0]); err == nil {
			b.ReportMetric(float64(fi.Size())/1e6, "coffer-file-MB")
		}
	}
	b.ReportMetric(float64(peak.Load()-min(peak.Load(), base.HeapInuse))/1e6, "coffer-peak-heap-MB")

	// The peer: tar | zstd | age of the same data dir, same machine, same run.
	age, err := exec.LookPath("age")
	if err != nil {
		if testutil.CI() {
			b.Fatal("age not installed: apt-get install age (scripts/bench.sh does)")
		}
		b.Log("age not installed: no peer comparison (apt-get install age)")
		return
	}
	out := filepath.Join(dir, "peer.tar.zst.age")
	start = time.Now()
	cmd := exec.Command("sh", "-c", fmt.Sprintf("tar -C %s -cf - . | zstd -q -3 -T1 | %s -r %s > %s", data, age, rcpt, out))
	if o, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("peer: %v: %s", err, o)
	}
	peer := time.Since(start)
	b.ReportMetric(mb/peer.Seconds(), "peer-MB/s")
	b.ReportMetric(peer.Seconds()/coffer.Seconds(), "coffer/peer-speed")
	// The shell waits for the whole pipeline: its children's CPU time is
	// the peer's.
	b.ReportMetric((cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds(), "peer-cpu-s")
	if fi, err := os.Stat(out); err == nil {
		b.ReportMetric(float64(fi.Size())/1e6, "peer-file-MB")
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		var children syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_CHILDREN, &children)
		b.ReportMetric(float64(max(ru.Maxrss, children.Maxrss))/1e3, "peer-peak-rss-MB")
	}
}

// selfCPU is the CPU time (user + system) this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
