package cli

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/coffer-kms/coffer/client"
)

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

type benchOptions struct {
	op       string
	workers  int
	duration time.Duration
	size     int
	keys     int
	wallet   string
}

var benchOps = []string{"put", "get", "create", "get-by-name"}

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
get and get-by-name first create the --keys objects they read (existing
ones are reused). Connections are kept alive and reused (HTTPS or the
control socket). Use it against a server on this machine.`,
		Example: `  coffer bench --op get-by-name --concurrency 32 --duration 30s
  coffer bench --op create --wallet bench --concurrency 8`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cn, err := g.resolve()
			if err != nil {
				return err
			}
			cn.cfg.MaxIdleConns = max(o.workers, 64) // every worker keeps its connection alive
			c, err := client.New(cn.cfg)
			if err != nil {
				return err
			}
			if !slices.Contains(benchOps, o.op) {
				return fmt.Errorf("--op %q: use put, get, create or get-by-name", o.op)
			}
			if o.workers < 1 || o.keys < 1 {
				return fmt.Errorf("--concurrency and --keys must be at least 1")
			}
			val := make([]byte, o.size)
			for i := range val {
				val[i] = byte('a' + i%26)
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
			ctx, cancel := context.WithTimeout(context.Background(), o.duration)
			defer cancel()
			var ops, errs atomic.Int64
			var mu sync.Mutex
			var lat []time.Duration
			var wg sync.WaitGroup
			var firstErr atomic.Value
			start := time.Now()
			for w := 0; w < o.workers; w++ {
				wg.Add(1)
				go func(w int) {
					defer wg.Done()
					var mine []time.Duration
					for i := 0; ctx.Err() == nil; i++ {
						t := time.Now()
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
			el := time.Since(start)
			slices.Sort(lat)
			pct := func(p float64) time.Duration {
				if len(lat) == 0 {
					return 0
				}
				return lat[int(float64(len(lat)-1)*p)]
			}
			out := map[string]any{
				"op": o.op, "workers": o.workers, "seconds": el.Seconds(), "ops": ops.Load(), "errors": errs.Load(),
				"ops_per_sec": float64(ops.Load()) / el.Seconds(),
				"p50_ms":      ms(pct(0.5)), "p90_ms": ms(pct(0.9)), "p99_ms": ms(pct(0.99)), "p999_ms": ms(pct(0.999)), "max_ms": ms(pct(1)),
			}
			if e := firstErr.Load(); e != nil {
				out["first_error"] = e
			}
			if g.format == "json" {
				return g.printJSON(cmd, out)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s x%d: %.0f ops/s, p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, p99.9 %.2f ms, max %.2f ms, %d errors\n",
				o.op, o.workers, out["ops_per_sec"], out["p50_ms"], out["p90_ms"], out["p99_ms"], out["p999_ms"], out["max_ms"], errs.Load())
			if e := firstErr.Load(); e != nil {
				fmt.Fprintf(cmd.OutOrStdout(), "first error: %s\n", e)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&o.op, "op", "put", "operation: put, get, create or get-by-name")
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
