package restore_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/backup/bundle"
	"github.com/coffer-kms/coffer/internal/backup/dest"
	"github.com/coffer-kms/coffer/internal/restore"
	"github.com/coffer-kms/coffer/internal/service"
	"github.com/coffer-kms/coffer/internal/state"
	"github.com/coffer-kms/coffer/internal/testutil"
)

// TestRestoreLatestAndOpen: full + writes + archived segments restore to the
// latest point; the restored node opens with the new passphrase, serves
// every secret, is on timeline 2, and takes writes.
func TestRestoreLatestAndOpen(t *testing.T) {
	e := newEnv(t, true)
	e.put("a", "a1")
	e.backup("full")
	e.put("a", "a2")
	e.put("b", "b1")
	e.archive()
	e.put("c", "c1")
	// Latest is the last archived record: the archive mark that shipping
	// writes lands in the next, unarchived segment.
	idx, want := e.digest()
	e.archive()

	sum, dir, err := e.restoreTo(Target{})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Index != idx || sum.Digest != want {
		t.Fatalf("restored index %d digest %s, want %d %s", sum.Index, sum.Digest, idx, want)
	}
	if sum.Timeline.ID != 2 || len(sum.Timeline.History) != 1 || sum.Timeline.History[0].ID != 1 || sum.Timeline.History[0].Upto != idx {
		t.Fatalf("timeline %+v", sum.Timeline)
	}
	for _, p := range []string{"keystore/keystore.ks", "raft", "journal", "state.db", "node-id"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			t.Fatalf("restored dir lacks %s: %v", p, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "keystore", "keystore.aks")); err == nil {
		t.Fatal("auto-open was restored")
	}
	e.s.Close()
	s, ctx := openRestored(t, dir)
	if v := secretValue(t, s, ctx, "a", 1); v != "a1" {
		t.Fatalf("a v1 = %q", v)
	}
	if v := secretValue(t, s, ctx, "a", 0); v != "a2" {
		t.Fatalf("a latest = %q", v)
	}
	if v := secretValue(t, s, ctx, "c", 0); v != "c1" {
		t.Fatalf("c = %q", v)
	}
	if _, err := s.Objects.PutSecret(ctx, service.DefaultWallet, "after", []byte("x")); err != nil {
		t.Fatalf("write after restore: %v", err)
	}
	st := s.Status()
	if st.Timeline.ID != 2 || st.Timeline.Restored == nil {
		t.Fatalf("status timeline %+v", st.Timeline)
	}
}

// TestRestoreRefusesNonEmptyDir: a non-empty dir is refused, --force moves
// it aside.
func TestRestoreRefusesNonEmptyDir(t *testing.T) {
	e := newEnv(t, false)
	e.put("a", "a1")
	e.backup("full")
	dir := filepath.Join(t.TempDir(), "restored")
	os.MkdirAll(dir, 0o700)
	os.WriteFile(filepath.Join(dir, "keep"), []byte("x"), 0o600)
	_, _, err := e.restoreTo(Target{}, func(o *restore.Options) { o.DataDir = dir })
	if !errors.Is(err, restore.ErrTargetDir) || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("non-empty dir: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "keep")); err != nil || string(b) != "x" {
		t.Fatal("the refused dir was touched")
	}
	// A restore that fails after the move puts the old dir back, and one
	// into a new dir leaves nothing behind.
	_, _, err = e.restoreTo(Target{Index: 1 << 40}, func(o *restore.Options) { o.DataDir = dir; o.Force = true })
	if !errors.Is(err, restore.ErrGap) {
		t.Fatalf("restore beyond the backups: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "keep")); err != nil || string(b) != "x" {
		t.Fatalf("the old dir is not back after a failed restore: %v", err)
	}
	if m, _ := filepath.Glob(dir + ".before-restore-*"); len(m) != 0 {
		t.Fatalf("left aside: %v", m)
	}
	fresh := filepath.Join(t.TempDir(), "fresh")
	if _, _, err := e.restoreTo(Target{Index: 1 << 40}, func(o *restore.Options) { o.DataDir = fresh }); err == nil {
		t.Fatal("restore beyond the backups succeeded")
	}
	if _, err := os.Stat(fresh); !os.IsNotExist(err) {
		t.Fatalf("a failed restore left %s behind: %v", fresh, err)
	}
	// A too-short keystore passphrase is refused before anything is read.
	if _, _, err := e.restoreTo(Target{}, func(o *restore.Options) { o.DataDir = fresh; o.Passphrase = []byte("short") }); err == nil || !strings.Contains(err.Error(), "passphrase") {
		t.Fatalf("short passphrase: %v", err)
	}
	sum, _, err := e.restoreTo(Target{}, func(o *restore.Options) { o.DataDir = dir; o.Force = true })
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(sum.MovedAside, "keep")); err != nil || string(b) != "x" {
		t.Fatalf("moved-aside dir %q: %v", sum.MovedAside, err)
	}
}

// TestTimelines: a restore to a past point starts timeline 2; writes on it
// are archived next to timeline 1's later segments; a restore of timeline
// 2 follows timeline 1 up to the branch and never replays what timeline 1
// did after it; a restore point that exists only on the abandoned part of
// timeline 1 is refused with an explanation, unless timeline 1 is asked for.
func TestTimelines(t *testing.T) {
	e := newEnv(t, true)
	e.put("a", "a1")
	e.backup("full")
	e.put("a", "a2")
	e.must(e.s.Backups.CreateRestorePoint(e.ctx, "before"))
	branch, _ := e.digest()
	e.put("a", "a3-abandoned")
	e.must(e.s.Backups.CreateRestorePoint(e.ctx, "tl1-only"))
	e.archive()
	e.s.Close()

	sum, dir, err := e.restoreTo(Target{Point: "before"}, takeOver)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Index != branch || sum.Timeline.ID != 2 {
		t.Fatalf("restored to %d on timeline %d, want %d on 2", sum.Index, sum.Timeline.ID, branch)
	}
	s2, ctx := openTakenOver(t, dir)
	if v := secretValue(t, s2, ctx, "a", 0); v != "a2" {
		t.Fatalf("a on timeline 2 = %q", v)
	}
	if _, err := s2.Objects.PutSecret(ctx, service.DefaultWallet, "a", []byte("b-on-tl2")); err != nil {
		t.Fatal(err)
	}
	idx2, want2, _, err := s2.Backups.Digest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Backups.ArchiveNow(ctx); err != nil {
		t.Fatal(err)
	}
	s2.Close()

	// Both timelines have records after the branch: without --timeline
	// the restore refuses and names both.
	_, _, err = e.restoreTo(Target{})
	if !errors.Is(err, restore.ErrAmbiguousTimeline) || !strings.Contains(err.Error(), "timeline 1 reaches") ||
		!strings.Contains(err.Error(), fmt.Sprintf("timeline 2 (from timeline 1 at index %d) reaches index %d", branch, idx2)) ||
		!strings.Contains(err.Error(), "writes to this destination now") {
		t.Fatalf("latest with two diverged timelines: %v", err)
	}
	// Latest of timeline 2: TL1's full and segments up to the branch (or
	// TL2's take-over full), then TL2's segment; TL1's "a3-abandoned"
	// never comes back.
	sum, dir3, err := e.restoreTo(Target{}, func(o *restore.Options) { o.Timeline = 2 })
	if err != nil {
		b, _ := os.ReadFile(filepath.Join(e.nas, "catalog.json"))
		t.Fatalf("%v\n%s", err, b)
	}
	if sum.Index != idx2 || sum.Digest != want2 || sum.Timeline.ID != 3 || sum.FromTL != 2 {
		t.Fatalf("timeline 2 latest: index %d digest %.12s timeline %d from %d; want %d %.12s 3 2", sum.Index, sum.Digest, sum.Timeline.ID, sum.FromTL, idx2, want2)
	}
	if h := sum.Timeline.History; len(h) != 2 || h[0] != (state.TimelineBranch{ID: 1, Upto: branch}) || h[1].ID != 2 || h[1].Upto != idx2 {
		t.Fatalf("history %+v", h)
	}
	s3, ctx3 := openRestored(t, dir3)
	if v := secretValue(t, s3, ctx3, "a", 0); v != "b-on-tl2" {
		t.Fatalf("a on timeline 3 = %q", v)
	}
	s3.Close()

	// The restore point made after the branch on timeline 1.
	_, _, err = e.restoreTo(Target{Point: "tl1-only"}, func(o *restore.Options) { o.Timeline = 2 })
	if !errors.Is(err, restore.ErrNotOnTimeline) || !strings.Contains(err.Error(), "--timeline 1") || !strings.Contains(err.Error(), "abandoned") {
		t.Fatalf("restore point on the abandoned timeline: %v", err)
	}
	sum, dir1, err := e.restoreTo(Target{Point: "tl1-only"}, func(o *restore.Options) { o.Timeline = 1 })
	if err != nil {
		t.Fatal(err)
	}
	s1, ctx1 := openRestored(t, dir1)
	if v := secretValue(t, s1, ctx1, "a", 0); v != "a3-abandoned" {
		t.Fatalf("a back on timeline 1 = %q", v)
	}
	if sum.Timeline.ID != 4 {
		t.Fatalf("fourth history got timeline %d", sum.Timeline.ID)
	}
}

func files(t *testing.T, dir, pattern string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, pattern))
	if err != nil || len(m) == 0 {
		t.Fatalf("no %s in %s", pattern, dir)
	}
	return m
}

func flip(t *testing.T, file string, off int64) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	b[off%int64(len(b))] ^= 0x40
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestDamage: a wrong passphrase, flipped bytes in a full backup and in an
// archived segment, a deleted segment and a deleted catalog each give a
// clear error or the correct result, never a silently wrong state.
func TestDamage(t *testing.T) {
	e := newEnv(t, true)
	e.put("a", "a1")
	e.backup("full")
	for i := range 5 {
		e.put("a", fmt.Sprint("a", i+2))
		e.archive()
	}
	e.put("b", "b1")
	idx, want := e.digest()
	e.archive()
	e.s.Close()
	good := func(what string) {
		t.Helper()
		sum, _, err := e.restoreTo(Target{})
		if err != nil || sum.Index != idx || sum.Digest != want {
			t.Fatalf("%s: %+v %v", what, sum, err)
		}
	}

	// Wrong passphrase.
	_, _, err := e.restoreTo(Target{}, func(o *restore.Options) { o.Keys = []bundle.Decryption{{Passphrase: []byte("not the one")}} })
	if !errors.Is(err, bundle.ErrWrongKey) || !strings.Contains(err.Error(), "passphrase:recovery-1") || strings.Contains(err.Error(), "not the one") {
		t.Fatalf("wrong passphrase: %v", err)
	}

	// Deleted catalog: read from the manifests, same result.
	os.Rename(filepath.Join(e.nas, "catalog.json"), filepath.Join(e.nas, "catalog.saved"))
	sum, _, err := e.restoreTo(Target{})
	if err != nil || !sum.Rebuilt || sum.Digest != want {
		t.Fatalf("without a catalog: %+v %v", sum, err)
	}
	os.Rename(filepath.Join(e.nas, "catalog.saved"), filepath.Join(e.nas, "catalog.json"))

	// Flipped bytes in the full: always an error naming the file.
	full := files(t, e.nas, "backups/*-full.cbk")[0]
	orig, _ := os.ReadFile(full)
	rng := rand.New(rand.NewPCG(1, 2))
	for range 8 {
		off := rng.Int64N(int64(len(orig)))
		flip(t, full, off)
		_, _, err := e.restoreTo(Target{})
		if err == nil || !strings.Contains(err.Error(), filepath.Base(full)) {
			t.Fatalf("full flipped at %d of %d: %v", off, len(orig), err)
		}
		os.WriteFile(full, orig, 0o600)
	}
	good("after repairing the full")

	// Flipped bytes in a segment: an error naming it.
	segs := files(t, e.nas, "archive/*.cbk")
	seg := segs[len(segs)/2]
	sorig, _ := os.ReadFile(seg)
	for range 6 {
		off := rng.Int64N(int64(len(sorig)))
		flip(t, seg, off)
		_, _, err := e.restoreTo(Target{})
		if err == nil || !strings.Contains(err.Error(), filepath.Base(seg)) {
			t.Fatalf("segment flipped at %d of %d: %v", off, len(sorig), err)
		}
		os.WriteFile(seg, sorig, 0o600)
	}
	good("after repairing the segment")

	// A deleted segment: the gap is named, with the last reachable point;
	// restoring to that point explicitly works.
	os.Remove(seg)
	_, _, err = e.restoreTo(Target{})
	if !errors.Is(err, restore.ErrGap) || !strings.Contains(err.Error(), "are missing") || !strings.Contains(err.Error(), "--to-index") {
		t.Fatalf("deleted segment: %v", err)
	}
	var reach uint64
	fmt.Sscanf(err.Error()[strings.Index(err.Error(), "--to-index ")+len("--to-index "):], "%d", &reach)
	sum, _, err = e.restoreTo(Target{Index: reach})
	if err != nil || sum.Index != reach {
		t.Fatalf("restore to the last reachable index %d: %+v %v", reach, sum, err)
	}
}

// TestMirrorRestoresEveryAcknowledgedWrite: with the synchronous journal
// mirror, losing the data dir loses no acknowledged write: the last full
// plus the mirror restore the state exactly as it was.
func TestMirrorRestoresEveryAcknowledgedWrite(t *testing.T) {
	e, mirror := mirroredEnv(t, 50)
	idx, want := e.digest()
	cluster := e.s.Status().ClusterID
	// The data disk dies: nothing of the data dir is used.
	e.s.Close()
	os.RemoveAll(e.dir)
	sum, dir, err := e.restoreTo(Target{}, func(o *restore.Options) {
		o.Journals = []string{filepath.Join(mirror, "mirror", cluster)}
	})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Index != idx || sum.Digest != want {
		t.Fatalf("restored %d %.12s, the lost node had %d %.12s", sum.Index, sum.Digest, idx, want)
	}
	s, ctx := openRestored(t, dir)
	if v := secretValue(t, s, ctx, "k6", 0); v != "48" {
		t.Fatalf("k6 = %q", v)
	}
}

// TestRestoreAcrossKeyChanges: a chain spanning a master key rotation (whose
// new generation only a later incremental carries), a keystore
// passphrase change and a recovery passphrase change restores; each backup
// opens with the recovery passphrase valid when it was taken, and a chain
// needing both is refused with only the new one.
func TestRestoreAcrossKeyChanges(t *testing.T) {
	e := newEnv(t, true)
	e.put("a", "a1")
	e.backup("full")
	e.put("a", "a2")
	e.archive()
	if _, err := e.s.RotateMasterKey(e.ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.RotateDataKey(e.ctx); err != nil { // a data key wrapped by generation 2 only
		t.Fatal(err)
	}
	e.put("a", "a3")
	if err := e.s.ChangePassphrase(e.ctx, []byte(ksPass), []byte("keystore-passphrase-2")); err != nil {
		t.Fatal(err)
	}
	e.put("a", "a4")
	e.archive()
	if _, err := e.s.SetRecoveryPassphrase(e.ctx, []byte(rcPass), []byte("recovery-passphrase-2")); err != nil {
		t.Fatal(err)
	}
	e.put("a", "a5")
	e.backup("incremental") // carries generation 2; encrypted to the new recovery passphrase
	e.put("a", "a6")
	idx, want := e.digest()
	e.archive()
	e.s.Close()

	both := func(o *restore.Options) {
		o.Keys = []bundle.Decryption{{Passphrase: []byte(rcPass)}, {Passphrase: []byte("recovery-passphrase-2")}}
	}
	sum, dir, err := e.restoreTo(Target{}, both)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Index != idx || sum.Digest != want || !slices.Equal(sum.Generations, []uint32{1, 2}) {
		t.Fatalf("restored %d %.12s gens %v, want %d %.12s [1 2]", sum.Index, sum.Digest, sum.Generations, idx, want)
	}
	s, ctx := openRestored(t, dir)
	for v, wantV := range []string{"", "a1", "a2", "a3", "a4", "a5", "a6"} {
		if v > 0 && secretValue(t, s, ctx, "a", uint64(v)) != wantV {
			t.Fatalf("a v%d", v)
		}
	}
	_, _, err = e.restoreTo(Target{}, func(o *restore.Options) { o.Keys = []bundle.Decryption{{Passphrase: []byte("recovery-passphrase-2")}} })
	if !errors.Is(err, bundle.ErrWrongKey) || !strings.Contains(err.Error(), "recovery-1") {
		t.Fatalf("only the new recovery passphrase: %v", err)
	}
}

// TestObjectRestore: a key destroyed by mistake comes back, in place, with
// every version's material as it was before the destroy, through the live
// service; and once more as a new object under another name.
func TestObjectRestore(t *testing.T) {
	var clock testutil.Clock
	e := newEnv(t, true, func(c *service.Config) { c.Now = clock.Now })
	k, err := e.s.Objects.CreateObject(e.ctx, service.CreateObject{Wallet: service.DefaultWallet, Name: "tde-master", Type: service.TypeSymmetricKey})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.Objects.RotateObject(e.ctx, service.Ref{ID: k.ID}, nil); err != nil {
		t.Fatal(err)
	}
	orig := map[uint64]string{}
	for v := uint64(1); v <= 2; v++ {
		_, m, err := e.s.Objects.GetObject(e.ctx, service.Ref{ID: k.ID}, v)
		if err != nil {
			t.Fatal(err)
		}
		orig[v] = string(m.Value)
	}
	e.backup("full")
	// Command times on either side of the target differ from it.
	clock.Advance(5 * time.Millisecond)
	before := clock.Now()
	clock.Advance(5 * time.Millisecond)
	if _, err := e.s.Objects.ChangeState(e.ctx, service.Ref{ID: k.ID}, service.Deactivate, "mistake"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.Objects.ChangeState(e.ctx, service.Ref{ID: k.ID}, service.Destroy, "mistake"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.s.Objects.GetObject(e.ctx, service.Ref{ID: k.ID}, 1); err == nil {
		t.Fatal("destroyed key still readable")
	}
	e.archive()

	// Without a destination, or both a time and an index: refused, nothing changes.
	if _, err := e.s.Backups.RestoreObject(e.ctx, service.Ref{ID: k.ID}, service.RestoreObjectRequest{Time: before}); !errors.Is(err, service.ErrInvalid) {
		t.Fatalf("no destination: %v", err)
	}
	// A time before the oldest full is the caller's mistake (400 with what
	// to do), not an internal error.
	if _, err := e.s.Backups.RestoreObject(e.ctx, service.Ref{ID: k.ID}, service.RestoreObjectRequest{Destination: "nas", Time: before.Add(-time.Hour)}); !errors.Is(err, service.ErrInvalid) || !strings.Contains(err.Error(), "choose a time or index") {
		t.Fatalf("a time before every backup: %v", err)
	}
	// The preview reads the same backups and plans the same command: it
	// names the versions that come back, and changes nothing.
	applied := e.s.Status().AppliedIndex
	req := service.RestoreObjectRequest{Destination: "nas", Time: before}
	p, err := e.s.Backups.PreviewObjectRestore(e.ctx, service.Ref{ID: k.ID}, req)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(p.Restored, []uint64{1, 2}) || p.Object.State != "active" || !strings.Contains(p.From, "nas as of") {
		t.Fatalf("preview %+v", p)
	}
	if got := e.s.Status().AppliedIndex; got != applied {
		t.Fatalf("the preview moved the applied index from %d to %d", applied, got)
	}
	if still, err := e.s.Objects.DescribeObject(e.ctx, service.Ref{ID: k.ID}); err != nil || still.State != "destroyed" {
		t.Fatalf("after the preview the object is %+v (%v), want it still destroyed", still, err)
	}
	o, err := e.s.Backups.RestoreObject(e.ctx, service.Ref{ID: k.ID}, req)
	if err != nil {
		t.Fatal(err)
	}
	if o.ID != k.ID || o.State != "active" || o.Latest != 2 {
		t.Fatalf("restored object %+v", o)
	}
	// What the preview showed is what came back (the update time aside).
	p.Object.Updated = o.Updated
	if !reflect.DeepEqual(p.Object, o) {
		t.Fatalf("preview %+v\nrestore %+v", p.Object, o)
	}
	for v := uint64(1); v <= 2; v++ {
		_, m, err := e.s.Objects.GetObject(e.ctx, service.Ref{ID: k.ID}, v)
		if err != nil || string(m.Value) != orig[v] {
			t.Fatalf("version %d after the restore: %v", v, err)
		}
	}
	// It is usable again: a new version can be made.
	if _, err := e.s.Objects.RotateObject(e.ctx, service.Ref{ID: k.ID}, nil); err != nil {
		t.Fatalf("rotate the restored key: %v", err)
	}
	// Nothing lost any more: a second in-place restore has nothing to do,
	// and its preview says so the same way.
	if _, err := e.s.Backups.PreviewObjectRestore(e.ctx, service.Ref{ID: k.ID}, req); !errors.Is(err, service.ErrConflict) {
		t.Fatalf("second preview: %v", err)
	}
	if _, err := e.s.Backups.RestoreObject(e.ctx, service.Ref{ID: k.ID}, service.RestoreObjectRequest{Destination: "nas", Time: before}); !errors.Is(err, service.ErrConflict) {
		t.Fatalf("second restore: %v", err)
	}
	c, err := e.s.Backups.RestoreObject(e.ctx, service.Ref{ID: k.ID}, service.RestoreObjectRequest{Destination: "nas", Time: before, As: "tde-master-copy"})
	if err != nil {
		t.Fatal(err)
	}
	if c.ID == k.ID || c.Name != "tde-master-copy" {
		t.Fatalf("copy %+v", c)
	}
	_, m, err := e.s.Objects.GetObject(e.ctx, service.Ref{ID: c.ID}, 2)
	if err != nil || string(m.Value) != orig[2] {
		t.Fatalf("copy's version 2: %v", err)
	}
}

// TestVerify: every backup on a healthy destination verifies OK, the
// result lands in the catalog; a damaged segment and a full whose recorded
// object count disagrees are FAILED with the reason.
func TestVerify(t *testing.T) {
	e := newEnv(t, true)
	for i := range 5 {
		e.put(fmt.Sprint("k", i), "v")
	}
	e.backup("full")
	e.put("k0", "v2")
	e.archive()
	e.backup("incremental")
	e.put("k1", "v2")
	e.archive()
	res, err := e.s.Backups.VerifyBackups(e.ctx, "nas", service.VerifyRequest{All: true})
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, r := range res {
		if r.Result != "OK" {
			t.Fatalf("%s %s: %s %s", r.Kind, r.File, r.Result, r.Reason)
		}
		kinds[r.Kind]++
	}
	if kinds["full"] != 1 || kinds["incremental"] != 1 || kinds["segment"] < 2 {
		t.Fatalf("verified %v", kinds)
	}
	cat, _ := os.ReadFile(filepath.Join(e.nas, "catalog.json"))
	if strings.Count(string(cat), `"result": "OK"`) != len(res) {
		t.Fatalf("catalog does not record every result:\n%s", cat)
	}

	segs := files(t, e.nas, "archive/*.cbk")
	flip(t, segs[0], 300)
	res, err = e.s.Backups.VerifyBackups(e.ctx, "nas", service.VerifyRequest{ID: filepath.Base(segs[0])})
	if err != nil || len(res) != 1 || res[0].Result != "FAILED" || !strings.Contains(res[0].Reason, "corrupt") {
		t.Fatalf("damaged segment: %+v %v", res, err)
	}
	cat, _ = os.ReadFile(filepath.Join(e.nas, "catalog.json"))
	if !strings.Contains(string(cat), `"result": "FAILED"`) {
		t.Fatal("the failure is not in the catalog")
	}

	// A catalog that lies about the full's object count.
	cat = []byte(strings.Replace(string(cat), `"objects": 5`, `"objects": 6`, 1))
	os.WriteFile(filepath.Join(e.nas, "catalog.json"), cat, 0o600)
	full := files(t, e.nas, "backups/*-full.cbk")[0]
	res, err = e.s.Backups.VerifyBackups(e.ctx, "nas", service.VerifyRequest{ID: filepath.Base(full)})
	if err != nil || len(res) != 1 || res[0].Result != "FAILED" || !strings.Contains(res[0].Reason, "5 objects, the backup recorded 6") {
		t.Fatalf("object count: %+v %v", res, err)
	}
}

// TestTimeTargetNeedsTheRecordsBeforeIt: a time target is reached only when
// every record up to it was replayed. A segment shipped late (archiving was
// paused) is no proof of the time it was shipped at: if the segment after
// it is missing, or was never shipped, the restore refuses.
func TestTimeTargetNeedsTheRecordsBeforeIt(t *testing.T) {
	var clock testutil.Clock
	e := newEnv(t, true, func(c *service.Config) { c.Now = clock.Now })
	e.put("a", "a1")
	e.backup("full")
	if _, err := e.s.Backups.SetArchivePaused(e.ctx, "nas", true); err != nil {
		t.Fatal(err)
	}
	e.put("a", "a2")
	if _, err := e.s.RotateJournal(e.ctx); err != nil { // S1 closes with a2
		t.Fatal(err)
	}
	e.put("a", "a3") // in S2
	clock.Advance(5 * time.Millisecond)
	target := clock.Now()
	clock.Advance(5 * time.Millisecond)
	if _, err := e.s.Backups.SetArchivePaused(e.ctx, "nas", false); err != nil {
		t.Fatal(err)
	}
	e.archive() // S1 and S2 ship now, after the target
	e.put("a", "a4")
	e.archive()
	e.s.Close()
	segs := files(t, e.nas, "archive/*.cbk")
	if len(segs) < 3 {
		t.Fatalf("segments %v", segs)
	}
	// Every segment there: the state at the target has a3.
	sum, dir, err := e.restoreTo(Target{Time: target})
	if err != nil {
		t.Fatal(err)
	}
	s, ctx := openRestored(t, dir)
	if v := secretValue(t, s, ctx, "a", 0); v != "a3" {
		t.Fatalf("a at the target = %q (index %d)", v, sum.Index)
	}
	s.Close()
	// S2 (holding a3, written before the target) is gone: refused.
	os.Remove(segs[1])
	_, _, err = e.restoreTo(Target{Time: target})
	if !errors.Is(err, restore.ErrGap) {
		t.Fatalf("restore to a time whose records are partly missing: %v", err)
	}
}

// TestMirrorOfAbandonedTimelineRefused: after a restore the mirror
// continues in <cluster>.tl2; giving the old timeline's mirror to a later
// restore is refused (it would replay the abandoned history), and the new
// one restores every acknowledged write of timeline 2.
func TestMirrorOfAbandonedTimelineRefused(t *testing.T) {
	e := newEnv(t, true)
	mirror := t.TempDir()
	if _, err := e.s.Backups.AddDestination(e.ctx, service.DestinationConfig{Name: "mirror", Kind: "dir", Path: mirror, Mirror: true}); err != nil {
		t.Fatal(err)
	}
	e.put("a", "a1")
	e.backup("full")
	e.must(e.s.Backups.CreateRestorePoint(e.ctx, "good"))
	e.put("a", "a2-abandoned")
	e.archive()
	cluster := e.s.Status().ClusterID
	e.s.Close()

	_, dir, err := e.restoreTo(Target{Point: "good"}, takeOver)
	if err != nil {
		t.Fatal(err)
	}
	s2, ctx := openTakenOver(t, dir)
	if _, err := s2.Backups.RunBackup(ctx, service.BackupRequest{Destination: "nas", Mode: "full", Wait: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Objects.PutSecret(ctx, service.DefaultWallet, "a", []byte("b-on-tl2")); err != nil {
		t.Fatal(err)
	}
	idx, want, _, _ := s2.Backups.Digest(ctx)
	s2.Close()

	// Timeline 1's mirror is used only up to where timeline 2 branched off:
	// its abandoned records never come back.
	old := filepath.Join(mirror, "mirror", cluster)
	_, dir1, err := e.restoreTo(Target{}, func(o *restore.Options) { o.Journals = []string{old}; o.Timeline = 2 })
	if err != nil {
		t.Fatal(err)
	}
	s1, ctx1 := openRestored(t, dir1)
	if v := secretValue(t, s1, ctx1, "a", 0); v != "a1" {
		t.Fatalf("with timeline 1's mirror, a = %q", v)
	}
	s1.Close()
	// A mirror of a timeline outside the history is refused.
	_, _, err = e.restoreTo(Target{}, func(o *restore.Options) { o.Journals = []string{old}; o.Timeline = 1 })
	if err != nil {
		t.Fatalf("timeline 1 with its own mirror: %v", err)
	}
	_, _, err = e.restoreTo(Target{}, func(o *restore.Options) { o.Journals = []string{old + ".tl2"}; o.Timeline = 1 })
	if err == nil || !strings.Contains(err.Error(), "not part of timeline 1") {
		t.Fatalf("timeline 2's mirror for a timeline 1 restore: %v", err)
	}
	sum, _, err := e.restoreTo(Target{}, func(o *restore.Options) { o.Journals = []string{old + ".tl2"}; o.Timeline = 2 })
	if err != nil {
		t.Fatal(err)
	}
	if sum.Index != idx || sum.Digest != want {
		t.Fatalf("restored %d %.12s, timeline 2 had %d %.12s", sum.Index, sum.Digest, idx, want)
	}
}

// TestObjectRestoreFollowsTheNodesTimeline: a restored node restoring one
// object reads its own history (timeline 2), never the abandoned one, even
// before any backup of timeline 2 reached the destination.
func TestObjectRestoreFollowsTheNodesTimeline(t *testing.T) {
	e := newEnv(t, true)
	e.put("k", "A")
	e.backup("full")
	e.must(e.s.Backups.CreateRestorePoint(e.ctx, "good"))
	e.put("k", "A-abandoned")
	e.archive()
	e.s.Close()
	_, dir, err := e.restoreTo(Target{Point: "good"}, takeOver)
	if err != nil {
		t.Fatal(err)
	}
	s2, ctx := openTakenOver(t, dir)
	o, err := s2.Objects.PutSecret(ctx, service.DefaultWallet, "k", []byte("B"))
	if err != nil {
		t.Fatal(err)
	}
	idx, _, _, _ := s2.Backups.Digest(ctx)
	// Nothing of timeline 2 is archived yet: the point cannot be reached.
	if _, err := s2.Backups.RestoreObject(ctx, service.Ref{ID: o.ID}, service.RestoreObjectRequest{Destination: "nas", Index: idx, As: "k-restored"}); !errors.Is(err, restore.ErrGap) {
		t.Fatalf("before timeline 2 is archived: %v", err)
	}
	if err := s2.Backups.ArchiveNow(ctx); err != nil {
		t.Fatal(err)
	}
	c, err := s2.Backups.RestoreObject(ctx, service.Ref{ID: o.ID}, service.RestoreObjectRequest{Destination: "nas", Index: idx, As: "k-restored"})
	if err != nil {
		t.Fatal(err)
	}
	if v := secretValue(t, s2, ctx, c.Name, 2); v != "B" {
		t.Fatalf("version 2 of the restored copy = %q", v)
	}
}

// TestVerifyAfterRecoveryPassphraseChange: backups taken under an earlier
// recovery passphrase are SKIPPED by the server's verification, not
// reported as FAILED.
func TestVerifyAfterRecoveryPassphraseChange(t *testing.T) {
	e := newEnv(t, false)
	e.put("a", "1")
	e.backup("full")
	if _, err := e.s.SetRecoveryPassphrase(e.ctx, []byte(rcPass), []byte("recovery-passphrase-2")); err != nil {
		t.Fatal(err)
	}
	e.backup("full")
	res, err := e.s.Backups.VerifyBackups(e.ctx, "nas", service.VerifyRequest{All: true})
	if err != nil || len(res) != 2 {
		t.Fatalf("%+v %v", res, err)
	}
	got := map[string]int{}
	for _, r := range res {
		got[r.Result]++
		if r.Result == "SKIPPED" && !strings.Contains(r.Reason, "recovery-1") {
			t.Fatalf("reason %q", r.Reason)
		}
	}
	if got["OK"] != 1 || got["SKIPPED"] != 1 {
		t.Fatalf("results %v", got)
	}
}

// TestRehearsalIsHeld is the rehearsal of the runbooks while the live
// server goes on: the restored copy writes nothing to the live server's
// destination (status says so) until it is released; released as a copy
// it is refused by the destination the live timeline writes to (naming
// both); a restore without --timeline meanwhile follows the live timeline;
// taken over, the destination is the copy's and the old timeline is
// refused, and a restore without --timeline refuses the two diverged
// timelines.
func TestRehearsalIsHeld(t *testing.T) {
	e := newEnv(t, true)
	e.put("a", "a1")
	e.backup("full")
	e.put("b", "b1")
	e.archive()

	sum, dir, err := e.restoreTo(Target{})
	if err != nil {
		t.Fatal(err)
	}
	if r := sum.Timeline.Restored; r == nil || !r.Held || r.Released != nil {
		t.Fatalf("restore without take-over: %+v", r)
	}
	before := listFiles(t, e.nas)
	s2, ctx := openRestored(t, dir)
	st := s2.Status()
	if !st.Backup.Held || !hasWarning(st.Warnings, "HELD", "resume-after-restore --take-over") {
		t.Fatalf("status of a held copy: held %v, warnings %+v", st.Backup.Held, st.Warnings)
	}
	_, err = s2.Backups.RunBackup(ctx, service.BackupRequest{Destination: "nas", Mode: "full", Wait: true})
	if !errors.Is(err, service.ErrConflict) || !strings.Contains(err.Error(), "held after a restore") || !strings.Contains(err.Error(), "resume-after-restore") {
		t.Fatalf("backup of a held copy to nas: %v", err)
	}
	if _, err := s2.Objects.PutSecret(ctx, service.DefaultWallet, "c", []byte("on the copy")); err != nil {
		t.Fatal(err)
	}
	if err := s2.Backups.ArchiveNow(ctx); err == nil || !strings.Contains(err.Error(), "held") {
		t.Fatalf("archive now on a held copy: %v", err)
	}
	if _, err := s2.Backups.RunBackup(ctx, service.BackupRequest{Destination: service.LocalDestination, Mode: "full", Wait: true}); err != nil {
		t.Fatalf("LOCAL (in the copy's own data dir) is not held: %v", err)
	}
	if _, _, err := s2.Backups.RebuildCatalog(ctx, "nas"); !errors.Is(err, service.ErrConflict) || !strings.Contains(err.Error(), "held") {
		t.Fatalf("catalog rebuild on a held copy: %v", err)
	}
	if res, err := s2.Backups.VerifyBackups(ctx, "nas", service.VerifyRequest{All: true}); err != nil || len(res) == 0 || res[0].Result != "OK" {
		t.Fatalf("the held copy verifies nas: %+v %v", res, err)
	}
	if after := listFiles(t, e.nas); !slices.Equal(before, after) {
		t.Fatalf("the held copy wrote to nas:\nbefore %v\nafter  %v", before, after)
	}

	// The live server goes on writing to nas.
	e.put("a", "a2-live")
	e.backup("incremental")
	liveIdx, liveDigest := e.digest()
	e.archive()

	// Released as a copy: nas, written by timeline 1, refuses it.
	if _, err := s2.Backups.ResumeAfterRestore(ctx, false); err != nil {
		t.Fatal(err)
	}
	if s2.Status().Backup.Held {
		t.Fatal("still held after resume")
	}
	if _, err := s2.Backups.ResumeAfterRestore(ctx, false); !errors.Is(err, service.ErrConflict) {
		t.Fatalf("a second resume: %v", err)
	}
	_, err = s2.Backups.RunBackup(ctx, service.BackupRequest{Destination: "nas", Mode: "full", Wait: true})
	if !errors.Is(err, service.ErrConflict) || !strings.Contains(err.Error(), "written by timeline 1") || !strings.Contains(err.Error(), "on timeline 2") {
		t.Fatalf("a resumed copy writing to the live timeline's destination: %v", err)
	}

	// A restore without --timeline follows the live timeline.
	sum, _, err = e.restoreTo(Target{})
	if err != nil {
		t.Fatal(err)
	}
	if sum.FromTL != 1 || sum.Index != liveIdx || sum.Digest != liveDigest {
		t.Fatalf("restore latest while a copy exists: timeline %d index %d, want timeline 1 at %d", sum.FromTL, sum.Index, liveIdx)
	}

	// Taken over: a full of timeline 2 claims nas; timeline 1 is refused.
	if _, err := s2.Backups.ResumeAfterRestore(ctx, true); err != nil {
		t.Fatal(err)
	}
	waitFull(t, s2, ctx, "nas", 2)
	e.put("a", "a3-live-too-late")
	_, err = e.s.Backups.RunBackup(e.ctx, service.BackupRequest{Destination: "nas", Mode: "full", Wait: true})
	if !errors.Is(err, service.ErrConflict) || !strings.Contains(err.Error(), "written by timeline 2") || !strings.Contains(err.Error(), "on timeline 1") {
		t.Fatalf("the old timeline after a take-over: %v", err)
	}
	if err := e.s.Backups.ArchiveNow(e.ctx); err == nil || !strings.Contains(err.Error(), "timeline 2") {
		t.Fatalf("archiving of the old timeline after a take-over: %v", err)
	}
	// A destination the old timeline writes to, added to the copy after
	// the take-over, is refused until a repeated take-over claims it (and
	// only it).
	other := t.TempDir()
	if _, err := e.s.Backups.AddDestination(e.ctx, service.DestinationConfig{Name: "other", Kind: "dir", Path: other}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.Backups.RunBackup(e.ctx, service.BackupRequest{Destination: "other", Mode: "full", Wait: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Backups.AddDestination(ctx, service.DestinationConfig{Name: "other", Kind: "dir", Path: other}); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Backups.RunBackup(ctx, service.BackupRequest{Destination: "other", Mode: "full", Wait: true}); !errors.Is(err, service.ErrConflict) || !strings.Contains(err.Error(), "written by timeline 1") {
		t.Fatalf("a destination of the old timeline added after the take-over: %v", err)
	}
	if _, err := s2.Backups.ResumeAfterRestore(ctx, true); err != nil {
		t.Fatalf("a repeated take-over: %v", err)
	}
	waitFull(t, s2, ctx, "other", 2)
	if recs, _ := s2.Backups.ListBackups(ctx, "nas"); countFulls(recs, 2) != 1 {
		t.Fatalf("the repeated take-over took nas again: %+v", recs)
	}

	// Both timelines have records after the fork: refused, both named.
	_, _, err = e.restoreTo(Target{})
	if !errors.Is(err, restore.ErrAmbiguousTimeline) || !strings.Contains(err.Error(), "timeline 1 reaches") || !strings.Contains(err.Error(), "timeline 2 (from timeline 1") {
		t.Fatalf("restore latest with two diverged timelines: %v", err)
	}
	if _, _, err := e.restoreTo(Target{}, func(o *restore.Options) { o.Timeline = 1 }); err != nil {
		t.Fatalf("--timeline 1 chooses: %v", err)
	}
}

// listFiles lists the files under dir with a hash of each.
func listFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			b, _ := os.ReadFile(p)
			out = append(out, fmt.Sprintf("%s %x", strings.TrimPrefix(p, dir), sha256.Sum256(b)))
		}
		return nil
	})
	return out
}

func hasWarning(ws []service.Alert, parts ...string) bool {
	for _, w := range ws {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(w.Message, p)
		}
		if ok {
			return true
		}
	}
	return false
}

// waitFull waits for a DONE full of timeline tl to destination d.
func waitFull(t *testing.T, s *service.Service, ctx context.Context, d string, tl uint32) {
	t.Helper()
	testutil.WaitFor(t, 60*time.Second, fmt.Sprintf("a full of timeline %d to %s", tl, d), func() error {
		recs, err := s.Backups.ListBackups(ctx, d)
		if err != nil {
			return err
		}
		for _, r := range recs {
			if cur, err := s.Backups.CurrentBackup(ctx); r.Kind == "full" && r.Status == "DONE" && r.Timeline == tl && err == nil && cur == nil {
				return nil // and ended: DONE is recorded a moment before
			}
		}
		return fmt.Errorf("backups %+v", recs)
	})
}

func countFulls(recs []state.BackupRecord, tl uint32) int {
	n := 0
	for _, r := range recs {
		if r.Kind == "full" && r.Status == "DONE" && r.Timeline == tl {
			n++
		}
	}
	return n
}

// mirroredEnv is an env with a synchronous journal mirror in the returned
// dir, a full backup after one write, then n more writes that only the
// journal (and its mirror) hold.
func mirroredEnv(t *testing.T, n int) (*env, string) {
	t.Helper()
	e := newEnv(t, false)
	mirror := t.TempDir()
	if _, err := e.s.Backups.AddDestination(e.ctx, service.DestinationConfig{Name: "mirror", Kind: "dir", Path: mirror, Mirror: true}); err != nil {
		t.Fatal(err)
	}
	e.put("a", "a1")
	e.backup("full")
	for i := range n {
		e.put(fmt.Sprint("k", i%7), fmt.Sprint(i))
	}
	return e, mirror
}

// TestRestoreFromInsideTheDirItReplaces: backups (the LOCAL destination, a
// journal) inside the data dir that --force would move aside are refused
// before anything moves, with an error naming them, instead of vanishing
// from under the restore once the dir is moved.
func TestRestoreFromInsideTheDirItReplaces(t *testing.T) {
	e := newEnv(t, false)
	e.put("a", "a1")
	e.backup("full")
	dir := filepath.Join(t.TempDir(), "data")
	local := filepath.Join(dir, "backup", "local")
	if err := os.CopyFS(local, os.DirFS(e.nas)); err != nil {
		t.Fatal(err)
	}
	d, err := dest.NewDir(local)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	_, _, err = e.restoreTo(Target{}, func(o *restore.Options) { o.From, o.DataDir, o.Force = d, dir, true })
	if !errors.Is(err, restore.ErrTargetDir) || !strings.Contains(err.Error(), local) || !strings.Contains(err.Error(), "copy") {
		t.Fatalf("a restore from inside the dir it replaces: %v", err)
	}
	jr := filepath.Join(dir, "journal")
	_, _, err = e.restoreTo(Target{}, func(o *restore.Options) { o.DataDir, o.Force, o.Journals = dir, true, []string{jr} })
	if !errors.Is(err, restore.ErrTargetDir) || !strings.Contains(err.Error(), jr) {
		t.Fatalf("a journal inside the dir the restore replaces: %v", err)
	}
	if m, _ := filepath.Glob(dir + ".before-restore-*"); len(m) != 0 {
		t.Fatalf("moved aside: %v", m)
	}
	if _, err := os.Stat(filepath.Join(local, "catalog.json")); err != nil {
		t.Fatalf("the backups inside the dir: %v", err)
	}
}
