#!/usr/bin/env bash
# Install what the tests need and run every test. CI (.ci/run) calls this.
# Needs: Go (the version in go.mod) and root for the disk-full test (it mounts
# a small tmpfs). Under CI=true a missing component is a failure, never a skip.
#
# Every suite runs even when an earlier one fails; the failures are listed at
# the end and the exit code is non-zero if any failed.
#
# COFFER_TEST_LOAD=N runs the whole script beside a CPU hog (`stress --cpu N`,
# stopped by its process id at exit): the suite must pass on a busy machine.
#
# COFFER_TEST_OUT=DIR: where tests keep files to look at afterwards (the web
# console tests' screenshots, DIR/console/*.png); default test/e2e/out.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

failed=()
passed=0
# suite NAME CMD...: run one suite, remember whether it failed, go on.
suite() {
  local name=$1
  shift
  log "$name"
  local start=$SECONDS
  if "$@"; then
    passed=$((passed + 1))
    printf -- '-- %s: ok (%ss)\n' "$name" $((SECONDS - start))
  else
    failed+=("$name")
    printf -- '-- %s: FAILED (%ss)\n' "$name" $((SECONDS - start)) >&2
  fi
}

need_pkgs=()
command -v mount >/dev/null || need_pkgs+=(mount)
command -v promtool >/dev/null || need_pkgs+=(prometheus) # promtool check metrics
command -v age >/dev/null || need_pkgs+=(age)               # the backup benchmark's peer: tar | zstd | age
command -v zstd >/dev/null || need_pkgs+=(zstd)
[ -z "${COFFER_TEST_LOAD:-}" ] || command -v stress >/dev/null || need_pkgs+=(stress)
command -v pykmip-server >/dev/null || need_pkgs+=(python3-pykmip) # KMIP e2e client (PyKMIP) and benchmark peer
[ -d /usr/lib/python3/dist-packages/hvac ] || need_pkgs+=(python3-hvac) # Vault API e2e client (hvac 0.11.2; PyPI is not reachable)
command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || need_pkgs+=(mariadb-server) # MariaDB TDE via the Vault API
[ -e /usr/lib/mysql/plugin/hashicorp_key_management.so ] || need_pkgs+=(mariadb-plugin-hashicorp-key-management)
command -v systemd-analyze >/dev/null || need_pkgs+=(systemd) # the package test: systemd-analyze verify|security on the unit
command -v setpriv >/dev/null || need_pkgs+=(util-linux)       # the package test runs the server as the coffer user
command -v chromium >/dev/null || need_pkgs+=(chromium) # the web console's browser tests (chromedp; screenshots in $COFFER_TEST_OUT)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    log "installing ${need_pkgs[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  else
    echo "missing: ${need_pkgs[*]} (apt-get install ${need_pkgs[*]})" >&2
    exit 1
  fi
fi

log "test servers (OpenSSH sshd, versitygw S3; built once and cached)"
./scripts/testservers.sh

if [ -n "${COFFER_TEST_LOAD:-}" ]; then
  stress --cpu "$COFFER_TEST_LOAD" >/dev/null 2>&1 &
  stress_pid=$!
  trap 'pkill -P "$stress_pid" 2>/dev/null; kill "$stress_pid" 2>/dev/null || true' EXIT
  log "running beside stress --cpu $COFFER_TEST_LOAD (pid $stress_pid)"
fi

suite "go vet" go vet ./...

gofmt_check() {
  local bad
  bad=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
  if [ -n "$bad" ]; then echo "gofmt needed: $bad" >&2; return 1; fi
}
suite "gofmt" gofmt_check

# go vet, staticcheck and gosec at pinned versions (built once, cached):
# every finding fixed or justified where it is suppressed.
suite "lint" ./scripts/lint.sh

suite "unit tests (race detector)" go test -race -count=1 -timeout 20m ./internal/... ./client/...

suite "end-to-end tests (real binary, kill -9, disk full, CLI scripts)" go test -count=1 -timeout 30m ./test/...

# A count, not a duration: with a duration Go's fuzz coordinator can fail a
# run with a bare "context deadline exceeded" as the time runs out (no input
# at fault; golang/go#75804, unfixed in Go 1.26). A count has no deadline.
fuzz_all() {
  local t log rc=0
  log=$(mktemp)
  for t in internal/keystore:FuzzOpenKeystore internal/keystore:FuzzOpenAutoOpen internal/journal:FuzzVerifySegment \
           internal/state:FuzzUnmarshalCommand internal/api/rest:FuzzSecretPutBody internal/api/rest:FuzzCreateObjectBody \
           internal/api/kmip:FuzzKMIPRequest internal/api/vault:FuzzKVWriteBody internal/api/vault:FuzzTransitBody; do
    if go test -run '^$' -fuzz "^${t#*:}\$" -fuzztime "${FUZZTIME:-10000x}" -fuzzminimizetime 0s "./${t%%:*}/" >"$log" 2>&1; then
      echo "fuzz ${t}: ok"
    else
      cat "$log"
      echo "fuzz ${t} failed" >&2
      rc=1
    fi
  done
  rm -f "$log"
  return $rc
}
suite "short fuzz runs (seed corpora also run as plain tests above)" fuzz_all

# Once each, to prove they run; sized down where a benchmark's default is a
# measurement run (BenchmarkRestart builds 1M objects: scripts/bench.sh).
bench_once() { COFFER_BENCH_OBJECTS=${COFFER_BENCH_OBJECTS:-5000} go test -run '^$' -bench . -benchtime 1x -timeout 10m ./... >/dev/null; }
suite "benchmarks compile and run once" bench_once

echo
if [ ${#failed[@]} -gt 0 ]; then
  printf 'FAILED suites:\n' >&2
  printf '  %s\n' "${failed[@]}" >&2
  echo "suites: ${passed} passed, ${#failed[@]} failed"
  exit 1
fi
echo "suites: ${passed} passed, 0 failed"
log "all tests passed"
