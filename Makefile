# outbox-relay: the two commands a new user needs are `make demo` and `make test`.

GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT   ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS  := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
BIN      := bin/outbox-relay

.PHONY: all build demo test test-short bench vet clean

all: build

build: $(BIN)

$(BIN): FORCE
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/outbox-relay

# demo: a private PostgreSQL, an embedded Kafka-protocol broker, the relay
# binary, a writer of sample events and a consumer printing what arrives.
# Ctrl-C stops everything and removes the temporary state.
demo: build
	$(GO) run ./e2e/demo -relay $(BIN)

# test: every test, unit, integration and end-to-end, against a real
# PostgreSQL started privately (or OUTBOX_RELAY_TEST_PG_DSN). Nothing is skipped.
test: build vet
	deploy/check.sh
	OUTBOX_RELAY_BIN=$(CURDIR)/$(BIN) $(GO) test -race -count=1 -timeout 20m ./...

# test-short: the unit tests only, no database.
test-short:
	$(GO) test -race -short ./...

vet:
	$(GO) vet ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

clean:
	rm -rf bin

FORCE:
