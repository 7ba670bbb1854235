package check

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coffer-kms/coffer/internal/cluster"
	"github.com/coffer-kms/coffer/internal/datadir"
	"github.com/coffer-kms/coffer/internal/journal"
	"github.com/coffer-kms/coffer/internal/keystore"
	"github.com/coffer-kms/coffer/internal/service"
	"github.com/coffer-kms/coffer/internal/service/servicetest"
	"github.com/coffer-kms/coffer/internal/state"
)

// threeSegmentDir is dataDir with a third journal segment; it returns the
// segments.
func threeSegmentDir(t *testing.T) (string, *keystore.Keyring, []journal.SegmentInfo) {
	t.Helper()
	dir, ring := dataDir(t)
	svc := openSvc(t, dir)
	ctx := service.WithIdentity(context.Background(), service.LocalRoot())
	svc.RotateJournal(ctx)
	if _, err := svc.Objects.PutSecret(ctx, service.DefaultWallet, "d", []byte("value-d")); err != nil {
		t.Fatal(err)
	}
	if err := svc.Close(); err != nil {
		t.Fatal(err)
	}
	segs, err := journal.ListSegments(datadir.JournalDir(dir))
	if err != nil || len(segs) < 3 {
		t.Fatalf("segments %+v: %v", segs, err)
	}
	return dir, ring, segs
}

func openSvc(t *testing.T, dir string) *service.Service {
	t.Helper()
	svc := servicetest.New(t, servicetest.DataDir(dir))
	if err := svc.Open(service.WithIdentity(context.Background(), service.LocalRoot()), []byte(pass)); err != nil {
		svc.Close()
		t.Fatalf("open: %v", err)
	}
	return svc
}

func journalResult(t *testing.T, rep Report) Result {
	t.Helper()
	for _, r := range rep.Results {
		if r.Name == "journal" {
			return r
		}
	}
	t.Fatalf("no journal result: %+v", rep)
	return Result{}
}

// TestMovedSegmentPredictsRebuild: with a middle segment moved aside and its
// records still in the raft log, check says the next open rebuilds them, and
// it does.
func TestMovedSegmentPredictsRebuild(t *testing.T) {
	dir, ring, segs := threeSegmentDir(t)
	mid := segs[len(segs)-2]
	os.Rename(mid.Path, filepath.Join(t.TempDir(), mid.Name))
	rep := Run(paths(dir), ring)
	r := journalResult(t, rep)
	if !r.OK || !rep.OK || !strings.Contains(r.Detail, "the next open rebuilds") || !strings.Contains(r.Detail, mid.Name) && !strings.Contains(r.Detail, "missing between") {
		t.Fatalf("check: %+v", rep)
	}
	openSvc(t, dir).Close()
	if rep := Run(paths(dir), ring); !rep.OK || strings.Contains(journalResult(t, rep).Detail, "missing") {
		t.Fatalf("check after the open: %+v", rep)
	}
}

// TestMovedSegmentPredictsRefusal: when the raft log no longer holds the
// moved records, check fails with the error the next open gives, naming the
// segments to move aside.
func TestMovedSegmentPredictsRefusal(t *testing.T) {
	dir, ring, segs := threeSegmentDir(t)
	mid := segs[len(segs)-2]
	snapshotAndCompact(t, dir, mid.LastIndex)
	os.Rename(mid.Path, filepath.Join(t.TempDir(), mid.Name))
	rep := Run(paths(dir), ring)
	r := journalResult(t, rep)
	if r.OK || rep.OK || !strings.Contains(r.Detail, "cannot be rebuilt") || !strings.Contains(r.Detail, "move aside the") {
		t.Fatalf("check: %+v", rep)
	}
	svc := servicetest.New(t, servicetest.DataDir(dir))
	defer svc.Close()
	err := svc.Open(service.WithIdentity(context.Background(), service.LocalRoot()), []byte(pass))
	if err == nil || !errors.Is(err, service.ErrUnavailable) {
		t.Fatalf("open: %v", err)
	}
	// check said what open says (open adds where the journal is).
	advice, ok := strings.CutSuffix(r.Detail, "; the next open refuses until then")
	if !ok || !strings.Contains(err.Error(), advice) {
		t.Fatalf("open said %q, check predicted %q", err, r.Detail)
	}
}

// snapshotAndCompact writes a raft snapshot of the stopped data dir and
// drops the raft log through index through, as raft's compaction does.
func snapshotAndCompact(t *testing.T, dir string, through uint64) {
	t.Helper()
	st, err := state.Open(datadir.StatePath(dir), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	n, err := cluster.Open(cluster.Config{Dir: datadir.RaftDir(dir), NodeID: "x"})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ci, cd, ok := st.RaftConfiguration()
	if !ok {
		t.Fatal("no raft configuration recorded")
	}
	if err := n.SnapshotBeforeStart(st, st.AppliedIndex(), st.AppliedTerm(), ci, cd); err != nil {
		t.Fatal(err)
	}
	first, _ := n.FirstIndex()
	if err := n.LogStore().DeleteRange(first, through); err != nil {
		t.Fatal(err)
	}
}

// TestDamageCheckPredictsOpen: check says whether the next open reads the
// damage (and refuses) or not (and opens), and a torn tail is what the open
// repairs; each prediction is then checked against the open itself.
func TestDamageCheckPredictsOpen(t *testing.T) {
	flip := func(t *testing.T, path string, off int64) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		b[off] ^= 0x40
		os.WriteFile(path, b, 0o600)
	}
	opens := func(t *testing.T, dir string) error {
		svc := servicetest.New(t, servicetest.DataDir(dir))
		defer svc.Close()
		return svc.Open(service.WithIdentity(context.Background(), service.LocalRoot()), []byte(pass))
	}

	t.Run("inside a closed segment", func(t *testing.T) {
		dir, ring, segs := threeSegmentDir(t)
		first := segs[0]
		if first.Records < 2 {
			t.Fatalf("first segment %+v", first)
		}
		flip(t, first.Path, first.Size-60) // the last record, before the footer
		r := journalResult(t, Run(paths(dir), ring))
		if r.OK || !strings.Contains(r.Detail, "the next open does not read this part") || !strings.Contains(r.Detail, "move "+first.Name+" aside") {
			t.Fatalf("check: %+v", r)
		}
		if err := opens(t, dir); err != nil {
			t.Fatalf("check predicted an open, got %v", err)
		}
	})
	t.Run("footer of a closed segment", func(t *testing.T) {
		dir, ring, segs := threeSegmentDir(t)
		first := segs[0]
		flip(t, first.Path, first.Size-5)
		r := journalResult(t, Run(paths(dir), ring))
		if r.OK || !strings.Contains(r.Detail, "the next open refuses") || !strings.Contains(r.Detail, "move "+first.Name+" aside") {
			t.Fatalf("check: %+v", r)
		}
		if err := opens(t, dir); err == nil || !errors.Is(err, service.ErrUnavailable) || !strings.Contains(err.Error(), first.Name) {
			t.Fatalf("check predicted a refusal, got %v", err)
		}
	})
	t.Run("torn tail", func(t *testing.T) {
		dir, ring, segs := threeSegmentDir(t)
		last := segs[len(segs)-1]
		f, err := os.OpenFile(last.Path, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.Write([]byte{0, 0, 0, 200, 1, 2, 3}) // a frame cut short
		f.Close()
		rep := Run(paths(dir), ring)
		if r := journalResult(t, rep); !r.OK || !rep.OK || !strings.Contains(r.Detail, "which the next open truncates") {
			t.Fatalf("check: %+v", rep)
		}
		if err := opens(t, dir); err != nil {
			t.Fatalf("check predicted an open, got %v", err)
		}
	})
}
