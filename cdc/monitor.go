package cdc

import (
	"context"
	"errors"
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
//
// It also watches the outbox table: pgoutput sends nothing of a table that
// is not in the publication, so rows written after the table was dropped
// and created again, or taken out of the publication, would pass the slot
// unseen while the relay went on confirming. Run stops when it sees that.
type Monitor struct {
	cfg      Config
	interval time.Duration
	log      *slog.Logger
	m        *monitorMetrics
	lastOK   atomic.Int64 // unix nanoseconds of the last successful read

	// Read and written by Run's goroutine only.
	tableOID uint32    // the outbox table's OID when first read; 0 before
	since    time.Time // replay --since for rows after the table was last seen right
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
// logged, counted and retried at the next tick on a new connection. It
// returns an error wrapping ErrTableChanged when the outbox
// table was dropped, created again or taken out of the publication since
// its first read: rows written to it since then are not relayed.
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
		if errors.Is(err, ErrTableChanged) {
			return err
		}
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
	if err := mo.watchTable(ctx, *conn); err != nil {
		return err
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

// watchTable checks that the outbox table is the one first seen and still
// in the publication, inserts included; a table missing or unpublished at
// the first read is left to the stream's own start-up check. A table
// created again under a publication FOR ALL TABLES is published from its
// creation, so nothing of it is missed: it becomes the table watched.
func (mo *Monitor) watchTable(ctx context.Context, conn *pgx.Conn) error {
	t, pub := mo.cfg.Table, mo.cfg.Publication
	// floor is the server's time, as created_at is, or the start of the
	// oldest open transaction the role can see, whose rows have an older
	// created_at: replay --since floor takes every row written after it.
	var floor time.Time
	if err := conn.QueryRow(ctx, `SELECT least(now(), (SELECT min(xact_start) FROM pg_stat_activity))`).Scan(&floor); err != nil {
		return fmt.Errorf("read the time: %w", err)
	}
	st, err := readPublished(ctx, conn, t, pub)
	if err != nil {
		return err
	}
	oid, published := st.oid, st.published && st.inserts
	var what string
	switch {
	case mo.tableOID == 0:
		if oid != 0 && published {
			mo.tableOID, mo.since = oid, floor
		}
		return nil
	case oid == 0:
		what = "was dropped"
	case !published:
		what = fmt.Sprintf("is no longer in publication %q, or it no longer publishes inserts", pub)
		if oid != mo.tableOID {
			what = "was dropped and created again"
		}
	case oid != mo.tableOID && !st.allTables:
		what = "was dropped and created again"
	default:
		if oid != mo.tableOID {
			mo.log.Info("outbox table created again; publication publishes all tables, so none of its rows were missed", "table", t.String(), "publication", pub)
			mo.tableOID = oid
		}
		mo.since = floor
		return nil
	}
	since := mo.since.UTC().Truncate(time.Second).Format(time.RFC3339)
	return fmt.Errorf("table %s %s, after %s: %w; rows written to it since then may not have been relayed (pgoutput sends none of a table outside the publication), and the slot may have gone past them: run outbox-relay setup, which creates the table and publishes it, then outbox-relay replay --since %s",
		t, what, since, ErrTableChanged, since)
}
