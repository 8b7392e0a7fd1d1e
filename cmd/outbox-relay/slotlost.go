package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outbox-relay/outbox-relay/cdc"
	"github.com/outbox-relay/outbox-relay/internal/state"
)

// The values of --on-slot-lost.
const (
	// onSlotLostFail stops run with what was lost and the fix.
	onSlotLostFail = "fail"
	// onSlotLostRecover recreates the slot with an exported snapshot,
	// republishes from the table every row of that snapshot the relay had
	// not confirmed, and streams the new slot.
	onSlotLostRecover = "recover"
)

// slotLost reports whether err says the slot is lost: invalidated, gone
// after the relay streamed from it, or recreated by a recovery that has not
// ended. Under recover a slot missing at start
// counts too: it was lost while no relay ran, or never made.
func slotLost(err error, cfg Config) bool {
	return errors.Is(err, cdc.ErrSlotInvalidated) || errors.Is(err, cdc.ErrSlotLost) || errors.Is(err, cdc.ErrSlotRecovering) ||
		(cfg.OnSlotLost == onSlotLostRecover && errors.Is(err, cdc.ErrNoSlot))
}

// recoveryMetrics count recoveries of a lost slot; they outlive the
// registry of each run of the relay.
type recoveryMetrics struct {
	recoveries  prometheus.Counter
	republished prometheus.Counter
}

func newRecoveryMetrics() *recoveryMetrics {
	return &recoveryMetrics{
		recoveries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outbox_relay_slot_recoveries_total",
			Help: "Lost replication slots recreated under --on-slot-lost=recover.",
		}),
		republished: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outbox_relay_slot_recovery_republished_events_total",
			Help: "Rows republished from the outbox table by slot recoveries; consumers may have had some of them already (duplicates, same id header).",
		}),
	}
}

func (m *recoveryMetrics) register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.recoveries, m.republished} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register recovery metrics: %w", err)
		}
	}
	return nil
}

// loadHorizon returns the confirmed horizon recorded for the slot, read in
// tx; no state table (a setup older than the horizon) counts as none.
func loadHorizon(ctx context.Context, tx pgx.Tx, cfg Config) (state.Horizon, bool, error) {
	sp, err := tx.Begin(ctx) // a savepoint: a missing table must not end tx
	if err != nil {
		return state.Horizon{}, false, fmt.Errorf("load horizon: %w", err)
	}
	h, found, err := state.LoadHorizon(ctx, sp, cfg.CDC.Table, cfg.CDC.Slot)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P01" { // undefined_table
		return state.Horizon{}, false, sp.Rollback(ctx)
	}
	if err != nil {
		_ = sp.Rollback(ctx)
		return state.Horizon{}, false, err
	}
	return h, found, sp.Commit(ctx)
}

// lostSlotError is run's error under --on-slot-lost=fail: what was lost,
// since when, and the fix, on one line. flushed is the last position the
// relay acknowledged in this process, if any.
func lostSlotError(ctx context.Context, cfg Config, err error, flushed pglogrepl.LSN) error {
	if errors.Is(err, cdc.ErrSlotRecovering) {
		return withHint(err, cfg)
	}
	what, sentinel := "disappeared while the relay was running (dropped, or a failover to a server without it)", cdc.ErrSlotLost
	if errors.Is(err, cdc.ErrSlotInvalidated) {
		what, sentinel = "was invalidated (wal_status = lost: the server removed WAL it still needed, see max_slot_wal_keep_size)", cdc.ErrSlotInvalidated
	}
	since := flushed
	var when string
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if conn, cerr := pgx.Connect(lctx, cfg.CDC.DSN); cerr == nil {
		defer conn.Close(lctx)
		if s, err := cdc.ReadSlot(lctx, conn, cfg.CDC.Slot); err == nil && s.ConfirmedFlush > since {
			since = s.ConfirmedFlush
		}
		if tx, err := conn.Begin(lctx); err == nil {
			if h, found, err := loadHorizon(lctx, tx, cfg); err == nil && found {
				since = max(since, h.ConfirmedLSN)
				when = fmt.Sprintf(" (everything committed before %s was confirmed)", h.Time.UTC().Format(time.RFC3339))
			}
			_ = tx.Rollback(lctx)
		}
	}
	pos := "its last confirmed position"
	if since != 0 {
		pos = "its last confirmed position " + since.String()
	}
	return hinted{fmt.Errorf("replication slot %q %s: events committed after %s%s may not have reached the broker; fix: restart once with --on-slot-lost=recover (OUTBOX_RELAY_ON_SLOT_LOST=recover), which recreates the slot and republishes from the outbox table every row not confirmed (or recreate it with `outbox-relay setup` and republish with `outbox-relay replay --since`): %w",
		cfg.CDC.Slot, what, pos, when, sentinel)}
}

// recoverSlot recreates the lost slot and republishes, before anything is
// streamed from it, every row of the new slot's snapshot not committed in
// the recorded confirmed horizon (every row when none is recorded).
func recoverSlot(ctx context.Context, cfg Config, logger *slog.Logger, m *recoveryMetrics) error {
	base := logger
	logger = logger.With("component", "recovery", "slot", cfg.CDC.Slot)
	logger.Warn("replication slot lost; recovering: recreating it and republishing the unconfirmed rows from the outbox table")
	started := time.Now()
	rcfg := cfg
	rcfg.Kafka.TransactionalID, rcfg.Kafka.CheckpointKey = "", "" // republished rows are at-least-once
	recreated, err := cdc.Recreate(ctx, cfg.CDC, base, func(ctx context.Context, tx pgx.Tx, start pglogrepl.LSN) error {
		q := cfg.replayQuery()
		h, found, err := loadHorizon(ctx, tx, cfg)
		if err != nil {
			return err
		}
		if found {
			age, err := horizonAge(ctx, tx, h)
			if err != nil {
				return err
			}
			if age < 0 || age > maxHorizonAge {
				// Too old for CommittedIn's arithmetic, or from another
				// server's history: it cannot tell which rows are covered.
				logger.Warn("the recorded horizon cannot judge rows (too old, or from another server): republishing every row of the outbox table",
					"horizon_time", h.Time.UTC().Format(time.RFC3339Nano), "age_xids", age)
				found = false
			}
		}
		if found {
			q.Skip = func(param string) string { return state.CommittedIn(cfg.CDC.Table, param) }
			q.SkipArg = h.Snapshot
			logger.Info("republishing the rows the confirmed horizon does not cover",
				"lsn", h.ConfirmedLSN.String(), "horizon_time", h.Time.UTC().Format(time.RFC3339Nano))
		} else {
			logger.Warn("no confirmed horizon is recorded for the slot: republishing every row of the outbox table")
		}
		total, err := countRows(ctx, tx, q)
		if err != nil {
			return err
		}
		sink, err := openSink(ctx, rcfg, logger, nil)
		if err != nil {
			return err
		}
		defer sink.Close()
		st, err := republish(ctx, tx, q, sink, republishOptions{
			Started:           started,
			MaxInflightEvents: cfg.Relay.MaxInflightEvents,
			MaxInflightBytes:  cfg.Relay.MaxInflightBytes,
			Policy:            cfg.Relay.PoisonPolicy,
			Total:             total,
			Log:               logger,
			Published:         m.republished.Inc,
		}, cfg.CDC.ShutdownTimeout)
		if err != nil {
			return fmt.Errorf("republish unconfirmed rows: %w", err)
		}
		note := "some may have reached consumers before (duplicates with the same id header)"
		if !found {
			note = "no confirmed horizon was recorded, so every row of the table went again: most are duplicates (same id header)"
		}
		logger.Warn("republished the unconfirmed rows; streaming the new slot from its start",
			"rows", st.Rows, "dead_lettered", st.DeadLettered, "lsn", start.String(), "took", st.Took.Round(time.Millisecond).String(), "duplicates", note)
		return nil
	})
	if err != nil {
		return fmt.Errorf("recover lost slot %q: %w", cfg.CDC.Slot, err)
	}
	if recreated {
		m.recoveries.Inc()
	}
	return nil
}
