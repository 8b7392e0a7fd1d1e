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
	cfg.SetDefaults()
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

type monitorMetrics struct {
	lag, retained, safe, active prometheus.Gauge
	errors                      prometheus.Counter
}

func newMonitorMetrics(reg prometheus.Registerer) (*monitorMetrics, error) {
	m := &monitorMetrics{
		lag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outbox_relay_replication_lag_bytes",
			Help: "WAL written since the slot's confirmed position (pg_current_wal_lsn() - confirmed_flush_lsn), read from pg_replication_slots.",
		}),
		retained: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outbox_relay_slot_retained_wal_bytes",
			Help: "WAL the slot makes the server keep (pg_current_wal_lsn() - restart_lsn).",
		}),
		safe: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outbox_relay_slot_safe_wal_bytes",
			Help: "WAL that can still be written before the slot risks invalidation (safe_wal_size); -1 when max_slot_wal_keep_size is unlimited.",
		}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outbox_relay_slot_active",
			Help: "1 while a connection, this relay's or another's, streams from the slot.",
		}),
	}
	m.errors = errorsCounter("slot_poll")
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.lag, m.retained, m.safe, m.active, m.errors} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register monitor metrics: %w", err)
		}
	}
	return m, nil
}
