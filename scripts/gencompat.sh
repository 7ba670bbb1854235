#!/bin/sh
# Writes testdata/compat/<version>/: a small data dir and a dir destination's
# backup chain written by this build, with expected.json and a README naming
# the fixed test passphrases. TestCompat (test/compat) opens every version
# committed there with the current code. Run it once per release, for that
# release's version, and commit the result; a released version's directory
# is never regenerated (the generator refuses an existing one).
#
#   scripts/gencompat.sh 0.2.0
set -eu
cd "$(dirname "$0")/.."
version=${1:?usage: scripts/gencompat.sh VERSION (e.g. 0.2.0)}
go test -count=1 -run '^TestGenerateCompat$' ./test/compat -args -compat.write="$version"
go test -count=1 -run '^TestCompat$' ./test/compat
ls -l "testdata/compat/$version"
