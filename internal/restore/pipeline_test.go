package restore_test

import (
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/backup"
	"github.com/coffer-kms/coffer/internal/backup/dest"
	"github.com/coffer-kms/coffer/internal/restore"
	"github.com/coffer-kms/coffer/internal/testutil"
)

// TestReplayPipelineMatchesHistory: with batches of three records, so that
// a batch is applied while the next one is read and decoded, and the next
// archived segment fetched while one is applied, a replay across several
// segments, a data key rotation and a restore point reaches exactly the
// recorded state at every kind of target (latest, indexes inside and at the
// end of segments, a restore point), reports progress from one goroutine
// (run with -race), and leaves no staging behind.
func TestReplayPipelineMatchesHistory(t *testing.T) {
	defer restore.SetReplayBatch(3)()
	e := newEnv(t, true)
	e.put("a", "a1")
	e.backup("full")
	type mark struct {
		target Target
		index  uint64
		digest string
	}
	var marks []mark
	at := func(tg Target) {
		idx, d := e.digest()
		if tg.Index != 0 {
			tg.Index = idx
		}
		marks = append(marks, mark{tg, idx, d})
	}
	for seg := range 4 {
		for i := range 7 {
			e.put(fmt.Sprintf("k%d", i), fmt.Sprintf("v%d-%d", seg, i)) // creations, then rotations
			if i == 2 || i == 5 {
				at(Target{Index: 1})
			}
		}
		switch seg {
		case 1:
			if _, err := e.s.RotateDataKey(e.ctx); err != nil {
				t.Fatal(err)
			}
			e.put("after-dek", "x")
		case 2:
			if _, err := e.s.Backups.CreateRestorePoint(e.ctx, "rp"); err != nil {
				t.Fatal(err)
			}
			at(Target{Point: "rp"})
			e.put("after-rp", "x")
		}
		at(Target{Index: 1}) // the end of the segment
		if seg == 3 {
			at(Target{}) // latest
		}
		e.archive()
	}
	e.s.Close()
	for _, m := range marks {
		events := 0
		sum, dir, err := e.restoreTo(m.target, func(o *restore.Options) {
			o.Progress = func(restore.Event) { events++ } // unsynchronised: -race reports calls from two goroutines
		})
		if err != nil {
			t.Fatalf("%v: %v", m.target, err)
		}
		if sum.Index != m.index || sum.Digest != m.digest {
			t.Fatalf("%v: restored %d %.12s, want %d %.12s", m.target, sum.Index, sum.Digest, m.index, m.digest)
		}
		if m.target.Point == "" && m.target.Index == 0 && len(sum.Files) < 4 {
			t.Fatalf("latest: replayed %v, want the 4 archived segments", sum.Files)
		}
		if events == 0 {
			t.Fatalf("%v: no progress reported", m.target)
		}
		if _, err := os.Stat(filepath.Join(dir, ".restore")); !os.IsNotExist(err) {
			t.Fatalf("%v: staging left behind: %v", m.target, err)
		}
	}
}

// openCounter counts the opens of each archived segment file.
type openCounter struct {
	dest.Destination
	mu    sync.Mutex
	opens map[string]int
}

func (o *openCounter) Open(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	if strings.HasPrefix(name, backup.ArchiveDir+"/") {
		o.mu.Lock()
		o.opens[name]++
		o.mu.Unlock()
	}
	return o.Destination.Open(ctx, name, offset, length)
}

func (o *openCounter) counts() map[string]int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return maps.Clone(o.opens)
}

// TestReplayFetchesTheNextFileAhead: the next archived segment is opened
// while the one before it is still being applied (the restore waits, in
// its progress callback at the end of the first segment, for the second
// to be opened: a fetch only started after the first segment would never
// come), and every file is fetched once.
func TestReplayFetchesTheNextFileAhead(t *testing.T) {
	defer restore.SetReplayBatch(2)()
	e := newEnv(t, true)
	e.put("a", "a1")
	e.backup("full")
	var segEnd []uint64
	for seg := range 3 {
		for i := range 5 {
			e.put(fmt.Sprintf("k%d", i), fmt.Sprintf("v%d", seg))
		}
		idx, _ := e.digest()
		segEnd = append(segEnd, idx)
		e.archive()
	}
	idx, want := e.digest()
	e.archive()
	e.s.Close()

	var oc *openCounter
	waited := false
	sum, _, err := e.restoreTo(Target{}, func(o *restore.Options) {
		oc = &openCounter{Destination: o.From, opens: map[string]int{}}
		o.From = oc
		o.Progress = func(ev restore.Event) {
			if ev.Phase != "replay" || ev.Index < segEnd[0] || waited {
				return
			}
			waited = true
			testutil.WaitFor(t, 10*time.Second, "the second archived segment opened while the first is applied", func() error {
				if n := len(oc.counts()); n < 2 {
					return fmt.Errorf("%d archived segments opened", n)
				}
				return nil
			})
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Index != idx || sum.Digest != want || !waited {
		t.Fatalf("restored %d %.12s (waited %v), want %d %.12s", sum.Index, sum.Digest, waited, idx, want)
	}
	for name, n := range oc.counts() {
		if n != 1 {
			t.Errorf("%s opened %d times", name, n)
		}
	}
	if len(sum.Files) < 3 {
		t.Fatalf("replayed %v: want at least 3 archived segments", sum.Files)
	}
}
