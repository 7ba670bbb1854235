package keystore

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/internal/fsutil"
)

// The crash tests re-execute the test binary (os.Args[0]) in a child mode
// selected by childModeEnv, kill it with SIGKILL at a random moment, and check
// what it left on disk.
const (
	childModeEnv = "COFFER_KEYSTORE_TEST_CHILD"
	childDirEnv  = "COFFER_KEYSTORE_TEST_CHILD_DIR"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(childModeEnv); mode != "" {
		os.Exit(runChild(mode, os.Getenv(childDirEnv)))
	}
	os.Exit(m.Run())
}

// runChild loops until killed. It only returns on failure.
func runChild(mode, dir string) int {
	fail := func(what string, err error) int {
		fmt.Fprintf(os.Stderr, "child %s: %s: %v\n", mode, what, err)
		return 2
	}
	s := New(dir, Options{KDF: tinyKDF, MachineIdentity: testIdentity,
		Warn: func(err error) { fmt.Fprintf(os.Stderr, "child %s: warning: %v\n", mode, err); os.Exit(3) }})
	switch mode {
	case "rotate":
		k, err := s.Open(passA)
		if err != nil {
			return fail("open", err)
		}
		for {
			if k, err = s.Rotate(k); err != nil {
				return fail("rotate", err)
			}
		}
	case "passphrase":
		cur, next := passA, passB
		_, err := s.Open(cur)
		if errors.Is(err, ErrWrongPassphrase) {
			cur, next = next, cur
			_, err = s.Open(cur)
		}
		if err != nil {
			return fail("open", err)
		}
		for {
			if _, err := s.ChangePassphrase(cur, next); err != nil {
				return fail("change passphrase", err)
			}
			cur, next = next, cur
		}
	}
	return fail("mode", errors.New("unknown"))
}

type wrappedItem struct {
	gen       uint32
	aad       string
	plaintext string
	wrapped   []byte
}

func TestCrashRotate(t *testing.T)     { crashTest(t, "rotate") }
func TestCrashPassphrase(t *testing.T) { crashTest(t, "passphrase") }

func crashTest(t *testing.T, mode string) {
	if testing.Short() {
		t.Skip("crash test re-executes the test binary")
	}
	s, k := initStore(t)
	k, err := s.Rotate(k)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.EnableAutoOpen(k); err != nil {
		t.Fatal(err)
	}
	var items []wrappedItem
	addItem := func(k *Keyring, i int) {
		aad, pt := fmt.Sprintf("aad-%d", i), fmt.Sprintf("plaintext-%d", i)
		gen, w, err := k.Wrap([]byte(pt), []byte(aad))
		if err != nil {
			t.Fatal(err)
		}
		items = append(items, wrappedItem{gen, aad, pt, w})
	}
	addItem(k, -1)

	ksPath := filepath.Join(s.Dir(), FileName)
	lastN := k.Current()
	var stale, progress, tempFiles int
	iteration := func(i int, delay time.Duration) {
		before := readFile(t, ksPath)
		runAndKill(t, mode, s.Dir(), delay)

		// Stray temp files may remain; nothing else may appear.
		tempFiles = 0
		ents, err := os.ReadDir(s.Dir())
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			switch n := e.Name(); {
			case n == FileName || n == AutoOpenFileName:
			case strings.HasPrefix(n, "."+FileName+".tmp-"), strings.HasPrefix(n, "."+AutoOpenFileName+".tmp-"):
				tempFiles++
			default:
				t.Fatalf("iteration %d: unexpected file %s", i, n)
			}
		}

		// Auto-open works or reports stale, nothing else.
		ka, autoErr := s.OpenAuto()
		if autoErr != nil && !errors.Is(autoErr, ErrAutoOpenStale) {
			t.Fatalf("iteration %d (delay %v): OpenAuto: %v", i, delay, autoErr)
		}
		if autoErr != nil {
			stale++
		}

		// Exactly one passphrase opens.
		k, err := s.Open(passA)
		if mode == "passphrase" && errors.Is(err, ErrWrongPassphrase) {
			k, err = s.Open(passB)
		}
		if err != nil {
			t.Fatalf("iteration %d (delay %v): Open: %v", i, delay, err)
		}

		gens := k.Generations()
		for j, g := range gens {
			if g.Number != uint32(j+1) {
				t.Fatalf("iteration %d: generations not contiguous: %v", i, gensOf(k))
			}
		}
		n := uint32(len(gens))
		if k.Current() != n || n < lastN {
			t.Fatalf("iteration %d: current %d, generations %v, previously %d", i, k.Current(), gensOf(k), lastN)
		}
		if mode == "passphrase" && n != lastN {
			t.Fatalf("iteration %d: passphrase change altered generations: %v", i, gensOf(k))
		}
		lastN = n
		for _, it := range items {
			p, err := k.Unwrap(it.gen, it.wrapped, []byte(it.aad))
			if err != nil || string(p) != it.plaintext {
				t.Fatalf("iteration %d: unwrap item from generation %d: %v", i, it.gen, err)
			}
		}
		if ka != nil {
			sameKeys(t, k, ka)
		}
		// The passphrase open rebuilt a stale aks.
		ka, err = s.OpenAuto()
		if err != nil {
			t.Fatalf("iteration %d: OpenAuto after passphrase open: %v", i, err)
		}
		sameKeys(t, k, ka)
		addItem(k, i)
		if !bytes.Equal(before, readFile(t, ksPath)) {
			progress++
		}
	}

	const iterations = 40
	for i := 0; i < iterations; i++ {
		delay := time.Duration(rand.N(31)) * time.Millisecond
		if i == 0 {
			delay = 0
		}
		iteration(i, delay)
	}
	// Make sure the children got far enough to write at least once, on slow
	// machines too; a test that never crashed mid-write proves nothing.
	for i := iterations; progress == 0 && i < iterations+20; i++ {
		iteration(i, time.Duration(50+rand.N(300))*time.Millisecond)
	}
	if progress == 0 {
		t.Fatal("no child ever wrote keystore.ks")
	}
	t.Logf("%s: %d iterations changed keystore.ks, %d left a stale aks, %d generations, %d temp files left", mode, progress, stale, lastN, tempFiles)
}

// runAndKill starts a child in mode on dir and SIGKILLs it after delay.
func runAndKill(t *testing.T, mode, dir string, delay time.Duration) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childModeEnv+"="+mode, childDirEnv+"="+dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(delay) // the kill at a chosen moment of the child's writes is what is tested
	_ = cmd.Process.Signal(syscall.SIGKILL)
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("child %s: wait: %v (stderr: %s)", mode, err, stderr.String())
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child %s exited by itself: %v; stderr: %s", mode, err, stderr.String())
	}
}

// TestRotateWhoseDirectorySyncFails: keystore.ks renamed into place, then
// the directory fsync fails. The rotation is on disk: Rotate says it is done
// but not durable (ErrNotDurable) and hands back the keyring of the file on
// disk, so the next rotation works (it failed with ErrStaleKeyring, the
// keyring still being the one of the replaced file).
func TestRotateWhoseDirectorySyncFails(t *testing.T) {
	s, k := initStore(t)
	defer func(w func(string, []byte) error) { writeKSFile = w }(writeKSFile)
	writeKSFile = func(path string, data []byte) error {
		if err := fsutil.WriteFile(path, data); err != nil {
			return err
		}
		return fmt.Errorf("write %s: %w %s: input/output error", path, fsutil.ErrDirSync, filepath.Dir(path))
	}
	nk, err := s.Rotate(k)
	if !errors.Is(err, ErrNotDurable) {
		t.Fatalf("Rotate with a failing directory fsync: %v, want ErrNotDurable", err)
	}
	if nk == nil || nk.Current() != 2 {
		t.Fatal("Rotate did not hand back the keyring of the keystore.ks it wrote")
	}
	writeKSFile = fsutil.WriteFile
	nk2, err := s.Rotate(nk)
	if err != nil {
		t.Fatalf("the next rotation: %v", err)
	}
	if nk2.Current() != 3 {
		t.Fatalf("current generation %d after two rotations, want 3", nk2.Current())
	}
	if got := mustOpen(t, s, passA); got.Current() != 3 {
		t.Fatalf("keystore.ks opens at generation %d, want 3", got.Current())
	}
}

// TestRotateWhoseWriteFails: a write that fails before the rename leaves
// keystore.ks as it was: an error that is not ErrNotDurable, no keyring.
func TestRotateWhoseWriteFails(t *testing.T) {
	s, k := initStore(t)
	defer func(w func(string, []byte) error) { writeKSFile = w }(writeKSFile)
	writeKSFile = func(path string, _ []byte) error { return fmt.Errorf("write %s: no space left on device", path) }
	nk, err := s.Rotate(k)
	if err == nil || errors.Is(err, ErrNotDurable) || nk != nil {
		t.Fatalf("Rotate whose write failed: %v (keyring %v)", err, nk != nil)
	}
	writeKSFile = fsutil.WriteFile
	if nk, err := s.Rotate(k); err != nil || nk.Current() != 2 {
		t.Fatalf("the next rotation: %v", err)
	}
}

// TestKeyChangesWhoseDirectorySyncFails: a passphrase change or reset, the
// generations a cluster node adds and a keystore made from another node's
// keyring, each renamed into place before the directory fsync fails, hand
// back the keyring of the file on disk with ErrNotDurable, as Rotate does:
// the caller holds it (the next change works) instead of a stale one.
func TestKeyChangesWhoseDirectorySyncFails(t *testing.T) {
	failSync := func(t *testing.T) {
		w := writeKSFile
		t.Cleanup(func() { writeKSFile = w })
		writeKSFile = func(path string, data []byte) error {
			if err := fsutil.WriteFile(path, data); err != nil {
				return err
			}
			return fmt.Errorf("write %s: %w %s: input/output error", path, fsutil.ErrDirSync, filepath.Dir(path))
		}
	}
	check := func(t *testing.T, s *Store, nk *Keyring, err error, wantGen uint32, pass []byte) {
		t.Helper()
		if !errors.Is(err, ErrNotDurable) {
			t.Fatalf("with a failing directory fsync: %v, want ErrNotDurable", err)
		}
		if nk == nil || nk.Current() != wantGen {
			t.Fatal("no keyring of the keystore.ks written was handed back")
		}
		writeKSFile = fsutil.WriteFile
		nk2, err := s.Rotate(nk)
		if err != nil {
			t.Fatalf("the next rotation with the keyring handed back: %v", err)
		}
		if got := mustOpen(t, s, pass); got.Current() != nk2.Current() {
			t.Fatalf("keystore.ks opens at generation %d, want %d", got.Current(), nk2.Current())
		}
	}
	t.Run("ChangePassphrase", func(t *testing.T) {
		s, _ := initStore(t)
		failSync(t)
		nk, err := s.ChangePassphrase(passA, passB)
		check(t, s, nk, err, 1, passB)
	})
	t.Run("ResetPassphrase", func(t *testing.T) {
		s, k := initStore(t)
		failSync(t)
		nk, err := s.ResetPassphrase(k, passB)
		check(t, s, nk, err, 1, passB)
	})
	t.Run("AddGenerations", func(t *testing.T) {
		s, k := initStore(t)
		w, err := k.NewGeneration()
		if err != nil {
			t.Fatal(err)
		}
		failSync(t)
		nk, err := s.AddGenerations(k, []WrappedGen{w})
		check(t, s, nk, err, 2, passA)
	})
	t.Run("InitFrom", func(t *testing.T) {
		_, k := initStore(t)
		s2, _ := initStore(t)
		if err := os.Remove(s2.ksPath()); err != nil {
			t.Fatal(err)
		}
		failSync(t)
		nk, err := s2.InitFrom(passB, k)
		check(t, s2, nk, err, 1, passB)
	})
}
