package cli

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/coffer-kms/coffer/client"
)

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// benchResult is one measured run: operations, errors and latencies.
type benchResult struct {
	elapsed  time.Duration
	ops      int64
	errs     int64
	lat      []time.Duration // sorted
	firstErr string
}

// runLoad runs op with workers goroutines for d; op gets the worker and its
// iteration number. Only operations that finish before d ends count.
func runLoad(workers int, d time.Duration, op func(ctx context.Context, w, i int) error) benchResult {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var ops, errs atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	var wg sync.WaitGroup
	var firstErr atomic.Value
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			var mine []time.Duration
			for i := 0; ctx.Err() == nil; i++ {
				t := time.Now()
				err := op(ctx, w, i)
				if ctx.Err() != nil {
					break
				}
				if err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				ops.Add(1)
				mine = append(mine, time.Since(t))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}(w)
	}
	wg.Wait()
	r := benchResult{elapsed: time.Since(start), ops: ops.Load(), errs: errs.Load(), lat: lat}
	slices.Sort(r.lat)
	if e := firstErr.Load(); e != nil {
		r.firstErr = e.(string)
	}
	return r
}

func (r benchResult) pct(p float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	return r.lat[int(float64(len(r.lat)-1)*p)]
}

func (r benchResult) rate() float64 { return float64(r.ops) / r.elapsed.Seconds() }

func (r benchResult) fields(op string, workers int) map[string]any {
	out := map[string]any{
		"op": op, "workers": workers, "seconds": r.elapsed.Seconds(), "ops": r.ops, "errors": r.errs,
		"ops_per_sec": r.rate(),
		"p50_ms":      ms(r.pct(0.5)), "p90_ms": ms(r.pct(0.9)), "p99_ms": ms(r.pct(0.99)), "p999_ms": ms(r.pct(0.999)), "max_ms": ms(r.pct(1)),
	}
	if r.firstErr != "" {
		out["first_error"] = r.firstErr
	}
	return out
}

func (r benchResult) line(label string, workers int) string {
	s := fmt.Sprintf("%s x%d: %.0f ops/s, p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, p99.9 %.2f ms, max %.2f ms, %d errors\n",
		label, workers, r.rate(), ms(r.pct(0.5)), ms(r.pct(0.9)), ms(r.pct(0.99)), ms(r.pct(0.999)), ms(r.pct(1)), r.errs)
	if r.firstErr != "" {
		s += fmt.Sprintf("first error: %s\n", r.firstErr)
	}
	return s
}

// printBench prints Coffer's result and, with a peer run, the peer's and
// the ratio of the two rates.
func printBench(cmd *cobra.Command, g *globals, o *benchOptions, res benchResult, peer *benchResult) error {
	out := res.fields(o.op, o.workers)
	var ratio float64
	if peer != nil {
		if peer.rate() > 0 {
			ratio = res.rate() / peer.rate()
		}
		out["peer"] = peer.fields("peer-fixed "+o.op, o.workers)
		out["ratio"] = ratio
	}
	if g.format == "json" {
		return g.printJSON(cmd, out)
	}
	fmt.Fprint(cmd.OutOrStdout(), res.line(o.op, o.workers))
	if peer != nil {
		fmt.Fprint(cmd.OutOrStdout(), peer.line("peer-fixed "+o.op, o.workers))
		fmt.Fprintf(cmd.OutOrStdout(), "ratio coffer/peer: %.2f\n", ratio)
	}
	return nil
}

type benchOptions struct {
	op        string
	workers   int
	duration  time.Duration
	size      int
	keys      int
	wallet    string
	mount     string
	peerFixed bool
	kmipAddr  string
}

var benchOps = []string{"put", "get", "create", "get-by-name", "vault-read", "vault-write", "transit-encrypt", "kmip-get"}

func newBenchCmd(g *globals) *cobra.Command {
	o := &benchOptions{}
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Generate load against a server and report throughput and latency",
		Long: `Run a bounded load against a server with --concurrency N workers for
--duration, then print operations per second and latency percentiles.
Operations (--op):
  put          write a new version of one of --keys secrets (secret put)
  get          read the latest version of one of --keys secrets (secret get)
  create       create a new AES-256 key per operation (key create); the keys
               stay: use a scratch wallet (--wallet) on a test server
  get-by-name  read one of --keys AES keys by wallet and name, with material
               (GET /api/v1/wallets/W/objects/NAME)
  vault-read   Vault KV v2 read of one of --keys keys (GET /v1/MOUNT/data/K)
  vault-write  Vault KV v2 write of a new key per operation
  transit-encrypt  Vault transit encryption of --size bytes with key "bench"
  kmip-get     KMIP Get of one AES-256 key (mutual TLS with the enrolled
               endpoint's certificate, --kmip-address, default port 5696)
get and get-by-name first create the --keys objects they read (existing
ones are reused); the Vault operations create their mount (--mount) in
--wallet and what they read. Connections are kept alive and reused (HTTPS
or the control socket; one HTTP/1.1 connection per worker for the Vault
operations, one TLS connection per worker for KMIP).
--peer-fixed (Vault operations and kmip-get, https) then runs the same load
against an in-process bare TLS server that answers every request with the
bytes the server answered to the same request, and prints both figures and
their ratio: the ceiling of this machine and client for those bytes. Use it
against a server on this machine.`,
		Example: `  coffer bench --op get-by-name --concurrency 32 --duration 30s
  coffer bench --op create --wallet bench --concurrency 8
  coffer bench --op vault-read --concurrency 32 --peer-fixed`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cn, err := g.resolve()
			if err != nil {
				return err
			}
			if !slices.Contains(benchOps, o.op) {
				return fmt.Errorf("--op %q: use %s", o.op, strings.Join(benchOps, ", "))
			}
			if o.workers < 1 || o.keys < 1 {
				return fmt.Errorf("--concurrency and --keys must be at least 1")
			}
			val := make([]byte, o.size)
			for i := range val {
				val[i] = byte('a' + i%26)
			}
			switch {
			case slices.Contains(vaultOps, o.op):
				res, peer, err := runVaultBench(g, cn.cfg, o, val)
				if err != nil {
					return err
				}
				return printBench(cmd, g, o, res, peer)
			case o.op == "kmip-get":
				res, peer, err := runKMIPBench(g, cn.cfg, o)
				if err != nil {
					return err
				}
				return printBench(cmd, g, o, res, peer)
			case o.peerFixed:
				return fmt.Errorf("--peer-fixed goes with --op %s or kmip-get", strings.Join(vaultOps, ", "))
			}
			cn.cfg.MaxIdleConns = max(o.workers, 64) // every worker keeps its connection alive
			c, err := client.New(cn.cfg)
			if err != nil {
				return err
			}
			switch o.op {
			case "get":
				ctx, cancel := g.ctx()
				for i := 0; i < o.keys; i++ {
					if _, err := c.PutSecret(ctx, o.wallet, fmt.Sprintf("bench-%d", i), val); err != nil {
						cancel()
						return fmt.Errorf("prepare keys: %w", err)
					}
				}
				cancel()
			case "get-by-name":
				ctx, cancel := g.ctx()
				for i := 0; i < o.keys; i++ {
					_, err := c.CreateObject(ctx, client.CreateObjectRequest{Wallet: o.wallet, Name: fmt.Sprintf("bench-key-%d", i), Type: client.TypeSymmetricKey})
					if err != nil && !client.IsCode(err, "conflict") {
						cancel()
						return fmt.Errorf("prepare keys: %w", err)
					}
				}
				cancel()
			}
			run := fmt.Sprintf("%x", time.Now().UnixNano())
			res := runLoad(o.workers, o.duration, func(ctx context.Context, w, i int) error {
				var err error
				name := fmt.Sprintf("bench-%d", (w*7919+i)%o.keys)
				switch o.op {
				case "put":
					_, err = c.PutSecret(ctx, o.wallet, name, val)
				case "get":
					_, err = c.GetSecret(ctx, o.wallet, name, 0)
				case "create":
					_, err = c.CreateObject(ctx, client.CreateObjectRequest{Wallet: o.wallet,
						Name: fmt.Sprintf("bench-%s/%d-%d", run, w, i), Type: client.TypeSymmetricKey, Algorithm: "AES", Length: 256})
				case "get-by-name":
					_, err = c.GetObjectByName(ctx, o.wallet, fmt.Sprintf("bench-key-%d", (w*7919+i)%o.keys), 0)
				}
				return err
			})
			return printBench(cmd, g, o, res, nil)
		},
	}
	cmd.Flags().StringVar(&o.op, "op", "put", "operation: "+strings.Join(benchOps, ", "))
	cmd.Flags().StringVar(&o.mount, "mount", "", "Vault-compatible mount of vault-read and vault-write (default secret, a KV v2 mount) or transit-encrypt (default transit); created in --wallet if missing")
	cmd.Flags().BoolVar(&o.peerFixed, "peer-fixed", false, "then run the same load against an in-process bare TLS server answering the bytes the server answered to the same request, and print the ratio")
	cmd.Flags().StringVar(&o.kmipAddr, "kmip-address", "", "KMIP listener host:port of kmip-get (default: the server's host, port 5696)")
	cmd.Flags().IntVarP(&o.workers, "concurrency", "c", 8, "concurrent workers")
	cmd.Flags().IntVar(&o.workers, "workers", 8, "concurrent workers")
	cmd.Flags().MarkDeprecated("workers", "use --concurrency") // #nosec G104 -- fails only for a flag name not defined, and the flag is defined on the line above
	cmd.Flags().StringVarP(&o.wallet, "wallet", "w", defaultWallet, "wallet to read and write in")
	cmd.RegisterFlagCompletionFunc("op", fixedCompletion(benchOps...))
	cmd.Flags().DurationVar(&o.duration, "duration", 10*time.Second, "how long to run")
	cmd.Flags().IntVar(&o.size, "size", 32, "value size in bytes")
	cmd.Flags().IntVar(&o.keys, "keys", 1000, "number of distinct names read or written (put, get, get-by-name)")
	return cmd
}
