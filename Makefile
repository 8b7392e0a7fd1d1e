# outbox-relay: the two commands a new user needs are `make demo` and `make test`.

GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT   ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS  := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
BIN      := bin/outbox-relay
DEMO_BIN ?= bin/outbox-relay-demo

.PHONY: all build demo test test-short bench vet clean

all: build

build: $(BIN)

$(BIN): FORCE
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/outbox-relay

# demo: a private PostgreSQL, a broker, the relay binary, a writer of
# sample events and a consumer printing what arrives. SINK picks the broker
# and the relay's --sink, kafka by default: kafka, an embedded
# Kafka-protocol broker; nats, an embedded NATS server with JetStream;
# rabbitmq, a node of the installed rabbitmq-server (apt-get install
# rabbitmq-server), which takes 4 to 10 seconds to start; redis, the
# installed redis-server (apt-get install redis-server); each of the last
# two in child processes. For instance make demo SINK=nats.
# Ctrl-C stops everything and removes the temporary state, and make exits 0:
# the demo takes the terminal's foreground, so that Ctrl-C reaches it and not
# make, which would otherwise end itself by the SIGINT (exit status 130). The
# demo is built and run as a binary, not with go run, which reports a child
# stopped by Ctrl-C as a failure (exit status 1). DEMO_FLAGS='-every 100ms'
# passes flags to it (see go doc ./cmd/outbox-relay-demo).
SINK ?= kafka
demo: build
	$(GO) build -o $(DEMO_BIN) ./cmd/outbox-relay-demo
	$(DEMO_BIN) -relay $(BIN) -sink $(SINK) $(DEMO_FLAGS)

# The repository's modules: the relay's, and two of their own so that an
# application importing the relay's packages pulls neither the Kubernetes
# API types of the deployment checks nor testcontainers-go.
SUBMODULES := deploy relay/relaytest/container

# test: every test, unit, integration and end-to-end, against a real
# PostgreSQL and real brokers started privately (or
# OUTBOX_RELAY_TEST_PG_DSN). Nothing is skipped, except the container
# test where no Docker engine runs. The submodules' tests run beside the
# relay's.
test: build vet
	deploy/check.sh
	( for m in $(SUBMODULES); do (cd $$m && OUTBOX_RELAY_BIN=$(CURDIR)/$(BIN) $(GO) test -race -count=1 -timeout 10m ./...) || exit 1; done ) & sub=$$!; \
	OUTBOX_RELAY_BIN=$(CURDIR)/$(BIN) $(GO) test -race -count=1 -timeout 20m ./...; main=$$?; \
	wait $$sub; subrc=$$?; \
	test $$main -eq 0 && test $$subrc -eq 0

# test-short: the unit tests only, no database.
test-short:
	$(GO) test -race -short ./...

vet:
	$(GO) vet ./...
	for m in $(SUBMODULES); do (cd $$m && $(GO) vet ./...) || exit 1; done

# bench: the end-to-end benchmark of the relay binary (bench: a private
# PostgreSQL with fsync=on, the broker of bench/broker in its own process,
# workloads W1-W4 and the exactly-once W2-EO and W3-EO, three times each,
# about 12 minutes; W1 and W2 also through NATS JetStream, RabbitMQ and
# Redis Streams at a quarter of the rows, about 10 minutes more, which
# need the rabbitmq-server and redis-server packages, or
# BENCH_FLAGS='--sinks kafka,nats'): backlog
# rows/s beside pg_recvlogical and SQL decoding, with a read_committed
# consumer in the loop; W3's commit-to-consumer latency with 8 writers;
# per-stage latency and CPU per row for every workload; W1 and W2 per
# sink. Then the Go micro-benchmarks; the results replace the lower part
# of BENCHMARKS.md. A quick look:
# make bench BENCH_FLAGS='--scale 0.05 --runs 1'
bench: build
	$(GO) build -o bin/bench-broker ./bench/broker
	$(GO) run ./bench --relay $(BIN) --broker-bin bin/bench-broker --markdown BENCHMARKS.md $(BENCH_FLAGS)
	$(GO) test -run '^$$' -bench . -benchmem ./cdc/ ./relay/ ./sinks/kafka/ ./sinks/delivery/ > bin/bench-micro.txt
	printf '\n### Go micro-benchmarks\n\n`go test -bench . -benchmem` of ./cdc/, ./relay/, ./sinks/kafka/ and ./sinks/delivery/, tests skipped:\n\n```\n' >> BENCHMARKS.md
	cat bin/bench-micro.txt >> BENCHMARKS.md
	printf '```\n' >> BENCHMARKS.md

clean:
	rm -rf bin

FORCE:

# image: the container image from deploy/Dockerfile, built with the same
# go build line as the build target. Needs a Docker engine.
.PHONY: image
image:
	docker build -f deploy/Dockerfile --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) -t outbox-relay:$(VERSION) .
