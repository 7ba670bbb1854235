package cli

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
)

type benchOptions struct {
	op       string
	workers  int
	duration time.Duration
	size     int
	keys     int
}

func newBenchCmd(g *globals) *cobra.Command {
	o := &benchOptions{}
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Generate load against a server and report throughput and latency",
		Long: `Run a bounded load against a server (writes: secret put; reads: secret get)
with N concurrent workers for a fixed duration, then print operations per
second and latency percentiles. Use it against a server on this machine.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			if o.op != "put" && o.op != "get" {
				return fmt.Errorf("--op %q: use put or get", o.op)
			}
			val := make([]byte, o.size)
			for i := range val {
				val[i] = byte('a' + i%26)
			}
			if o.op == "get" {
				ctx, cancel := g.ctx()
				for i := 0; i < o.keys; i++ {
					if _, err := c.PutSecret(ctx, fmt.Sprintf("bench-%d", i), val); err != nil {
						cancel()
						return fmt.Errorf("prepare keys: %w", err)
					}
				}
				cancel()
			}
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
						name := fmt.Sprintf("bench-%d", (w*7919+i)%max(o.keys, 1))
						if o.op == "put" {
							_, err = c.PutSecret(ctx, name, val)
						} else {
							_, err = c.GetSecret(ctx, name, 0)
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
				"p50_ms":      float64(pct(0.5).Microseconds()) / 1000, "p99_ms": float64(pct(0.99).Microseconds()) / 1000,
			}
			if e := firstErr.Load(); e != nil {
				out["first_error"] = e
			}
			if g.format == "json" {
				return g.printJSON(cmd, out)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s x%d: %.0f ops/s, p50 %.2f ms, p99 %.2f ms, %d errors\n",
				o.op, o.workers, out["ops_per_sec"], out["p50_ms"], out["p99_ms"], errs.Load())
			return nil
		},
	}
	cmd.Flags().StringVar(&o.op, "op", "put", "operation: put or get")
	cmd.Flags().IntVar(&o.workers, "workers", 8, "concurrent workers")
	cmd.Flags().DurationVar(&o.duration, "duration", 10*time.Second, "how long to run")
	cmd.Flags().IntVar(&o.size, "size", 32, "value size in bytes")
	cmd.Flags().IntVar(&o.keys, "keys", 1000, "number of distinct secret names")
	return cmd
}
