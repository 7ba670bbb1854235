#!/usr/bin/env bash
# Install what the tests need and run every test. CI (.ci/run) calls this.
# Needs: Go (the version in go.mod) and root for the disk-full test (it mounts
# a small tmpfs). Under CI=true a missing component is a failure, never a skip.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

need_pkgs=()
command -v mount >/dev/null || need_pkgs+=(mount)
command -v promtool >/dev/null || need_pkgs+=(prometheus) # promtool check metrics
command -v age >/dev/null || need_pkgs+=(age)               # the backup benchmark's peer: tar | zstd | age
command -v zstd >/dev/null || need_pkgs+=(zstd)
command -v pykmip-server >/dev/null || need_pkgs+=(python3-pykmip) # KMIP e2e client (PyKMIP) and benchmark peer
command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || need_pkgs+=(mariadb-server) # MariaDB TDE via the Vault API
[ -e /usr/lib/mysql/plugin/hashicorp_key_management.so ] || need_pkgs+=(mariadb-plugin-hashicorp-key-management)
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

log "go vet"
go vet ./...

log "gofmt"
bad=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$bad" ]; then echo "gofmt needed: $bad" >&2; exit 1; fi

log "unit tests (race detector)"
go test -race -count=1 -timeout 20m ./internal/... ./client/...

log "end-to-end tests (real binary, kill -9, disk full, CLI scripts)"
go test -count=1 -timeout 30m ./test/...

log "short fuzz runs (seed corpora also run as plain tests above)"
# A count, not a duration: with a duration Go's fuzz coordinator can fail a
# run with a bare "context deadline exceeded" as the time runs out (no input
# at fault; golang/go#75804, unfixed in Go 1.26). A count has no deadline.
for t in internal/keystore:FuzzOpenKeystore internal/keystore:FuzzOpenAutoOpen internal/journal:FuzzVerifySegment \
         internal/state:FuzzUnmarshalCommand internal/api/rest:FuzzSecretPutBody internal/api/rest:FuzzCreateObjectBody \
         internal/api/kmip:FuzzKMIPRequest internal/api/vault:FuzzKVWriteBody internal/api/vault:FuzzTransitBody; do
  go test -run '^$' -fuzz "^${t#*:}\$" -fuzztime "${FUZZTIME:-10000x}" -fuzzminimizetime 0s "./${t%%:*}/" >/tmp/coffer-fuzz.log 2>&1 \
    || { cat /tmp/coffer-fuzz.log; echo "fuzz ${t} failed" >&2; exit 1; }
  echo "fuzz ${t}: ok"
done

log "benchmarks compile and run once"
go test -run '^$' -bench . -benchtime 1x -timeout 10m ./... >/dev/null

log "all tests passed"
