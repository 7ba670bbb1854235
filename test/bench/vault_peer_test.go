package bench

// Vault-compatible KV read throughput over TLS against its ceiling on this
// machine: a bare Go TLS server (net/http, same TLS stack and client) that
// returns a fixed response of the same size and headers. Same client, same
// concurrency, keep-alive connections. scripts/bench.sh prints the ratio.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/coffer-kms/coffer/internal/api/vault"
	"github.com/coffer-kms/coffer/internal/service"
	"github.com/coffer-kms/coffer/internal/service/servicetest"
)

// vaultReadConcurrency is the number of concurrent clients of the Vault
// read benchmarks: 8, or COFFER_BENCH_CLIENTS.
var vaultReadConcurrency = benchClients()

func benchClients() int {
	if n, err := strconv.Atoi(os.Getenv("COFFER_BENCH_CLIENTS")); err == nil && n > 0 {
		return n
	}
	return 8
}

const kvPath = "/v1/kv/data/1"

// cofferVault is a service with KV mount "kv" holding key 1 (a 256-bit key
// as 64 hex characters, what MariaDB reads), behind the Vault handler over
// TLS, and the token of an endpoint with read on it.
func cofferVault(b *testing.B) (*httptest.Server, string) {
	b.Helper()
	svc, tok := cofferVaultService(b)
	srv := httptest.NewTLSServer(vault.Handler(svc, vault.Options{}))
	b.Cleanup(srv.Close)
	return srv, tok
}

// cofferVaultService is the service behind cofferVault and the token.
func cofferVaultService(b *testing.B) (*service.Service, string) {
	b.Helper()
	svc := servicetest.New(b)
	if _, err := svc.Init(context.Background(), service.Identity{Local: true}, []byte("bench-passphrase")); err != nil {
		b.Fatal(err)
	}
	ctx := service.WithIdentity(context.Background(), service.LocalRoot())
	if _, err := svc.Access.CreateWallet(ctx, "db", ""); err != nil {
		b.Fatal(err)
	}
	if _, err := svc.Objects.CreateMount(ctx, service.Mount{Path: "kv", Type: service.MountKV, Wallet: "db"}); err != nil {
		b.Fatal(err)
	}
	if _, err := svc.Objects.KVPut(ctx, "db", "1", []byte(`{"data":"`+strings.Repeat("5a", 32)+`"}`), nil); err != nil {
		b.Fatal(err)
	}
	e, err := svc.Access.EnrollEndpoint(ctx, "mariadb", "", nil)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := svc.Access.SetGrant(ctx, "db", "mariadb", service.PermRead); err != nil {
		b.Fatal(err)
	}
	return svc, e.Token
}

// tlsClient is the client both benchmarks use: keep-alive, one idle
// connection per concurrent reader.
func tlsClient(srv *httptest.Server) *http.Client {
	c := srv.Client()
	tr := c.Transport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = vaultReadConcurrency
	tr.MaxConnsPerHost = vaultReadConcurrency
	c.Transport = tr
	return c
}

// readLoop runs b.N GETs of url with vaultReadConcurrency goroutines and
// checks that every answer is 200 with the expected length.
func readLoop(b *testing.B, c *http.Client, url, token string, wantLen int) {
	b.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	b.ResetTimer()
	for w := 0; w < vaultReadConcurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				req, _ := http.NewRequest("GET", url, nil)
				req.Header.Set("X-Vault-Token", token)
				res, err := c.Do(req)
				if err != nil {
					failed.Store(err.Error())
					return
				}
				n, _ := io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode != 200 || (wantLen > 0 && int(n) != wantLen) {
					failed.Store(fmt.Sprintf("status %d, %d bytes", res.StatusCode, n))
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	if f := failed.Load(); f != nil {
		b.Fatal(f)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "reads/s")
}

// BenchmarkVaultKVRead: MariaDB's key fetch (GET /v1/kv/data/1 with an
// endpoint token) against Coffer's Vault-compatible API over TLS: token
// check, wallet permission, decryption, JSON, audit record.
func BenchmarkVaultKVRead(b *testing.B) {
	srv, tok := cofferVault(b)
	readLoop(b, tlsClient(srv), srv.URL+kvPath, tok, 0)
}

// BenchmarkPeerTLSFixed: the ceiling: a bare Go TLS server answering the
// same bytes and headers Coffer answers for the same request.
func BenchmarkPeerTLSFixed(b *testing.B) {
	srv, tok := cofferVault(b)
	body := referenceAnswer(b, srv, tok)
	peer := httptest.NewTLSServer(fixedAnswer(body))
	defer peer.Close()
	readLoop(b, tlsClient(peer), peer.URL+kvPath, tok, len(body))
}

// referenceAnswer is Coffer's answer to the KV read both peers repeat.
func referenceAnswer(b *testing.B, srv *httptest.Server, tok string) []byte {
	b.Helper()
	req, _ := http.NewRequest("GET", srv.URL+kvPath, nil)
	req.Header.Set("X-Vault-Token", tok)
	res, err := tlsClient(srv).Do(req)
	if err != nil {
		b.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(string(body), `"version":1`) {
		b.Fatalf("reference response: %d %s", res.StatusCode, body)
	}
	return body
}
