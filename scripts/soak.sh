#!/usr/bin/env bash
# Soak test of the cluster (not run in CI): RUNS randomized fault schedules
# (default 100), each against a fresh 3-node cluster on 127.0.0.x whose raft
# links go through fault-injection proxies. In each, three clients write and
# read (linearizable reads) while 2 to 4 faults happen: kill -9 of the leader
# or a follower and restart, a node cut off and healed, a switchover.
# Afterwards every acknowledged write must be on every node and the history
# must be linearizable (porcupine). Prints a line per run and a summary: lost
# acknowledged writes, linearizability violations, failover times (count,
# p50, p90, max). Exits non-zero if a write was lost or the history is not
# linearizable. About 10-20 s per run on 2 cores.
#
# Usage: scripts/soak.sh [RUNS]          (COFFER_SOAK_SEED=N replays schedules)
# Needs: Go (the version in go.mod). Installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-100}
case "$runs" in ''|*[!0-9]*) echo "usage: $0 [RUNS]" >&2; exit 2 ;; esac
log=${COFFER_SOAK_LOG:-$(mktemp -t coffer-soak.XXXXXX.log)}
echo "soak: $runs runs on $(nproc) cores, $(go version | cut -d' ' -f3); full log: $log"
# A run takes under a minute; allow 2 minutes each, at least 3 h in all.
timeout=$(( runs * 2 > 180 ? runs * 2 : 180 ))m
set +e
COFFER_SOAK_RUNS=$runs go test -v -count=1 -tags soak ./test/e2e -run '^TestClusterSoak$' -timeout "$timeout" >"$log" 2>&1
rc=$?
set -e
grep -E 'SOAK run |^--- FAIL|^    --- FAIL' "$log" | sed -e 's/^ *soak_test.go:[0-9]*: //' || true
echo
sed -n '/SOAK SUMMARY/,/switchover errors/p' "$log" | sed -e 's/^ *soak_test.go:[0-9]*: //'
if [ $rc -ne 0 ]; then
  echo "soak: FAILED (exit $rc); see $log"
fi
exit $rc
