package bench

// The bare TLS peer of BenchmarkPeerTLSFixed in a process of its own, as
// Coffer's server is when `coffer bench` measures it: on a small machine a
// round trip between two processes costs more than one inside a process
// (each side's thread is woken by the kernel), which the in-process peer
// does not pay. This benchmark measures what a bare server in its own
// process reaches with the same client (docs/performance.md).

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// peerServeEnv names the file of the answer a test binary started with it
// serves (servePeer) instead of running tests.
const peerServeEnv = "COFFER_BENCH_PEER_SERVE"

func TestMain(m *testing.M) {
	if f := os.Getenv(peerServeEnv); f != "" {
		servePeer(f)
		return
	}
	os.Exit(m.Run())
}

// servePeer serves the answer in file over TLS (httptest's certificate,
// which the parent's httptest clients trust), prints its URL and serves
// until its standard input closes (the parent has gone or is done).
func servePeer(file string) {
	body, err := os.ReadFile(file) // #nosec G304 -- the benchmark's own temporary file
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	peer := httptest.NewTLSServer(fixedAnswer(body))
	fmt.Println(peer.URL)
	io.Copy(io.Discard, os.Stdin) // #nosec G104 -- any end of stdin stops the peer
	peer.Close()
}

// fixedAnswer answers every request that has a token with body, as
// BenchmarkPeerTLSFixed's peer does.
func fixedAnswer(body []byte) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Vault-Token") == "" {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
		w.Write(body) // #nosec G104 -- a load peer: a failed write is a client that has gone
	})
}

// BenchmarkPeerTLSFixedProcess is BenchmarkPeerTLSFixed with the peer in a
// process of its own (this test binary started again, serving the same
// bytes).
func BenchmarkPeerTLSFixedProcess(b *testing.B) {
	srv, tok := cofferVault(b)
	c := tlsClient(srv)
	body := referenceAnswer(b, srv, tok)
	file := filepath.Join(b.TempDir(), "answer")
	if err := os.WriteFile(file, body, 0o600); err != nil {
		b.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$") // #nosec G204 -- this test binary, started again as the peer
	cmd.Env = append(os.Environ(), peerServeEnv+"="+file)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	url := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		url <- strings.TrimSpace(line)
	}()
	var peerURL string
	select {
	case peerURL = <-url:
	case <-time.After(30 * time.Second):
		b.Fatal("the peer process did not print its URL within 30 s")
	}
	if !strings.HasPrefix(peerURL, "https://127.0.0.1:") {
		b.Fatalf("the peer process printed %q", peerURL)
	}
	readLoop(b, c, peerURL+kvPath, tok, len(body))
}
