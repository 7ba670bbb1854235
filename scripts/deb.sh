#!/usr/bin/env bash
# Builds the Debian package dist/coffer_<version>_amd64.deb (make deb) with
# nfpm at a pinned version (run with "go run MODULE@VERSION": not a module
# dependency). Contents: the binary stamped with the version and commit, the
# systemd unit, /etc/coffer/coffer.yaml, the man pages and shell completions
# generated from the command tree; packaging/ holds the rest.
#
#   DEB_OUT=DIR      where the package goes (default dist)
#   VERSION=V        the version (default from git describe)
set -euo pipefail
cd "$(dirname "$0")/.."

nfpm_version=v2.48.0
out=${DEB_OUT:-dist}
describe=$(git describe --always --dirty 2>/dev/null || echo unknown)
version=${VERSION:-$(git describe --tags --dirty 2>/dev/null | sed 's/^v//' || true)}
[ -n "$version" ] || version="0.1.0~dev.$describe"
# A Debian version has no '-' without a revision: git describe's
# "1.2.0-3-gabc" (three commits after 1.2.0) becomes 1.2.0+3+gabc.
deb_version=${version//-/+}

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp -r packaging/. "$stage/"
CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build -trimpath \
  -ldflags "-X github.com/coffer-kms/coffer/internal/service.Version=$version -X github.com/coffer-kms/coffer/internal/cli.buildCommit=$describe" \
  -o "$stage/coffer" ./cmd/coffer
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)} "$stage/coffer" gen-man "$stage/man"
gzip -9n "$stage"/man/*.1
mkdir -p "$stage/completions"
"$stage/coffer" completion bash >"$stage/completions/coffer.bash"
"$stage/coffer" completion zsh >"$stage/completions/_coffer"
"$stage/coffer" completion fish >"$stage/completions/coffer.fish"

mkdir -p "$out"
target=$(cd "$out" && pwd)/coffer_${deb_version}_amd64.deb
(cd "$stage" && COFFER_DEB_VERSION=$deb_version go run "github.com/goreleaser/nfpm/v2/cmd/nfpm@$nfpm_version" \
  package --config nfpm.yaml --packager deb --target "$target" >/dev/null)
echo "$target"
