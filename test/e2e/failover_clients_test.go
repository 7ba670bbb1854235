package e2e

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coffer-kms/coffer/client"
	"github.com/coffer-kms/coffer/internal/cli"
)

// writeLog is what one writer saw: acknowledged writes, writes reported
// as outcome unknown, and every other failure.
type writeLog struct {
	mu      sync.Mutex
	acked   map[string]string
	unknown []string
	failed  []string
}

func (l *writeLog) note(key, value string, unknown bool, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case err == nil:
		l.acked[key] = value
	case unknown:
		l.unknown = append(l.unknown, key+": "+err.Error())
	default:
		l.failed = append(l.failed, key+": "+err.Error())
	}
}

func (l *writeLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

// TestClusterLeaderKillClientsRideFailover: with every node listed and the
// leader last, the Go client and the CLI keep writing through a kill -9 of
// the leader: no write fails, except ones explicitly reported as outcome
// unknown; every acknowledged write is on the survivors.
func TestClusterLeaderKillClientsRideFailover(t *testing.T) {
	nodes, _ := startCluster(t, 3)
	ctx := context.Background()
	li, leader := leaderOf(t, nodes)
	var addrs []string
	var survivors []*node
	for i, n := range nodes {
		if i != li {
			addrs = append(addrs, n.url)
			survivors = append(survivors, n)
		}
	}
	addrs = append(addrs, leader.url) // the leader last: the address that dies
	tok := nodes[0].token
	// Generous: this machine is shared; the default is 10 s.
	const retry = 30 * time.Second
	gc, err := client.New(client.Config{Addresses: addrs, CACert: nodes[0].caFile, Token: tok, Timeout: 20 * time.Second, RetryTimeout: retry})
	if err != nil {
		t.Fatal(err)
	}
	env := []string{"COFFER_ADDR=" + strings.Join(addrs, ","), "COFFER_TOKEN=" + tok, "COFFER_CACERT=" + nodes[0].caFile,
		"COFFER_RETRY_TIMEOUT=" + retry.String(), "COFFER_DATA_DIR=", "COFFER_CLIENT_DIR=", "COFFER_TOKEN_FILE=/nonexistent"}

	goLog := &writeLog{acked: map[string]string{}}
	cliLog := &writeLog{acked: map[string]string{}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			k, v := fmt.Sprintf("go-%d", i), fmt.Sprintf("v-go-%d", i)
			_, err := gc.PutSecret(ctx, "default", k, []byte(v))
			goLog.note(k, v, client.IsOutcomeUnknown(err), err)
		}
	}()
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			k, v := fmt.Sprintf("cli-%d", i), fmt.Sprintf("v-cli-%d", i)
			out, err := coffer(t, env, "secret", "put", k, "--value", v)
			var ee *exec.ExitError
			unknown := errors.As(err, &ee) && ee.ExitCode() == cli.ExitOutcomeUnknown
			if err != nil {
				err = fmt.Errorf("%w: %s", err, strings.TrimSpace(out))
			}
			cliLog.note(k, v, unknown, err)
		}
	}()
	halt := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer halt()

	waitUntil(t, 60*time.Second, func() bool { return goLog.count() >= 5 && cliLog.count() >= 3 }, "writes before the kill")
	goBefore, cliBefore := goLog.count(), cliLog.count()
	leader.kill9()
	t.Logf("killed the leader %s after %d Go and %d CLI writes", leader.url, goBefore, cliBefore)
	waitUntil(t, 90*time.Second, func() bool {
		return goLog.count() >= goBefore+20 && cliLog.count() >= cliBefore+5
	}, "writes after the kill")
	halt()

	for name, l := range map[string]*writeLog{"Go client": goLog, "CLI": cliLog} {
		l.mu.Lock()
		t.Logf("%s: %d acknowledged, %d outcome unknown %v", name, len(l.acked), len(l.unknown), l.unknown)
		if len(l.failed) > 0 {
			t.Errorf("%s: %d writes failed (not outcome unknown): %v", name, len(l.failed), l.failed)
		}
		l.mu.Unlock()
	}
	// Every acknowledged write is on both survivors.
	for _, n := range survivors {
		c := withToken(t, n, tok)
		waitUntil(t, 30*time.Second, func() bool {
			for _, l := range []*writeLog{goLog, cliLog} {
				for k, v := range l.acked {
					s, err := c.GetSecret(ctx, "default", k, 0)
					if err != nil || string(s.Value) != v {
						return false
					}
				}
			}
			return true
		}, "every acknowledged write on "+n.url)
	}
}
