package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/testutil"
)

// openGoroutines are the functions of the goroutines an open starts (and
// of what they run); none may still run once Seal has returned. The
// service's own are method expressions, so a moved or renamed method cannot
// silently drop out of the check.
var openGoroutines = []string{
	funcName((*core).maintenance),
	funcName((*Cluster).syncKeysLoop),
	funcName((*Backups).autoBackup),
	funcName((*Cluster).promoteLoop),
	"backup.(*Manager).Loop",
	"backup.(*Manager).Backup",
	"state.(*mirrorWriter).loop",
}

// funcName is the name a goroutine stack gives to the function f.
func funcName(f any) string {
	return runtime.FuncForPC(reflect.ValueOf(f).Pointer()).Name()
}

// runningOpenGoroutines lists the goroutine stacks that are in one of
// openGoroutines, except those whose header (goroutine id) is in skip.
func runningOpenGoroutines(skip map[string]bool) []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if skip[goroutineID(g)] {
			continue
		}
		for _, f := range openGoroutines {
			if strings.Contains(g, f+"(") {
				out = append(out, g)
				break
			}
		}
	}
	return out
}

// goroutineID is "goroutine N" from a stack's first line.
func goroutineID(stack string) string {
	f := strings.Fields(stack)
	if len(f) < 2 {
		return ""
	}
	return f[0] + " " + f[1]
}

// TestSealWaitsForGoroutines: sealing and reopening 50 times under load
// (writes, backups on request, scheduled and automatic backups, a journal
// mirror) leaves none of an open's goroutines running once Seal returns,
// and the goroutine count returns to what it was before.
func TestSealWaitsForGoroutines(t *testing.T) {
	// Services other tests of the package left open are not this one's.
	others := map[string]bool{}
	for _, g := range runningOpenGoroutines(nil) {
		others[goroutineID(g)] = true
	}
	s, err := New(testConfig(Config{DataDir: t.TempDir(), BackupScryptWorkFactor: 10,
		BackupTick: 20 * time.Millisecond, JournalPruneEvery: 20 * time.Millisecond, WriteRetryDelay: 100 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx := rootCtx()
	if _, err := s.Init(ctx, local, []byte(pass)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetRecoveryPassphrase(ctx, nil, []byte("recovery-passphrase")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Backups.AddDestination(ctx, DestinationConfig{Name: "nas", Kind: "dir", Path: filepath.Join(t.TempDir(), "nas"), Mirror: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Backups.PutSchedule(ctx, ScheduleConfig{Name: "often", Destination: "nas", Type: "periodic", Every: "1m"}, false); err != nil {
		t.Fatal(err)
	}
	if err := s.Seal(ctx); err != nil {
		t.Fatal(err)
	}
	base := runtime.NumGoroutine()
	if err := s.Open(ctx, []byte(pass)); err != nil {
		t.Fatal(err)
	}
	// The check below can fail: the stacks name the open's goroutines as
	// openGoroutines does.
	if !slices.ContainsFunc(runningOpenGoroutines(others), func(g string) bool {
		return strings.Contains(g, funcName((*core).maintenance)+"(")
	}) {
		t.Fatal("the open's maintenance goroutine is not in the goroutine stacks under the name openGoroutines gives it")
	}

	stop := make(chan struct{})
	var load sync.WaitGroup
	var writes, backups atomic.Int64
	for i := 0; i < 3; i++ {
		load.Add(1)
		go func() {
			defer load.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := s.Objects.PutSecret(ctx, DefaultWallet, fmt.Sprintf("w%d-%d", i, n), []byte("v")); err == nil {
					writes.Add(1)
				} else if !errors.Is(err, ErrSealed) && !errors.Is(err, ErrUnavailable) && !errors.Is(err, ErrWriteUnavailable) && !errors.Is(err, ErrStopping) {
					t.Errorf("write: %v", err)
					return
				}
			}
		}()
	}
	load.Add(1)
	go func() {
		defer load.Done()
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			if _, err := s.Backups.RunBackup(ctx, BackupRequest{Destination: "nas", Mode: "full"}); err == nil {
				backups.Add(1)
			}
			if n%20 == 0 {
				s.RotateMasterKey(ctx) // an automatic full backup follows
			}
		}
	}()

	for i := 0; i < 50; i++ {
		// Let the load reach the open node.
		w0, b0 := writes.Load(), backups.Load()
		testutil.WaitFor(t, 60*time.Second, fmt.Sprintf("round %d: progress of the load", i), func() error {
			if writes.Load() < w0+5 || i%10 == 0 && backups.Load() == b0 {
				return fmt.Errorf("writes %d (%d before), backups %d (%d before)", writes.Load(), w0, backups.Load(), b0)
			}
			return nil
		})
		if err := s.Seal(ctx); err != nil {
			t.Fatalf("round %d: seal: %v", i, err)
		}
		if left := runningOpenGoroutines(others); len(left) > 0 {
			t.Fatalf("round %d: goroutines of the open still running after Seal returned:\n%s", i, strings.Join(left, "\n\n"))
		}
		if err := s.Open(ctx, []byte(pass)); err != nil {
			t.Fatalf("round %d: open: %v", i, err)
		}
	}
	close(stop)
	load.Wait()
	if writes.Load() == 0 || backups.Load() == 0 {
		t.Fatalf("no load: %d writes, %d backups", writes.Load(), backups.Load())
	}
	if err := s.Seal(ctx); err != nil {
		t.Fatal(err)
	}
	if err := testutil.Poll(60*time.Second, func() error {
		if n := runtime.NumGoroutine(); n > base {
			return fmt.Errorf("%d goroutines, %d before the rounds", n, base)
		}
		return nil
	}); err != nil {
		buf := make([]byte, 1<<20)
		t.Fatalf("%v:\n%s", err, buf[:runtime.Stack(buf, true)])
	}
}

// TestAwaitWorkersNamesThoseStillRunning: a goroutine that does not end
// when told to holds a seal up for SealWait only, is named in the error,
// and is waited for again by the next call; a stopped group starts nothing.
func TestAwaitWorkersNamesThoseStillRunning(t *testing.T) {
	defer func(d time.Duration) { SealWait = d }(SealWait)
	SealWait = 100 * time.Millisecond
	s := &core{log: slog.New(slog.DiscardHandler)}
	w := newWorkers()
	release := make(chan struct{})
	w.Go("stuck task", func(context.Context) { <-release })
	s.workers = w
	s.retireWorkersLocked()
	if err := s.awaitWorkers(); err == nil || !strings.Contains(err.Error(), "stuck task") {
		t.Fatalf("await with a stuck goroutine: %v", err)
	}
	if w.Go("late", func(context.Context) {}) {
		t.Fatal("a stopped group started a goroutine")
	}
	close(release)
	SealWait = time.Minute
	if err := s.awaitWorkers(); err != nil {
		t.Fatalf("await after the release: %v", err)
	}
	if len(s.retired) != 0 {
		t.Fatalf("%d groups still retired", len(s.retired))
	}
}
