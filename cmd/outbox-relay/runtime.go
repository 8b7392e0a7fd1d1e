package main

import (
	"log/slog"
	"os"
	"runtime"
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

// DefaultMaxProcs is --max-procs by default. The relay's input is one
// walsender, a single process decoding the whole database, and on two
// cores shared with PostgreSQL a relay running on one core was measured
// faster than on two: 17% less CPU per row, W4 0.55-0.68 of pg_recvlogical
// against 0.85-0.97, and the steady-load p99 cut by a third, because a
// second runtime thread competes with the walsender for the CPU instead of
// helping (see BENCHMARKS.md).
const DefaultMaxProcs = 1

// applyMaxProcs sets how many cores run the relay's Go code at once: procs
// when positive, else Go's default (the CPUs available, within a cgroup
// limit). A GOMAXPROCS in the environment wins over the flag: the runtime
// has applied it.
func applyMaxProcs(procs int, logger *slog.Logger) {
	if env := os.Getenv("GOMAXPROCS"); env != "" {
		logger.Info("cores from GOMAXPROCS", "gomaxprocs", runtime.GOMAXPROCS(0))
		return
	}
	if procs > 0 {
		runtime.GOMAXPROCS(procs)
	}
	logger.Info("cores", "gomaxprocs", runtime.GOMAXPROCS(0))
}
