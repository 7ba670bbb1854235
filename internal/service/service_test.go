package service

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/datadir"
	"github.com/coffer-kms/coffer/internal/journal"
	"github.com/coffer-kms/coffer/internal/state"
	"github.com/coffer-kms/coffer/internal/testutil"
)

func TestInitPutGetReopen(t *testing.T) {
	dir := t.TempDir()
	ctx := rootCtx()
	s := newSvc(t, dir)
	if s.State() != StateUninitialized {
		t.Fatalf("state %s", s.State())
	}
	if _, err := s.Objects.PutSecret(ctx, "default", "a", []byte("x")); !errors.Is(err, ErrUninitialized) {
		t.Fatalf("put before init: %v", err)
	}
	tok, err := s.Init(ctx, local, []byte(pass))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Init(ctx, local, []byte(pass)); !errors.Is(err, ErrAlreadyInit) {
		t.Fatalf("init twice: %v", err)
	}
	if id, err := s.Access.Authenticate(tok); err != nil || id.Kind != KindRoot || !id.Has(RoleKeyAdmin) {
		t.Fatalf("root token: %v %+v", err, id)
	}
	for i := 1; i <= 3; i++ {
		v, err := s.Objects.PutSecret(ctx, "default", "db/tde", []byte(fmt.Sprintf("key-%d", i)))
		if err != nil || v.Latest != uint64(i) {
			t.Fatalf("put %d: v=%d err=%v", i, v.Latest, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = newSvc(t, dir)
	defer s.Close()
	if s.State() != StateSealed {
		t.Fatalf("after restart: %s", s.State())
	}
	if _, err := s.GetSecret(ctx, "db/tde", 0); !errors.Is(err, ErrSealed) {
		t.Fatalf("read sealed: %v", err)
	}
	if err := s.Open(ctx, []byte("wrong-passphrase")); !errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("wrong passphrase: %v", err)
	}
	if err := s.Open(ctx, []byte(pass)); err != nil {
		t.Fatal(err)
	}
	if err := s.Open(ctx, []byte(pass)); !errors.Is(err, ErrAlreadyOpen) {
		t.Fatalf("open twice: %v", err)
	}
	for i := 1; i <= 3; i++ {
		sec, err := s.GetSecret(ctx, "db/tde", uint64(i))
		if err != nil || string(sec.Value) != fmt.Sprintf("key-%d", i) {
			t.Fatalf("get v%d: %q %v", i, sec.Value, err)
		}
	}
	if _, err := s.GetSecret(ctx, "db/tde", 9); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing version: %v", err)
	}
	if _, err := s.Access.Authenticate("cof_nope"); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("bad token: %v", err)
	}
}

func TestRotationsKeepDataReadable(t *testing.T) {
	dir := t.TempDir()
	ctx := rootCtx()
	s := initSvc(t, dir)
	s.Objects.PutSecret(ctx, "default", "k", []byte("before"))
	gen, err := s.RotateMasterKey(ctx)
	if err != nil || gen != 2 {
		t.Fatalf("rotate: %d %v", gen, err)
	}
	// Every data key is now wrapped by generation 2.
	keys, _, _ := s.st.DEKs()
	for _, k := range keys {
		if k.MEKGen != 2 {
			t.Fatalf("data key %d still wrapped by generation %d", k.ID, k.MEKGen)
		}
	}
	dek, err := s.RotateDataKey(ctx)
	if err != nil || dek != 2 {
		t.Fatalf("rotate data key: %d %v", dek, err)
	}
	s.Objects.PutSecret(ctx, "default", "k", []byte("after"))
	if err := s.ChangePassphrase(ctx, []byte(pass), []byte(pass+"2")); err != nil {
		t.Fatal(err)
	}
	if err := s.EnableAutoOpen(ctx); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = newSvc(t, dir)
	defer s.Close()
	if err := s.OpenAuto(ctx); err != nil {
		t.Fatal(err)
	}
	for v, want := range map[uint64]string{1: "before", 2: "after"} {
		sec, err := s.GetSecret(ctx, "k", v)
		if err != nil || string(sec.Value) != want {
			t.Fatalf("v%d: %q %v", v, sec.Value, err)
		}
	}
	if st := s.Status(); st.KeystoreGeneration != 2 || st.DataKey != 2 || !st.AutoOpen {
		t.Fatalf("status %+v", st)
	}
}

// TestJournalHasEveryCommand: the journal holds one record per applied
// command, decrypts with the data keys, and its payload is never plaintext.
func TestJournalHasEveryCommand(t *testing.T) {
	dir := t.TempDir()
	ctx := rootCtx()
	s := initSvc(t, dir)
	secret := []byte("very-secret-value-123456")
	for i := 0; i < 10; i++ {
		if _, err := s.Objects.PutSecret(ctx, "default", fmt.Sprintf("s%d", i), secret); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.RotateJournal(ctx); err != nil {
		t.Fatal(err)
	}
	s.Objects.PutSecret(ctx, "default", "last", secret)
	applied := s.st.AppliedIndex()
	n, puts := 0, 0
	err := journal.Read(datadir.JournalDir(dir), s.bar, func(_ journal.SegmentInfo, r journal.Record) error {
		n++
		if r.Index != uint64(n) {
			return fmt.Errorf("journal indexes not contiguous: record %d has index %d", n, r.Index)
		}
		if r.Type == uint16(state.TypeObjectCreate) {
			puts++
			if r.KeyID == 0 || r.Payload == nil {
				return fmt.Errorf("put record %d stored in clear or not decrypted", r.Index)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Every raft entry (commands, configuration, leader no-ops and barriers)
	// has exactly one record.
	if uint64(n) != applied || puts != 11 {
		t.Fatalf("journal records = %d (puts %d), applied index %d", n, puts, applied)
	}
	if s.jr.LastIndex() != applied {
		t.Fatalf("journal last %d, applied %d", s.jr.LastIndex(), applied)
	}
	s.Close()
	files, _ := filepath.Glob(filepath.Join(dir, "*", "*"))
	files2, _ := filepath.Glob(filepath.Join(dir, "*"))
	for _, f := range append(files, files2...) {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if bytes.Contains(b, secret) || bytes.Contains(b, []byte(pass)) {
			t.Fatalf("plaintext secret found at rest in %s", f)
		}
	}
}

// TestJournalRebuiltFromRaftLog: records missing from the journal (a crash
// between the state commit and the journal write) are rebuilt at open, each
// encrypted under the data key that was current at its index.
func TestJournalRebuiltFromRaftLog(t *testing.T) {
	dir := t.TempDir()
	ctx := rootCtx()
	s := initSvc(t, dir)
	for i := 0; i < 5; i++ {
		s.Objects.PutSecret(ctx, "default", fmt.Sprintf("s%d", i), []byte("v"))
	}
	if _, err := s.RotateDataKey(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 5; i < 10; i++ {
		s.Objects.PutSecret(ctx, "default", fmt.Sprintf("s%d", i), []byte("v"))
	}
	keyOf := map[uint64]uint32{}
	journal.Read(datadir.JournalDir(dir), s.bar, func(_ journal.SegmentInfo, r journal.Record) error {
		keyOf[r.Index] = r.KeyID
		return nil
	})
	applied := s.st.AppliedIndex()
	s.Close()
	// Drop the journal entirely: every record must come back from the raft log.
	os.RemoveAll(datadir.JournalDir(dir))
	s = newSvc(t, dir)
	defer s.Close()
	if err := s.Open(ctx, []byte(pass)); err != nil {
		t.Fatal(err)
	}
	if got := s.jr.LastIndex(); got < applied {
		t.Fatalf("journal rebuilt to %d, applied %d", got, applied)
	}
	if _, err := journal.Verify(datadir.JournalDir(dir), s.bar); err != nil {
		t.Fatal(err)
	}
	used := map[uint32]bool{}
	journal.Read(datadir.JournalDir(dir), s.bar, func(_ journal.SegmentInfo, r journal.Record) error {
		if want, ok := keyOf[r.Index]; ok && r.KeyID != want {
			t.Errorf("rebuilt record %d under data key %d, originally %d", r.Index, r.KeyID, want)
		}
		used[r.KeyID] = true
		return nil
	})
	if !used[1] || !used[2] {
		t.Fatalf("expected records under data keys 1 and 2, got %v", used)
	}
}

// TestRaftDirLostRefusesToOpen: state.db ahead of the raft log means the raft
// directory was lost; starting would silently drop new writes.
func TestRaftDirLostRefusesToOpen(t *testing.T) {
	dir := t.TempDir()
	ctx := rootCtx()
	s := initSvc(t, dir)
	s.Objects.PutSecret(ctx, "default", "k", []byte("v"))
	s.Close()
	os.RemoveAll(datadir.RaftDir(dir))
	s = newSvc(t, dir)
	defer s.Close()
	err := s.Open(ctx, []byte(pass))
	if err == nil || !strings.Contains(err.Error(), "raft directory was lost") {
		t.Fatalf("open with a lost raft dir: %v", err)
	}
	if s.State() != StateSealed {
		t.Fatalf("state after refused open: %s", s.State())
	}
}

// TestStateLostIsRebuiltFromSnapshotAndLog: state.db lost; the latest raft
// snapshot plus the log after it bring every write back.
func TestStateLostIsRebuiltFromSnapshotAndLog(t *testing.T) {
	dir := t.TempDir()
	ctx := rootCtx()
	s := initSvc(t, dir)
	for i := 0; i < 20; i++ {
		s.Objects.PutSecret(ctx, "default", fmt.Sprintf("a%d", i), []byte(fmt.Sprint(i)))
	}
	if err := s.node.Snapshot(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		s.Objects.PutSecret(ctx, "default", fmt.Sprintf("b%d", i), []byte(fmt.Sprint(i)))
	}
	s.Close()
	if err := os.Remove(datadir.StatePath(dir)); err != nil {
		t.Fatal(err)
	}
	s = newSvc(t, dir)
	defer s.Close()
	if err := s.Open(ctx, []byte(pass)); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"a", "b"} {
		for i := 0; i < 20; i++ {
			sec, err := s.GetSecret(ctx, fmt.Sprintf("%s%d", p, i), 0)
			if err != nil || string(sec.Value) != fmt.Sprint(i) {
				t.Fatalf("%s%d after state loss: %v", p, i, err)
			}
		}
	}
}

func TestValidation(t *testing.T) {
	s := newSvc(t, t.TempDir())
	defer s.Close()
	ctx := rootCtx()
	if _, err := s.Init(ctx, local, []byte("1234567")); !errors.Is(err, ErrPassphraseLength) {
		t.Fatalf("7 bytes: %v", err)
	}
	if _, err := s.Init(ctx, local, bytes.Repeat([]byte("a"), 201)); !errors.Is(err, ErrPassphraseLength) {
		t.Fatalf("201 bytes: %v", err)
	}
	if _, err := s.Init(ctx, local, []byte(pass)); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"", "../x", "a b", "-x", string(bytes.Repeat([]byte("a"), 300)),
		"x/../y", "a//b", "a/./b", "a/", "a/.."} {
		if _, err := s.Objects.PutSecret(ctx, "default", name, []byte("v")); !errors.Is(err, ErrInvalid) {
			t.Fatalf("name %q: %v", name, err)
		}
	}
	if _, err := s.Objects.PutSecret(ctx, "default", "big", make([]byte, MaxSecretBytes+1)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("oversized: %v", err)
	}
}

// --- benchmarks: acknowledged writes per second (group commit), reads per second.

func benchWrites(b *testing.B, writers int) {
	dir := b.TempDir()
	ctx := rootCtx()
	s := newSvc(b, dir)
	defer s.Close()
	if _, err := s.Init(ctx, local, []byte(pass)); err != nil {
		b.Fatal(err)
	}
	val := bytes.Repeat([]byte("k"), 32)
	batches0, entries0 := s.st.BatchStats()
	b.ResetTimer()
	var wg sync.WaitGroup
	per := (b.N + writers - 1) / writers
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < per; i++ {
				if _, err := s.Objects.PutSecret(ctx, "default", fmt.Sprintf("w%d-%d", w, i), val); err != nil {
					b.Error(err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	b.ReportMetric(float64(per*writers)/b.Elapsed().Seconds(), "writes/s")
	// The group commit's batch size: raft entries per state transaction
	// (and fsync) while the writers ran.
	if batches, entries := s.st.BatchStats(); batches > batches0 {
		b.ReportMetric(float64(entries-entries0)/float64(batches-batches0), "entries/batch")
	}
}

func BenchmarkWrite1(b *testing.B)  { benchWrites(b, 1) }
func BenchmarkWrite8(b *testing.B)  { benchWrites(b, 8) }
func BenchmarkWrite32(b *testing.B) { benchWrites(b, 32) }
func BenchmarkWrite64(b *testing.B) { benchWrites(b, 64) }

func BenchmarkRead(b *testing.B) {
	ctx := rootCtx()
	s := newSvc(b, b.TempDir())
	defer s.Close()
	if _, err := s.Init(ctx, local, []byte(pass)); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < 1000; i++ {
		s.Objects.PutSecret(ctx, "default", fmt.Sprintf("r%d", i), []byte("value-of-32-bytes-for-the-bench!"))
	}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := s.GetSecret(ctx, fmt.Sprintf("r%d", i%1000), 0); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "reads/s")
}

// TestCancelledRequestRaisesNoAlert: a caller that gives up mid-write must not
// be mistaken for a failing raft log (which would refuse every write for a while).
func TestCancelledRequestRaisesNoAlert(t *testing.T) {
	s := newSvc(t, t.TempDir())
	defer s.Close()
	ctx := rootCtx()
	if _, err := s.Init(ctx, local, []byte(pass)); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		cctx, cancel := context.WithCancel(ctx)
		go cancel()
		s.Objects.PutSecret(cctx, "default", fmt.Sprintf("c%d", i), []byte("v"))
	}
	if st := s.Status(); len(st.Alerts) != 0 || !st.Writable {
		t.Fatalf("alerts after cancelled requests: %+v", st.Alerts)
	}
	if _, err := s.Objects.PutSecret(ctx, "default", "after", []byte("v")); err != nil {
		t.Fatalf("write after cancelled requests: %v", err)
	}
}

func TestResetPassphraseLocalOnly(t *testing.T) {
	dir := t.TempDir()
	ctx := rootCtx()
	s := initSvc(t, dir)
	s.Objects.PutSecret(ctx, "default", "k", []byte("v"))
	if err := s.ResetPassphrase(ctx, Identity{Kind: KindRoot, Name: "root", Roles: AllRoles}, []byte("new-passphrase")); !errors.Is(err, ErrForbidden) {
		t.Fatalf("remote reset: %v", err)
	}
	if err := s.ResetPassphrase(ctx, Identity{Local: true}, []byte("new-passphrase")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = newSvc(t, dir)
	defer s.Close()
	if err := s.Open(ctx, []byte("new-passphrase")); err != nil {
		t.Fatal(err)
	}
	if sec, err := s.GetSecret(ctx, "k", 0); err != nil || string(sec.Value) != "v" {
		t.Fatalf("after reset: %v", err)
	}
}

var local = Identity{Name: "test", Local: true}

// TestJournalAheadOfRaftRefusesToOpen: state.db and raft/ lost, journal kept:
// new records would collide with the old history's indexes.
func TestJournalAheadOfRaftRefusesToOpen(t *testing.T) {
	dir := t.TempDir()
	ctx := rootCtx()
	s := initSvc(t, dir)
	for i := 0; i < 5; i++ {
		s.Objects.PutSecret(ctx, "default", fmt.Sprintf("k%d", i), []byte("v"))
	}
	s.Close()
	os.Remove(datadir.StatePath(dir))
	os.RemoveAll(datadir.RaftDir(dir))
	s = newSvc(t, dir)
	defer s.Close()
	err := s.Open(ctx, []byte(pass))
	if err == nil || !strings.Contains(err.Error(), "beyond the raft log") {
		t.Fatalf("open with only the journal left: %v", err)
	}
}

// TestNoNeedlessSnapshotRestore: raft's snapshot index also counts no-op and
// barrier entries; a state that only lacks those must not be "restored".
func TestNoNeedlessSnapshotRestore(t *testing.T) {
	dir := t.TempDir()
	ctx := rootCtx()
	var logs bytes.Buffer
	var mu sync.Mutex
	newLogged := func() *Service {
		s, err := New(testConfig(Config{DataDir: dir, Logger: slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil))}))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := newLogged()
	if _, err := s.Init(ctx, local, []byte(pass)); err != nil {
		t.Fatal(err)
	}
	s.Objects.PutSecret(ctx, "default", "k", []byte("v"))
	s.Close()
	for i := 0; i < 2; i++ { // each open appends a barrier; then snapshot
		s = newLogged()
		if err := s.Open(ctx, []byte(pass)); err != nil {
			t.Fatal(err)
		}
		if err := s.node.Snapshot(); err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
	s = newLogged()
	defer s.Close()
	if err := s.Open(ctx, []byte(pass)); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Contains(logs.String(), "behind the raft snapshot") {
		t.Fatalf("needless snapshot restore:\n%s", logs.String())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestJournalRotatesByAgeWithoutWrites: an idle segment older than
// JournalMaxAge is closed by the service, not only before the next write.
func TestJournalRotatesByAgeWithoutWrites(t *testing.T) {
	ctx := rootCtx()
	s, err := New(testConfig(Config{DataDir: t.TempDir(), JournalMaxAge: 300 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Init(ctx, local, []byte(pass)); err != nil {
		t.Fatal(err)
	}
	s.Objects.PutSecret(ctx, "default", "k", []byte("v"))
	before, _ := s.JournalSegments(rootCtx())
	testutil.WaitFor(t, 5*time.Second, "a rotation by age", func() error {
		segs, _ := s.JournalSegments(rootCtx())
		if len(segs) > len(before) && segs[len(segs)-2].Closed {
			return nil
		}
		return fmt.Errorf("%d segments before, %d now", len(before), len(segs))
	})
}

func rootCtx() context.Context { return WithIdentity(context.Background(), LocalRoot()) }

type secretView struct {
	Version uint64
	Value   []byte
}

// GetSecret reads secret data from the default wallet (tests only).
func (s *Service) GetSecret(ctx context.Context, name string, version uint64) (secretView, error) {
	_, m, err := s.Objects.GetObject(ctx, Ref{Wallet: DefaultWallet, Name: name}, version)
	return secretView{Version: m.Version, Value: m.Value}, err
}
