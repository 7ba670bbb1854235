# Conveniences. The two commands are in README.md:
#   go run ./cmd/coffer dev      start a dev server
#   ./scripts/test.sh            install what the tests need and run them all (= make test)

GO ?= go

.PHONY: test unit e2e bench build vet fmt

test:
	./scripts/test.sh

build:
	$(GO) build -o bin/coffer ./cmd/coffer

vet:
	$(GO) vet ./...

unit:
	$(GO) test ./internal/... ./client/...

e2e:
	$(GO) test ./test/...

bench:
	./scripts/bench.sh
