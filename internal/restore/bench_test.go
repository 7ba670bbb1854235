package restore_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/coffer-kms/coffer/internal/backup"
	"github.com/coffer-kms/coffer/internal/backup/bundle"
	"github.com/coffer-kms/coffer/internal/backup/dest"
	"github.com/coffer-kms/coffer/internal/barrier"
	"github.com/coffer-kms/coffer/internal/config"
	"github.com/coffer-kms/coffer/internal/journal"
	"github.com/coffer-kms/coffer/internal/keystore"
	"github.com/coffer-kms/coffer/internal/restore"
	"github.com/coffer-kms/coffer/internal/state"
)

// benchSrc is a backup.Source over a state built in the benchmark.
type benchSrc struct {
	st   *state.Store
	keys []byte
	dir  string
}

func (b benchSrc) ClusterID() string        { return "cl-bench" }
func (b benchSrc) NodeID() string           { return "node-bench" }
func (b benchSrc) Software() string         { return "bench" }
func (b benchSrc) Timeline() state.Timeline { return state.Timeline{ID: 1} }
func (b benchSrc) WriteState(open func(state.BackupPoint, int64) (io.Writer, error)) (state.BackupPoint, error) {
	return b.st.WriteBackup(open)
}
func (b benchSrc) ExportKeys() ([]byte, error)    { return append([]byte(nil), b.keys...), nil }
func (b benchSrc) CAFiles() (string, string)      { return "", "" }
func (b benchSrc) RotateJournal() (uint64, error) { return 0, nil }
func (b benchSrc) JournalDir() string             { return filepath.Join(b.dir, "journal") }

// benchHistory is a state with a cluster id and a data key, plus n object
// creations as encrypted journal records in closed segments of dir/journal
// (split after the first `inFull` of them, which the state already holds).
func benchHistory(tb testing.TB, dir string, inFull, n int) (benchSrc, []journal.SegmentInfo) {
	ks := keystore.New(filepath.Join(dir, "ks"), keystore.Options{KDF: cheapKDF})
	ring, err := ks.Init([]byte("bench-passphrase"))
	if err != nil {
		tb.Fatal(err)
	}
	keys, _ := ring.ExportMEKs()
	wk, err := barrier.NewKey(ring, 1, time.Unix(1700000000, 0))
	if err != nil {
		tb.Fatal(err)
	}
	st, err := state.Open(filepath.Join(dir, "state.db"), state.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	bar := barrier.New()
	jr, err := journal.Open(journal.Options{Dir: filepath.Join(dir, "journal"), Name: "bench", MaxSegmentBytes: 64 << 20})
	if err != nil {
		tb.Fatal(err)
	}
	at := time.Unix(1700000000, 0)
	log := func(idx uint64, t state.Type, body any) (*raft.Log, journal.Record) {
		c, err := state.NewCommand(t, at, body)
		if err != nil {
			tb.Fatal(err)
		}
		data := c.Marshal()
		r := journal.Record{Index: idx, Time: at, Type: uint16(t), Payload: data}
		if !t.ClearPayload() {
			r.KeyID = 1
		}
		return &raft.Log{Index: idx, Term: 1, Type: raft.LogCommand, Data: data}, r
	}
	apply := func(logs []*raft.Log, recs []journal.Record, toState bool) {
		if toState {
			for _, res := range st.ApplyBatch(logs) {
				if e, ok := res.(error); ok {
					tb.Fatal(e)
				}
			}
		}
		if bar.Sealed() {
			dks, cur, _ := st.DEKs()
			if err := bar.Unseal(ring, dks, cur); err != nil {
				tb.Fatal(err)
			}
		}
		if err := jr.Append(recs, bar); err != nil {
			tb.Fatal(err)
		}
	}
	l1, r1 := log(1, state.TypeClusterInit, state.ClusterInit{ClusterID: "cl-bench", Key: wk})
	l2, r2 := log(2, state.TypeWalletCreate, state.Wallet{Name: "w"})
	apply([]*raft.Log{l1, l2}, []journal.Record{r1, r2}, true)
	idx := uint64(3)
	for i := 0; i < n; {
		var logs []*raft.Log
		var recs []journal.Record
		for j := 0; j < 2000 && i < n; j, i = j+1, i+1 {
			id := fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i)
			sealed, err := bar.EncryptValue(id, 1, []byte(fmt.Sprintf("%032d", i)))
			if err != nil {
				tb.Fatal(err)
			}
			l, r := log(idx, state.TypeObjectCreate, state.ObjectCreate{Object: state.Object{ID: id, Wallet: "w",
				Name: fmt.Sprintf("db/tde/key-%07d", i), Type: state.TypeSymmetricKey, Algorithm: "AES", Length: 256,
				State: "active", CreatedBy: "user:bench"}, Material: sealed})
			logs, recs = append(logs, l), append(recs, r)
			idx++
		}
		apply(logs, recs, i <= inFull)
	}
	if _, err := jr.Rotate(); err != nil {
		tb.Fatal(err)
	}
	segs := jr.Segments()
	jr.Close()
	return benchSrc{st: st, keys: keys, dir: dir}, segs
}

func benchObjects(def int) int {
	if v, err := strconv.Atoi(os.Getenv("COFFER_BENCH_OBJECTS")); err == nil && v > 0 {
		return v
	}
	return def
}

// BenchmarkRestore measures the restore of a full backup holding
// COFFER_BENCH_OBJECTS objects (default 20,000; scripts/bench.sh uses
// 1,000,000), end to end: read and decrypt the bundle, load the state,
// write the new keystore, journal and raft directory.
func BenchmarkRestore(b *testing.B) {
	n := benchObjects(20000)
	dir := b.TempDir()
	src, _ := benchHistory(b, filepath.Join(dir, "node"), n, n)
	d, _ := dest.NewDir(filepath.Join(dir, "dest"))
	enc := bundle.Encryption{Passphrase: []byte("bench-recovery"), ScryptWorkFactor: 10}
	if _, err := backup.Run(context.Background(), src, d, backup.KindFull, backup.Options{ID: "full-bench", Encryption: enc, StagingDir: filepath.Join(dir, "staging")}); err != nil {
		b.Fatal(err)
	}
	src.st.Close()
	commandGC(b)
	b.ResetTimer()
	var elapsed time.Duration
	for i := 0; i < b.N; i++ {
		start := time.Now()
		sum, err := restore.Run(context.Background(), restore.Options{From: d, Keys: []bundle.Decryption{{Passphrase: enc.Passphrase}},
			DataDir: filepath.Join(dir, fmt.Sprint("r", i)), Passphrase: []byte("restored-passphrase"), KDF: cheapKDF})
		elapsed += time.Since(start)
		if err != nil || sum.Objects != n {
			b.Fatalf("%+v %v", sum, err)
		}
	}
	b.ReportMetric(float64(n), "objects")
	b.ReportMetric(elapsed.Seconds()/float64(b.N), "restore-s")
	b.ReportMetric(float64(n)*float64(b.N)/elapsed.Seconds(), "objects/s")
}

// BenchmarkReplay measures journal replay: a full backup with no objects,
// then COFFER_BENCH_RECORDS (default 50,000) object creations in archived
// segments, each record decrypted and applied as raft would. It reports
// records per second over the whole restore, and the CPU time the process
// spent on it (cpu-s: on a shared machine, where the wall time depends on
// the other load, records per CPU second compare better).
func BenchmarkReplay(b *testing.B) {
	n := 50000
	if v, err := strconv.Atoi(os.Getenv("COFFER_BENCH_RECORDS")); err == nil && v > 0 {
		n = v
	}
	dir := b.TempDir()
	src, segs := benchHistory(b, filepath.Join(dir, "node"), 0, n)
	d, _ := dest.NewDir(filepath.Join(dir, "dest"))
	enc := bundle.Encryption{Passphrase: []byte("bench-recovery"), ScryptWorkFactor: 10}
	ctx := context.Background()
	if _, err := backup.Run(ctx, src, d, backup.KindFull, backup.Options{ID: "full-bench", Encryption: enc, StagingDir: filepath.Join(dir, "staging")}); err != nil {
		b.Fatal(err)
	}
	for _, s := range segs {
		if !s.Closed || s.Records == 0 {
			continue
		}
		seg := s
		if _, err := backup.Run(ctx, src, d, backup.KindSegment, backup.Options{ID: "seg", Encryption: enc, StagingDir: filepath.Join(dir, "staging"), Segment: &seg}); err != nil {
			b.Fatal(err)
		}
	}
	src.st.Close()
	commandGC(b)
	b.ResetTimer()
	var elapsed, cpu time.Duration
	for i := 0; i < b.N; i++ {
		start, cpu0 := time.Now(), processCPU()
		sum, err := restore.Run(ctx, restore.Options{From: d, Keys: []bundle.Decryption{{Passphrase: enc.Passphrase}},
			DataDir: filepath.Join(dir, fmt.Sprint("r", i)), Passphrase: []byte("restored-passphrase"), KDF: cheapKDF})
		elapsed += time.Since(start)
		cpu += processCPU() - cpu0
		if err != nil || sum.Records != n || sum.Objects != n {
			b.Fatalf("%+v %v", sum, err)
		}
	}
	b.ReportMetric(float64(n)*float64(b.N)/elapsed.Seconds(), "records/s")
	b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s")
}

// commandGC gives the timed restores the collector's target `coffer
// restore` runs with (memory.gc_percent's default) unless GOGC is set, in
// which case both use it.
func commandGC(b *testing.B) {
	if v, ok := os.LookupEnv("GOGC"); ok && v != "" {
		return
	}
	old := debug.SetGCPercent(config.DefaultGCPercent)
	b.Cleanup(func() { debug.SetGCPercent(old) })
}

// processCPU is the user and system CPU time the process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
