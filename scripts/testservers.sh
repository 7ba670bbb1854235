#!/usr/bin/env bash
# Install the real servers the backup-destination tests run against
# (internal/testserver): Debian's OpenSSH server and a cached versitygw S3
# gateway. Idempotent: each step is skipped when already done.
#
#   sshd       /usr/sbin/sshd from the openssh-server package (apt-get, needs root)
#   versitygw  built once with `go install` into the cache dir:
#              $COFFER_TEST_BIN, else ${XDG_CACHE_HOME:-$HOME/.cache}/coffer-test/bin
#
# The system sshd service that the package installs is not needed: the tests
# start their own sshd on 127.0.0.1 with a config in a temp dir.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSITYGW_VERSION=v1.8.0
bin_dir="${COFFER_TEST_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/coffer-test/bin}"

log() { printf '== testservers: %s\n' "$*"; }

if [ ! -x /usr/sbin/sshd ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "openssh-server not installed and not root: run apt-get install openssh-server as root" >&2
    exit 1
  fi
  log "installing openssh-server"
  apt-get update -qq
  # policy-rc.d keeps the package from starting the system sshd on port 22.
  policy=/usr/sbin/policy-rc.d
  made_policy=
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssh-server >/dev/null
  if [ -n "$made_policy" ]; then rm -f "$policy"; fi
fi
log "sshd: $(/usr/sbin/sshd -V 2>&1 | head -n1 || true)"

stamp="$bin_dir/versitygw.version"
if [ -x "$bin_dir/versitygw" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$VERSITYGW_VERSION" ]; then
  log "versitygw $VERSITYGW_VERSION cached in $bin_dir"
else
  log "building versitygw $VERSITYGW_VERSION into $bin_dir (about a minute)"
  mkdir -p "$bin_dir"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  start=$(date +%s)
  # Outside the module so its go.mod is neither read nor changed.
  (cd "$tmp" && GOFLAGS=-mod=mod GOBIN="$tmp" go install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION")
  mv -f "$tmp/versitygw" "$bin_dir/versitygw"
  echo "$VERSITYGW_VERSION" >"$stamp"
  log "versitygw built in $(($(date +%s) - start))s"
fi
