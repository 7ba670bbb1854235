package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestKill9KeepsAcknowledgedWrites starts the real binary, writes from several
// clients, records which writes were acknowledged, kill -9s the server at a
// random moment, restarts it, and checks every acknowledged write — many times.
// At the end the journal must verify and cover every applied index.
func TestKill9KeepsAcknowledgedWrites(t *testing.T) {
	iterations := 20
	if testing.Short() {
		iterations = 5
	}
	dir := filepath.Join(t.TempDir(), "data")
	n := initialisedNode(t, dir, "")
	token := n.token

	acked := map[string]string{}
	rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	for it := 0; it < iterations; it++ {
		if it > 0 {
			n.start()
			n.token = token
			n.waitState("open")
			// Everything acknowledged before any earlier kill must be there.
			verifyAll(t, n, acked)
		}
		ctx, cancel := context.WithCancel(context.Background())
		var mu sync.Mutex
		var wg sync.WaitGroup
		c := n.https()
		for w := 0; w < 8; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				for i := 0; ctx.Err() == nil; i++ {
					name := fmt.Sprintf("k-%d-%d-%d", it, w, i)
					val := "v:" + name
					if _, err := c.PutSecret(ctx, "default", name, []byte(val)); err == nil {
						mu.Lock()
						acked[name] = val
						mu.Unlock()
					} else if ctx.Err() == nil && !strings.Contains(err.Error(), "connection") && !strings.Contains(err.Error(), "EOF") {
						t.Errorf("unexpected write error before kill: %v", err)
					}
				}
			}(w)
		}
		time.Sleep(time.Duration(rng.IntN(600)+20) * time.Millisecond) // the kill at a random moment of the load is what is tested
		n.kill9()
		cancel()
		wg.Wait()
		if t.Failed() {
			t.Fatalf("iteration %d failed\n%s", it, n.logs)
		}
	}
	n.start()
	n.waitState("open")
	verifyAll(t, n, acked)
	st, err := n.local().Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Journal.LastIndex < st.AppliedIndex {
		t.Fatalf("journal ends at %d, state applied %d", st.Journal.LastIndex, st.AppliedIndex)
	}
	n.stop()
	out, err := coffer(t, nil, "journal", "verify", "--data-dir", dir)
	if err != nil || !strings.Contains(out, "journal OK") {
		t.Fatalf("journal verify after kills: %v\n%s", err, out)
	}
	t.Logf("%d kills, %d acknowledged writes all present; %s", iterations, len(acked), strings.TrimSpace(out))
	if len(acked) < iterations*5 {
		t.Fatalf("too few writes acknowledged (%d) for the test to mean anything", len(acked))
	}
	// Secrets never reach the logs.
	assertNoSecret(t, n.logs.String(), token)
}

func verifyAll(t *testing.T, n *node, acked map[string]string) {
	t.Helper()
	c := n.local()
	ctx := context.Background()
	for name, want := range acked {
		s, err := c.GetSecret(ctx, "default", name, 0)
		if err != nil {
			t.Fatalf("acknowledged write %s lost: %v\n%s", name, err, n.logs)
		}
		if string(s.Value) != want {
			t.Fatalf("acknowledged write %s: value %q, want %q", name, s.Value, want)
		}
	}
}

func assertNoSecret(t *testing.T, text string, secrets ...string) {
	t.Helper()
	for _, s := range append(secrets, testPassphrase) {
		if s != "" && strings.Contains(text, s) {
			t.Fatalf("a secret appears in server output")
		}
	}
}

var _ = os.Getenv
