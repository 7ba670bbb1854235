package service

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestPassphraseGuessingIsThrottled: wrong keystore passphrases from the
// network are slowed down per source and in total, like failed logins; the
// answer names no file; the local socket is not slowed; a right passphrase
// clears its source's count.
func TestPassphraseGuessingIsThrottled(t *testing.T) {
	dir := t.TempDir()
	var mu sync.Mutex
	var slept []time.Duration
	s, err := New(testConfig(Config{DataDir: dir, Sleep: func(_ context.Context, d time.Duration) error {
		mu.Lock()
		slept = append(slept, d)
		mu.Unlock()
		return nil
	}}))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Init(rootCtx(), local, []byte(pass)); err != nil {
		t.Fatal(err)
	}
	if err := s.Seal(rootCtx()); err != nil {
		t.Fatal(err)
	}
	from := func(src string) context.Context {
		return WithCall(context.Background(), &Call{Transport: "rest", Source: src, Start: time.Now()})
	}
	sleeps := func() []time.Duration {
		mu.Lock()
		defer mu.Unlock()
		out := slept
		slept = nil
		return out
	}
	for i := 0; i < 6; i++ {
		err := s.Open(from("192.0.2.7:4000"), []byte("not-the-passphrase"))
		if !errors.Is(err, ErrWrongPassphrase) {
			t.Fatalf("guess %d: %v", i, err)
		}
		if strings.Contains(err.Error(), dir) || strings.Contains(err.Error(), "keystore.ks") {
			t.Fatalf("the answer names the keystore file: %v", err)
		}
	}
	got := sleeps()
	if len(got) != 3 || !(got[0] < got[1] && got[1] < got[2]) {
		t.Fatalf("delays after 6 wrong guesses: %v, want 3 growing ones (the first 3 are free)", got)
	}
	// Another source pays for the total of wrong guesses too.
	if err := s.Open(from("198.51.100.9:5000"), []byte("also-wrong-pass")); !errors.Is(err, ErrWrongPassphrase) {
		t.Fatal(err)
	}
	if got := sleeps(); len(got) != 1 {
		t.Fatalf("a new source after 6 wrong guesses elsewhere: delays %v, want one", got)
	}
	// The local control socket is not slowed down.
	sock := WithCall(context.Background(), &Call{Transport: "socket", Source: "local", Identity: Identity{Local: true}, Start: time.Now()})
	if err := s.Open(sock, []byte("wrong-on-socket")); !errors.Is(err, ErrWrongPassphrase) {
		t.Fatal(err)
	}
	if got := sleeps(); len(got) != 0 {
		t.Fatalf("socket attempt slowed: %v", got)
	}
	// The right passphrase (slowed, like any attempt from that source)
	// opens and clears the source's count.
	if err := s.Open(from("192.0.2.7:4001"), []byte(pass)); err != nil {
		t.Fatal(err)
	}
	sleeps()
	if err := s.Seal(rootCtx()); err != nil {
		t.Fatal(err)
	}
	if err := s.Open(from("192.0.2.7:4002"), []byte("wrong-after-success")); !errors.Is(err, ErrWrongPassphrase) {
		t.Fatal(err)
	}
	for _, d := range sleeps() {
		if d >= 8*time.Second {
			t.Fatalf("a source that opened the keystore still waits the maximum: %v", d)
		}
	}
}

// TestPassphraseDelayHoldsNoLock: a throttled passphrase change waits
// before it takes the lifecycle lock, so writes go on meanwhile.
func TestPassphraseDelayHoldsNoLock(t *testing.T) {
	sleeping := make(chan struct{}, 1)
	release := make(chan struct{})
	s, err := New(testConfig(Config{DataDir: t.TempDir(), Sleep: func(ctx context.Context, d time.Duration) error {
		select {
		case sleeping <- struct{}{}:
		default:
		}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	}}))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Init(rootCtx(), local, []byte(pass)); err != nil {
		t.Fatal(err)
	}
	admin := WithCall(context.Background(), &Call{Transport: "rest", Source: "192.0.2.8:1", Identity: Identity{Kind: KindUser, Name: "sam", Roles: []Role{RoleSystemAdmin}}, Start: time.Now()})
	for i := 0; i < 3; i++ { // free attempts
		if err := s.ChangePassphrase(admin, []byte("wrong-old-passphrase"), []byte("new-passphrase-1")); !errors.Is(err, ErrWrongPassphrase) {
			t.Fatalf("attempt %d: %v", i, err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- s.ChangePassphrase(admin, []byte("wrong-old-passphrase"), []byte("new-passphrase-1")) }()
	<-sleeping // the fourth attempt waits its delay
	wrote := make(chan error, 1)
	go func() {
		_, err := s.Objects.PutSecret(rootCtx(), DefaultWallet, "during-delay", []byte("v"))
		wrote <- err
	}()
	select {
	case err := <-wrote:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		close(release)
		t.Fatal("a write waited for a throttled passphrase change")
	}
	close(release)
	if err := <-done; !errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("the delayed attempt: %v", err)
	}
}

// TestCancelledAttemptIsNotThrottled: a passphrase attempt or login whose
// request is cancelled (the server stopping, the client gone) before its
// turn is not "too many failed attempts": the error says it was cancelled,
// and nothing was counted.
func TestCancelledAttemptIsNotThrottled(t *testing.T) {
	s, err := New(testConfig(Config{DataDir: t.TempDir()}))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Init(rootCtx(), local, []byte(pass)); err != nil {
		t.Fatal(err)
	}
	if err := s.Seal(rootCtx()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(WithCall(context.Background(), &Call{Transport: "rest", Source: "192.0.2.7:4000", Start: time.Now()}))
	cancel()
	// The turn is free and the context is done: whichever the wait sees
	// first, the answer is the same. Tried a few times for that reason.
	for i := 0; i < 20; i++ {
		err := s.Open(ctx, []byte(pass))
		if err == nil || errors.Is(err, ErrThrottled) || !errors.Is(err, context.Canceled) {
			t.Fatalf("open %d with a cancelled request: %v, want context.Canceled and not ErrThrottled", i, err)
		}
	}
	if err := s.Open(WithCall(context.Background(), &Call{Transport: "rest", Source: "192.0.2.7:4001", Start: time.Now()}), []byte(pass)); err != nil {
		t.Fatalf("open after the cancelled attempts: %v", err)
	}
}
