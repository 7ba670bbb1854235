#!/bin/sh
# Regenerates the command reference, docs/reference/cli/ (one markdown file
# per command, from the cobra command tree). TestCLIDocsUpToDate in
# internal/cli fails until the result is committed after a command changes.
set -eu
cd "$(dirname "$0")/.."
go run ./cmd/coffer gen-docs docs/reference/cli
