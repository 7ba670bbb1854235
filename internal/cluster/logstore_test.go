package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	bolt "go.etcd.io/bbolt"
)

// testLogs are entries of every field raft sets, with distinct values.
func testLogs(from, n uint64, size int) []*raft.Log {
	at := time.Date(2026, 12, 7, 17, 0, 0, 123456789, time.UTC)
	var logs []*raft.Log
	for i := from; i < from+n; i++ {
		logs = append(logs, &raft.Log{
			Index:      i,
			Term:       3 + i/10,
			Type:       raft.LogType(i % 3),
			Data:       bytes.Repeat([]byte{byte(i)}, size),
			Extensions: []byte(fmt.Sprintf("ext%d", i)),
			AppendedAt: at.Add(time.Duration(i) * time.Millisecond),
		})
	}
	return logs
}

func sameLog(t *testing.T, got, want *raft.Log) {
	t.Helper()
	if got.Index != want.Index || got.Term != want.Term || got.Type != want.Type ||
		!bytes.Equal(got.Data, want.Data) || !bytes.Equal(got.Extensions, want.Extensions) || !got.AppendedAt.Equal(want.AppendedAt) {
		t.Fatalf("log %d: got %+v, want %+v", want.Index, got, want)
	}
}

// The log store reads what raft-boltdb v2 wrote and raft-boltdb v2 reads
// what it writes: data dirs stay compatible both ways.
func TestLogStoreFormatIsRaftBoltDB(t *testing.T) {
	opts := func() *bolt.Options {
		return &bolt.Options{Timeout: time.Second, NoFreelistSync: true, FreelistType: bolt.FreelistMapType}
	}
	logs := testLogs(1, 40, 100)

	t.Run("raft-boltdb writes, logStore reads", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "raft.db")
		old, err := raftboltdb.New(raftboltdb.Options{Path: path, BoltOptions: opts()})
		if err != nil {
			t.Fatal(err)
		}
		if err := old.StoreLogs(logs); err != nil {
			t.Fatal(err)
		}
		if err := old.SetUint64([]byte("CurrentTerm"), 7); err != nil {
			t.Fatal(err)
		}
		if err := old.Set([]byte("LastVoteCand"), []byte("node-1")); err != nil {
			t.Fatal(err)
		}
		if err := old.Close(); err != nil {
			t.Fatal(err)
		}
		s, err := openLogStore(path, opts())
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		for _, want := range logs {
			var got raft.Log
			if err := s.GetLog(want.Index, &got); err != nil {
				t.Fatal(err)
			}
			sameLog(t, &got, want)
		}
		if term, err := s.GetUint64([]byte("CurrentTerm")); err != nil || term != 7 {
			t.Fatalf("CurrentTerm = %d, %v; want 7", term, err)
		}
		if v, err := s.Get([]byte("LastVoteCand")); err != nil || string(v) != "node-1" {
			t.Fatalf("LastVoteCand = %q, %v", v, err)
		}
	})

	t.Run("logStore writes, raft-boltdb reads", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "raft.db")
		s, err := openLogStore(path, opts())
		if err != nil {
			t.Fatal(err)
		}
		if err := s.StoreLogs(logs[:25]); err != nil {
			t.Fatal(err)
		}
		for _, l := range logs[25:] {
			if err := s.StoreLog(l); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.SetUint64([]byte("CurrentTerm"), 9); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		old, err := raftboltdb.New(raftboltdb.Options{Path: path, BoltOptions: opts()})
		if err != nil {
			t.Fatal(err)
		}
		defer old.Close()
		for _, want := range logs {
			var got raft.Log
			if err := old.GetLog(want.Index, &got); err != nil {
				t.Fatal(err)
			}
			sameLog(t, &got, want)
		}
		if term, err := old.GetUint64([]byte("CurrentTerm")); err != nil || term != 9 {
			t.Fatalf("CurrentTerm = %d, %v; want 9", term, err)
		}
	})
}

// The same entries are stored as the same bytes under the same keys.
func TestLogStoreBytesAreRaftBoltDBs(t *testing.T) {
	dir := t.TempDir()
	logs := testLogs(1, 20, 50)
	logs[0].AppendedAt = time.Time{} // entries of raft versions before AppendedAt
	logs[1].Data, logs[1].Extensions = nil, nil
	old, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "old.db")})
	if err != nil {
		t.Fatal(err)
	}
	if err := old.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := openLogStore(filepath.Join(dir, "new.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	dump := func(name string) map[string]string {
		db, err := bolt.Open(filepath.Join(dir, name), 0o600, &bolt.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		m := map[string]string{}
		err = db.View(func(tx *bolt.Tx) error {
			return tx.ForEach(func(bucket []byte, b *bolt.Bucket) error {
				return b.ForEach(func(k, v []byte) error {
					m[fmt.Sprintf("%s/%x", bucket, k)] = string(v)
					return nil
				})
			})
		})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	want, got := dump("old.db"), dump("new.db")
	if len(want) != len(logs) || len(got) != len(want) {
		t.Fatalf("%d keys written, raft-boltdb wrote %d of %d entries", len(got), len(want), len(logs))
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("%s: %x, raft-boltdb wrote %x", k, got[k], v)
		}
	}
}

func TestLogStoreIndexesAndRanges(t *testing.T) {
	s, err := openLogStore(filepath.Join(t.TempDir(), "raft.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if first, err := s.FirstIndex(); err != nil || first != 0 {
		t.Fatalf("empty FirstIndex = %d, %v", first, err)
	}
	if last, err := s.LastIndex(); err != nil || last != 0 {
		t.Fatalf("empty LastIndex = %d, %v", last, err)
	}
	var l raft.Log
	if err := s.GetLog(1, &l); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("GetLog on an empty log: %v, want raft.ErrLogNotFound", err)
	}
	// raft tells a missing stable key by this exact text.
	if _, err := s.GetUint64([]byte("CurrentTerm")); err == nil || err.Error() != "not found" {
		t.Fatalf("missing key: %v, want \"not found\"", err)
	}
	if err := s.StoreLogs(testLogs(5, 300, 10)); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRange(5, 104); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRange(250, 400); err != nil {
		t.Fatal(err)
	}
	first, _ := s.FirstIndex()
	last, _ := s.LastIndex()
	if first != 105 || last != 249 {
		t.Fatalf("after deleting both ends: [%d, %d], want [105, 249]", first, last)
	}
	for _, i := range []uint64{104, 250} {
		if err := s.GetLog(i, &l); !errors.Is(err, raft.ErrLogNotFound) {
			t.Fatalf("GetLog(%d) after its deletion: %v", i, err)
		}
	}
	if err := s.GetLog(105, &l); err != nil || l.Index != 105 {
		t.Fatalf("GetLog(105) = %d, %v", l.Index, err)
	}
}

// Appended entries fill the log's pages: raft-boltdb's default split left
// each about half full.
func TestLogStorePagesFilled(t *testing.T) {
	s, err := openLogStore(filepath.Join(t.TempDir(), "raft.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := uint64(0); i < 200; i++ {
		if err := s.StoreLogs(testLogs(1+10*i, 10, 300)); err != nil {
			t.Fatal(err)
		}
	}
	err = s.db.View(func(tx *bolt.Tx) error {
		st := tx.Bucket(bucketLogs).Stats()
		fill := float64(st.LeafInuse) / float64(st.LeafPageN*tx.DB().Info().PageSize)
		if fill < 0.85 {
			t.Errorf("log leaf pages %.0f %% full, want at least 85 %%", 100*fill)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// BenchmarkStoreLogs appends batches of 10 entries of 500 bytes (about a
// Vault KV write each) with raft-boltdb v2 and with logStore, fsynced, and
// reports the pages each append writes and the file's bytes per entry.
func BenchmarkStoreLogs(b *testing.B) {
	type store interface {
		StoreLogs([]*raft.Log) error
		Close() error
	}
	opts := func() *bolt.Options { return &bolt.Options{NoFreelistSync: true, FreelistType: bolt.FreelistMapType} }
	for _, impl := range []string{"raft-boltdb", "logStore"} {
		b.Run(impl, func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "raft.db")
			var s store
			var stats func() bolt.Stats
			switch impl {
			case "raft-boltdb":
				rb, err := raftboltdb.New(raftboltdb.Options{Path: path, BoltOptions: opts()})
				if err != nil {
					b.Fatal(err)
				}
				s, stats = rb, rb.Stats
			default:
				ls, err := openLogStore(path, opts())
				if err != nil {
					b.Fatal(err)
				}
				s, stats = ls, ls.db.Stats
			}
			defer s.Close()
			st := stats()
			writes0 := st.TxStats.GetWrite()
			b.ReportAllocs()
			cpu0 := processCPU(b)
			b.ResetTimer()
			for i := range b.N {
				if err := s.StoreLogs(testLogs(uint64(1+10*i), 10, 500)); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64((processCPU(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/append")
			st = stats()
			b.ReportMetric(float64(st.TxStats.GetWrite()-writes0)/float64(b.N), "pages/append")
			if err := s.Close(); err != nil {
				b.Fatal(err)
			}
			check, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
			if err != nil {
				b.Fatal(err)
			}
			defer check.Close()
			check.View(func(tx *bolt.Tx) error { // #nosec G104 -- the function returns nil
				b.ReportMetric(float64(tx.Size())/float64(10*b.N), "file-bytes/entry")
				return nil
			})
		})
	}
}

// processCPU is the process's user and system CPU time so far.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Readers (raft's replication, Node.TermAt) run while raft appends.
func TestLogStoreConcurrentReadsAndAppends(t *testing.T) {
	s, err := openLogStore(filepath.Join(t.TempDir(), "raft.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.StoreLogs(testLogs(1, 10, 20)); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 4)
	for r := 0; r < 4; r++ {
		go func() {
			for i := 0; i < 200; i++ {
				var l raft.Log
				idx := uint64(1 + i%10)
				if err := s.GetLog(idx, &l); err != nil || l.Index != idx {
					done <- fmt.Errorf("GetLog(%d) = %d, %v", idx, l.Index, err)
					return
				}
			}
			done <- nil
		}()
	}
	for i := uint64(0); i < 20; i++ {
		if err := s.StoreLogs(testLogs(11+5*i, 5, 20)); err != nil {
			t.Fatal(err)
		}
	}
	for r := 0; r < 4; r++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}
