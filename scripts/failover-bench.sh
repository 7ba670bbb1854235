#!/usr/bin/env bash
# Failover time distribution of a 3-node cluster on 127.0.0.x: BenchmarkFailover
# (test/e2e/failover_bench_test.go) kills -9 the leader N times (default 20)
# while four clients write, and measures each time from the kill to the first
# acknowledged write sent after it; the killed node is restarted and caught
# up before the next kill. The tests configure cluster.failover_threshold:
# 1.5s (the default is 3s).
#
# Usage: scripts/failover-bench.sh [N]
# Needs: Go (the version in go.mod). Installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-20}
case "$n" in ''|*[!0-9]*) echo "usage: $0 [N]" >&2; exit 2 ;; esac
out=$(mktemp)
trap 'rm -f "$out"' EXIT
echo "machine: $(nproc) cores, $(go version | cut -d' ' -f3); go test -run '^\$' -bench BenchmarkFailover -benchtime ${n}x ./test/e2e"
go test -count=1 -run '^$' -bench '^BenchmarkFailover$' -benchtime "${n}x" -timeout 60m ./test/e2e | tee "$out"
metric() { awk -v m="$1" '$1 ~ /^BenchmarkFailover/ {for (i=2;i<=NF;i++) if ($i==m) v=$(i-1)} END {print v}' "$out"; }
echo
echo "failover time over ${n} leader kills (kill -9 → first acknowledged write sent after it):"
printf '  p50 %s ms, p90 %s ms, max %s ms\n' "$(metric failover-p50-ms)" "$(metric failover-p90-ms)" "$(metric failover-max-ms)"
grep -o 'failover times (ms, sorted.*' "$out" | tail -1 | sed 's/^/  /'
printf '  configured failover threshold: %s ms (cluster.failover_threshold in the tests; default 3000 ms)\n' "$(metric threshold-ms)"
