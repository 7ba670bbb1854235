package client

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func apiError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

// notLeaderFor answers the first n writes with 503 not_leader (a leader
// election in progress), then accepts them; it counts writes.
func notLeaderFor(n int32, hits *atomic.Int32) *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if hits.Add(1) <= n {
			apiError(w, 503, "not_leader", "the leader is changing: not applied; send it again")
			return
		}
		writeJSON(w, 200, map[string]any{"name": "k", "version": 1})
	}))
}

// TestWriteRidesFailoverWithDeadLeaderLast: the old leader (last address)
// refuses connections and the others refuse writes until one is elected;
// the write goes round the addresses until it is taken.
func TestWriteRidesFailoverWithDeadLeaderLast(t *testing.T) {
	var a, b atomic.Int32
	srvA, srvB := notLeaderFor(3, &a), notLeaderFor(1<<30, &b)
	defer srvA.Close()
	defer srvB.Close()
	c, err := New(Config{Addresses: []string{srvA.URL, srvB.URL, deadAddress(t)}, Timeout: 5 * time.Second, RetryTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.PutSecret(context.Background(), "default", "k", []byte("v")); err != nil {
		t.Fatalf("write during a failover: %v", err)
	}
	if a.Load() != 4 || b.Load() != 3 {
		t.Fatalf("writes seen: first %d (want 4: three refused, one taken), second %d (want 3)", a.Load(), b.Load())
	}
}

// TestWriteMovesOnFromRefusingNode: a node that refused a write before
// doing anything (sealed, stopping) leaves it to the next address.
func TestWriteMovesOnFromRefusingNode(t *testing.T) {
	for _, code := range []string{"sealed", "stopping", "uninitialized"} {
		var first atomic.Int32
		refusing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			first.Add(1)
			apiError(w, 503, code, "refused")
		}))
		var b atomic.Int32
		good := notLeaderFor(0, &b)
		c, err := New(Config{Addresses: []string{refusing.URL, good.URL}, Timeout: 5 * time.Second, RetryTimeout: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.PutSecret(context.Background(), "default", "k", []byte("v")); err != nil || first.Load() != 1 || b.Load() != 1 {
			t.Errorf("%s: %v (first saw %d, second %d; want 1 and 1)", code, err, first.Load(), b.Load())
		}
		refusing.Close()
		good.Close()
	}
}

// TestWriteGivesUpAtRetryTimeout: when no node takes the write within the
// retry timeout, the error names every address and its last answer.
func TestWriteGivesUpAtRetryTimeout(t *testing.T) {
	var a atomic.Int32
	srvA := notLeaderFor(1<<30, &a)
	defer srvA.Close()
	dead := deadAddress(t)
	c, err := New(Config{Addresses: []string{srvA.URL, dead}, Timeout: 5 * time.Second, RetryTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.PutSecret(context.Background(), "default", "k", []byte("v"))
	if err == nil || !IsCode(err, "not_leader") || IsOutcomeUnknown(err) {
		t.Fatalf("want not_leader (not applied), got %v", err)
	}
	for _, want := range []string{srvA.URL, dead, "connection refused", "no server took the request"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q: %v", want, err)
		}
	}
	if a.Load() < 2 {
		t.Fatalf("first address tried %d times; want more than one round", a.Load())
	}
}

// TestOutcomeUnknownIsNeverRetried: a write that reached a server and got
// no answer (connection dropped, timed out) or an explicit
// outcome_unknown is reported as ErrOutcomeUnknown and never sent to
// another address.
func TestOutcomeUnknownIsNeverRetried(t *testing.T) {
	cases := map[string]http.HandlerFunc{
		"connection dropped": func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
		},
		"no answer in time": func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			<-r.Context().Done() // the client gives up
		},
		"outcome_unknown answer": func(w http.ResponseWriter, r *http.Request) {
			apiError(w, 503, "outcome_unknown", "outcome unknown: the write may or may not have been applied: the leadership was lost while this write was being committed")
		},
	}
	for name, h := range cases {
		t.Run(name, func(t *testing.T) {
			first := httptest.NewServer(h)
			defer first.Close()
			var second atomic.Int32
			other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				second.Add(1)
				writeJSON(w, 200, map[string]any{})
			}))
			defer other.Close()
			c, err := New(Config{Addresses: []string{first.URL, other.URL}, Timeout: 500 * time.Millisecond, RetryTimeout: time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.PutSecret(context.Background(), "default", "k", []byte("v"))
			if !errors.Is(err, ErrOutcomeUnknown) || !IsOutcomeUnknown(err) {
				t.Fatalf("want outcome unknown, got %v", err)
			}
			if !strings.Contains(err.Error(), "may or may not") {
				t.Errorf("error does not say what it means: %v", err)
			}
			if second.Load() != 0 {
				t.Fatalf("the write was sent again elsewhere (%d times)", second.Load())
			}
		})
	}
}

// TestReadsGoElsewhere: a read that times out or gets a 503 is asked of
// the next address; a node's sealed state is not waited on.
func TestReadsGoElsewhere(t *testing.T) {
	good := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, map[string]any{"kind": "root", "name": "root"})
	}))
	defer good.Close()
	for name, h := range map[string]http.HandlerFunc{
		"timeout":     func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() },
		"unavailable": func(w http.ResponseWriter, r *http.Request) { apiError(w, 503, "unavailable", "no leader") },
		"outcome":     func(w http.ResponseWriter, r *http.Request) { apiError(w, 503, "outcome_unknown", "x") },
	} {
		bad := httptest.NewServer(h)
		c, err := New(Config{Addresses: []string{bad.URL, good.URL}, Timeout: 300 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if who, err := c.WhoAmI(context.Background()); err != nil || who.Kind != "root" {
			t.Errorf("%s: read did not go to the next address: %+v %v", name, who, err)
		}
		bad.Close()
	}

	var hits atomic.Int32
	sealed := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		apiError(w, 503, "sealed", "keystore is sealed")
	}))
	defer sealed.Close()
	c, err := New(Config{Addresses: []string{sealed.URL}, Timeout: time.Second, RetryTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WhoAmI(context.Background()); !IsCode(err, "sealed") || hits.Load() != 1 {
		t.Fatalf("sealed node: got %v after %d requests, want sealed after 1", err, hits.Load())
	}
}

func TestRetryTimeoutFromEnv(t *testing.T) {
	t.Setenv(EnvAddr, "https://a:1")
	t.Setenv(EnvRetryTimeout, "2m")
	if cfg := FromEnv(); cfg.RetryTimeout != 2*time.Minute {
		t.Fatalf("retry timeout %s, want 2m", cfg.RetryTimeout)
	}
	for _, bad := range []string{"soon", "0s", "-1s"} {
		t.Setenv(EnvRetryTimeout, bad)
		if _, err := New(FromEnv()); err == nil || !strings.Contains(err.Error(), EnvRetryTimeout) || !strings.Contains(err.Error(), bad) {
			t.Errorf("%s=%q: got %v, want an error naming it", EnvRetryTimeout, bad, err)
		}
	}
}
