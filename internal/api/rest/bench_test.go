package rest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/coffer-kms/coffer/internal/service"
)

// benchHTTPS runs b.N requests from `workers` goroutines sharing one
// keep-alive HTTPS client against a real service (fsync'ed state and raft).
func benchHTTPS(b *testing.B, workers int, req func(i int64) (*http.Request, int)) {
	var n atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := n.Add(1)
				if i > int64(b.N) {
					return
				}
				r, want := req(i)
				resp, err := benchClient.Do(r)
				if err != nil {
					b.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != want {
					b.Errorf("status %d, want %d", resp.StatusCode, want)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
}

var benchClient *http.Client

func benchServer(b *testing.B) (*httptest.Server, string, *service.Service) {
	h, svc, tok := newServiceWith(b)
	srv := httptest.NewTLSServer(h)
	b.Cleanup(srv.Close)
	c := srv.Client()
	c.Transport.(*http.Transport).MaxIdleConnsPerHost = 128
	benchClient = c
	return srv, tok, svc
}

// BenchmarkHTTPSGetByName: an endpoint's everyday read, GET
// /api/v1/wallets/{w}/objects/{name}, over TLS with keep-alive.
func BenchmarkHTTPSGetByName(b *testing.B) {
	srv, tok, svc := benchServer(b)
	ctx := service.WithIdentity(context.Background(), service.LocalRoot())
	for i := 0; i < 100; i++ {
		if _, err := svc.Objects.CreateObject(ctx, service.CreateObject{Wallet: "default", Name: fmt.Sprintf("k%d", i), Type: service.TypeSymmetricKey}); err != nil {
			b.Fatal(err)
		}
	}
	for _, c := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("c=%d", c), func(b *testing.B) {
			benchHTTPS(b, c, func(i int64) (*http.Request, int) {
				r, _ := http.NewRequest("GET", fmt.Sprintf("%s/api/v1/wallets/default/objects/k%d", srv.URL, i%100), nil)
				r.Header.Set("Authorization", "Bearer "+tok)
				return r, 200
			})
		})
	}
}

// BenchmarkHTTPSCreate: POST /api/v1/objects creating AES-256 keys (each a
// replicated, fsync'ed write).
func BenchmarkHTTPSCreate(b *testing.B) {
	srv, tok, _ := benchServer(b)
	var run atomic.Int64
	for _, c := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("c=%d", c), func(b *testing.B) {
			r := run.Add(1)
			benchHTTPS(b, c, func(i int64) (*http.Request, int) {
				body := fmt.Sprintf(`{"wallet":"default","name":"b%d-%d","type":"symmetric_key"}`, r, i)
				req, _ := http.NewRequest("POST", srv.URL+"/api/v1/objects", strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+tok)
				return req, 201
			})
		})
	}
}
