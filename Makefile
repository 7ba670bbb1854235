# Conveniences. The two commands are in README.md:
#   go run ./cmd/coffer dev      start a dev server
#   ./scripts/test.sh            install what the tests need and run them all (= make test)

GO ?= go

.PHONY: test unit e2e bench build vet fmt deb

# The version stamp: git describe (with -dirty for uncommitted changes).
DESCRIBE := $(shell git describe --always --dirty 2>/dev/null || echo unknown)
LDFLAGS := -X github.com/coffer-kms/coffer/internal/cli.buildCommit=$(DESCRIBE)

test:
	./scripts/test.sh

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/coffer ./cmd/coffer

# dist/coffer_<version>_amd64.deb (nfpm, pinned in the script).
deb:
	./scripts/deb.sh

vet:
	$(GO) vet ./...

unit:
	$(GO) test ./internal/... ./client/...

e2e:
	$(GO) test ./test/...

bench:
	./scripts/bench.sh
