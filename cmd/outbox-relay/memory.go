package main

import (
	"log/slog"
	"os"
	"runtime/debug"

	"github.com/outbox-relay/outbox-relay/relay"
)

// Memory the relay needs beyond its in-flight events: the Kafka client's
// request and compression buffers, the replication connection's read
// buffer, goroutine stacks and the runtime itself.
const memoryBase = 16 << 20

// memoryLimit returns the soft memory limit for the Go runtime: limit when
// positive, else three times the in-flight byte bound (the events, the
// Kafka client's copy of them in its requests, and room for the garbage
// collector to work in) plus memoryBase: 40 MiB with the default bounds.
func memoryLimit(limit int64, inflightBytes int) int64 {
	if limit > 0 {
		return limit
	}
	if inflightBytes <= 0 {
		inflightBytes = relay.DefaultMaxInflightBytes
	}
	return 3*int64(inflightBytes) + memoryBase
}

// applyMemoryLimit sets the runtime's soft memory limit, so that the
// in-flight bound bounds the whole process: near the limit the garbage
// collector runs more often instead of letting the heap double. A GOMEMLIMIT
// in the environment wins over the flag: the runtime has applied it.
func applyMemoryLimit(limit int64, inflightBytes int, logger *slog.Logger) {
	if env := os.Getenv("GOMEMLIMIT"); env != "" {
		logger.Info("memory limit from GOMEMLIMIT", "gomemlimit", env, "bytes", debug.SetMemoryLimit(-1))
		return
	}
	n := memoryLimit(limit, inflightBytes)
	debug.SetMemoryLimit(n)
	logger.Info("memory limit", "bytes", n)
}
