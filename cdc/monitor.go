package cdc

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// Monitor reads the slot from pg_replication_slots on a normal connection at
// a fixed interval and exports its lag and retained WAL. It sees the slot as
// PostgreSQL does, so its figures stay true while the stream is stalled or
// down.
type Monitor struct {
	cfg      Config
	interval time.Duration
	log      *slog.Logger
	m        *monitorMetrics
	lastOK   atomic.Int64 // unix nanoseconds of the last successful read
}

// NewMonitor returns a Monitor of cfg's slot, reading every interval (zero
// means five seconds). A nil logger discards logs; a nil reg registers no
// metrics.
func NewMonitor(cfg Config, interval time.Duration, logger *slog.Logger, reg prometheus.Registerer) (*Monitor, error) {
	cfg = cfg.withDefaults()
	if interval <= 0 {
		interval = 5 * time.Second
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m, err := newMonitorMetrics(reg)
	if err != nil {
		return nil, err
	}
	return &Monitor{cfg: cfg, interval: interval, log: logger.With("component", "monitor", "slot", cfg.Slot), m: m}, nil
}

// Run reads the slot until ctx ends, then returns nil. A failed read is
// logged, counted and retried at the next tick on a new connection.
func (mo *Monitor) Run(ctx context.Context) error {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.WithoutCancel(ctx))
		}
	}()
	t := time.NewTicker(mo.interval)
	defer t.Stop()
	failing := false
	for {
		err := mo.read(ctx, &conn)
		switch {
		case err != nil && ctx.Err() == nil:
			mo.m.errors.Inc()
			if !failing {
				mo.log.Warn("cannot read the slot; retrying", "err", err, "retry_in", mo.interval.String())
			}
			failing = true
			if conn != nil {
				conn.Close(context.WithoutCancel(ctx))
				conn = nil
			}
		case err == nil:
			if failing {
				mo.log.Info("reading the slot again")
			}
			failing = false
			mo.lastOK.Store(time.Now().UnixNano())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Healthy reports whether the last successful read is at most three
// intervals old: PostgreSQL answers.
func (mo *Monitor) Healthy() bool {
	last := mo.lastOK.Load()
	return last != 0 && time.Since(time.Unix(0, last)) <= 3*mo.interval
}

func (mo *Monitor) read(ctx context.Context, conn **pgx.Conn) error {
	ctx, cancel := context.WithTimeout(ctx, mo.interval)
	defer cancel()
	if *conn == nil {
		c, err := pgx.Connect(ctx, mo.cfg.DSN)
		if err != nil {
			return fmt.Errorf("connect to PostgreSQL at %s: %w", RedactDSN(mo.cfg.DSN), err)
		}
		*conn = c
	}
	s, err := ReadSlot(ctx, *conn, mo.cfg.Slot)
	if err != nil {
		return err
	}
	mo.m.lag.Set(float64(s.LagBytes()))
	mo.m.retained.Set(float64(s.RetainedBytes()))
	mo.m.safe.Set(float64(s.SafeWALBytes))
	active := 0.0
	if s.Active {
		active = 1
	}
	mo.m.active.Set(active)
	return nil
}
