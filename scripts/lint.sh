#!/usr/bin/env bash
# Static analysis: go vet, staticcheck and gosec over the whole module.
# scripts/test.sh runs it as the "lint" suite; it must pass as the
# repository stands. Every finding is fixed, or suppressed where it is made
# with the reason written next to it:
#   staticcheck  //lint:ignore CHECK reason      (the line before)
#   gosec        // #nosec GNNN -- reason        (on the line)
#
# The tools are built once at pinned versions with `go install` outside the
# module (go.mod is neither read nor changed) into the cache dir
# $COFFER_TEST_BIN, else ${XDG_CACHE_HOME:-$HOME/.cache}/coffer-test/bin,
# as scripts/testservers.sh does for versitygw. Change a version here only
# with the findings of the new version fixed.
set -euo pipefail
cd "$(dirname "$0")/.."

STATICCHECK_VERSION=v0.8.2 # honnef.co/go/tools
GOSEC_VERSION=v2.30.0      # github.com/securego/gosec/v2
bin_dir="${COFFER_TEST_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/coffer-test/bin}"

log() { printf '== lint: %s\n' "$*"; }

# tool NAME VERSION PACKAGE: build PACKAGE@VERSION into bin_dir unless cached.
tool() {
  local name=$1 version=$2 pkg=$3 stamp="$bin_dir/$1.version"
  if [ -x "$bin_dir/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$version" ]; then
    return
  fi
  log "building $name $version into $bin_dir (a few minutes)"
  mkdir -p "$bin_dir"
  local tmp
  tmp=$(mktemp -d)
  (cd "$tmp" && GOFLAGS=-mod=mod GOBIN="$tmp" go install "$pkg@$version")
  mv -f "$tmp/$name" "$bin_dir/$name"
  rm -rf "$tmp"
  echo "$version" >"$stamp"
}

tool staticcheck "$STATICCHECK_VERSION" honnef.co/go/tools/cmd/staticcheck
tool gosec "$GOSEC_VERSION" github.com/securego/gosec/v2/cmd/gosec

rc=0
log "go vet"
go vet ./... || rc=1
log "staticcheck $STATICCHECK_VERSION"
"$bin_dir/staticcheck" ./... || rc=1
log "gosec $GOSEC_VERSION"
# -quiet: only findings; -exclude-generated: none today, kept explicit.
"$bin_dir/gosec" -quiet -exclude-generated ./... || rc=1
exit $rc
