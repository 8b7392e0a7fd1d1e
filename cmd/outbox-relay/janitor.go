package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outbox-relay/outbox-relay/cdc"
)

// DefaultPruneInterval is --prune-interval: how often the janitor prunes.
const DefaultPruneInterval = time.Minute

// janitor prunes the outbox table from inside the daemon (--prune-older-than):
// every interval, one pass of pruneRows by the newest confirmed horizon. It
// never stops the relay: a failed pass is logged once per streak and tried
// again at the next tick.
type janitor struct {
	cfg       cdc.Config
	olderThan time.Duration
	interval  time.Duration
	log       *slog.Logger
	m         *cleanupMetrics
}

func newJanitor(cfg cdc.Config, olderThan, interval time.Duration, logger *slog.Logger, m *cleanupMetrics) *janitor {
	return &janitor{cfg: cfg, olderThan: olderThan, interval: interval, m: m,
		log: logger.With("component", "janitor", "slot", cfg.Slot)}
}

// Run prunes every interval until ctx ends, then returns nil.
func (j *janitor) Run(ctx context.Context) error {
	j.log.Info("pruning confirmed outbox rows", "older_than", j.olderThan.String(), "every", j.interval.String())
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.WithoutCancel(ctx))
		}
	}()
	t := time.NewTicker(j.interval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		err := j.pass(ctx, &conn)
		switch {
		case ctx.Err() != nil:
		case errors.Is(err, errNoHorizon):
			j.log.Debug("nothing to prune yet", "err", err)
		case err != nil:
			if !failing {
				j.log.Warn("cannot prune the outbox table; retrying", "err", err, "retry_in", j.interval.String())
			}
			failing = true
			if conn != nil {
				conn.Close(context.WithoutCancel(ctx))
				conn = nil
			}
		default:
			failing = false
		}
	}
}

func (j *janitor) pass(ctx context.Context, conn **pgx.Conn) error {
	if *conn == nil {
		c, err := pgx.Connect(ctx, j.cfg.DSN)
		if err != nil {
			return cdc.ConnectError(j.cfg.DSN, err)
		}
		*conn = c
	}
	h, err := loadPruneHorizon(ctx, *conn, j.cfg.Table, j.cfg.Slot)
	if err != nil {
		return err
	}
	start := time.Now()
	p, err := pruneRows(ctx, *conn, pruneJob{
		table: j.cfg.Table, horizon: h, olderThan: j.olderThan, batch: defaultPruneBatch,
		deleted: func(n int64) { j.m.pruned.Add(float64(n)) },
	})
	if err != nil {
		return fmt.Errorf("prune %s after %d rows: %w", j.cfg.Table, p.rows, err)
	}
	if p.rows > 0 {
		j.log.Info("pruned", "rows", p.rows, "created_before", p.cutoff, "horizon_lsn", h.LSN, "duration", time.Since(start).String())
	}
	return nil
}

// cleanupMetrics are the metrics of the horizon keeper and the janitor.
type cleanupMetrics struct {
	pruned     prometheus.Counter
	tableBytes prometheus.Gauge
}

func newCleanupMetrics(reg prometheus.Registerer) (*cleanupMetrics, error) {
	m := &cleanupMetrics{
		pruned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outbox_relay_pruned_rows_total",
			Help: "Outbox rows the in-daemon janitor (--prune-older-than) deleted: older than the retention and confirmed.",
		}),
		tableBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outbox_relay_outbox_table_bytes",
			Help: "pg_total_relation_size of the outbox table (heap, indexes, TOAST), read every status interval.",
		}),
	}
	for _, c := range []prometheus.Collector{m.pruned, m.tableBytes} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register cleanup metrics: %w", err)
		}
	}
	return m, nil
}
