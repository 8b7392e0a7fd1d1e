package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/outbox-relay/outbox-relay/cdc"
	"github.com/outbox-relay/outbox-relay/internal/state"
	"github.com/outbox-relay/outbox-relay/schema"
)

// horizonKeeper records the slot's confirmed horizon (see state.Horizon)
// while the relay runs: it keeps a pending horizon, and once the slot's
// confirmed_flush_lsn reaches it, saves it to the state table and takes the
// next one. It also refreshes the outbox table's size gauge. It never stops
// the relay: a failure is logged (a failed save once, with the fix) and
// retried at the next tick on a new connection.
type horizonKeeper struct {
	cfg      cdc.Config
	interval time.Duration
	log      *slog.Logger
	m        *cleanupMetrics
	// streaming reports whether this process's stream holds the slot. Only
	// then is the slot's position the relay's own: a standby, or a relay
	// reconnecting, takes and saves no horizon.
	streaming func() bool
}

func newHorizonKeeper(cfg cdc.Config, interval time.Duration, streaming func() bool, logger *slog.Logger, m *cleanupMetrics) *horizonKeeper {
	return &horizonKeeper{cfg: cfg, interval: interval, streaming: streaming, m: m,
		log: logger.With("component", "horizon", "slot", cfg.Slot)}
}

// Run keeps the horizon until ctx ends, then returns nil.
func (k *horizonKeeper) Run(ctx context.Context) error {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.WithoutCancel(ctx))
		}
	}()
	var pending *state.Horizon
	t := time.NewTicker(k.interval)
	defer t.Stop()
	failing, saveFailing := false, false
	for {
		err := k.step(ctx, &conn, &pending)
		var se saveError
		switch {
		case ctx.Err() != nil:
		case errors.As(err, &se):
			if !saveFailing {
				k.log.Warn("cannot record the confirmed horizon; relaying goes on, but prune and recovery use an older horizon or none", "err", se.err)
			}
			saveFailing = true
		case err != nil:
			if !failing {
				k.log.Warn("cannot take or confirm a horizon; retrying", "err", err, "retry_in", k.interval.String())
			}
			failing = true
			if conn != nil {
				conn.Close(context.WithoutCancel(ctx))
				conn = nil
			}
		default:
			if failing || saveFailing {
				k.log.Info("recording the confirmed horizon again")
			}
			failing, saveFailing = false, false
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// saveError is a horizon the keeper could not save; err says how to fix it.
type saveError struct{ err error }

func (e saveError) Error() string { return e.err.Error() }

// step does one round: refresh the size gauge, take a horizon if none is
// pending, or save the pending one if the slot has confirmed it.
func (k *horizonKeeper) step(ctx context.Context, conn **pgx.Conn, pending **state.Horizon) error {
	ctx, cancel := context.WithTimeout(ctx, max(k.interval, 5*time.Second))
	defer cancel()
	if *conn == nil {
		c, err := pgx.Connect(ctx, k.cfg.DSN)
		if err != nil {
			return cdc.ConnectError(k.cfg.DSN, err)
		}
		*conn = c
	}
	c := *conn
	var size int64
	// The size is a gauge only: a failure to read it must not hold the
	// horizon back.
	if err := c.QueryRow(ctx, `SELECT pg_total_relation_size($1::regclass)`, k.cfg.Table.Quoted()).Scan(&size); err != nil {
		k.log.Debug("cannot read the outbox table's size", "err", err)
	} else {
		k.m.tableBytes.Set(float64(size))
	}

	if !k.streaming() {
		// The slot's position may be another relay's, or a new slot's.
		*pending = nil
		return nil
	}
	if *pending == nil {
		h, err := state.TakeHorizon(ctx, c)
		if err != nil {
			return err
		}
		*pending = &h
		return nil
	}
	s, err := cdc.ReadSlot(ctx, c, k.cfg.Slot)
	if err != nil {
		return err
	}
	if s.ConfirmedFlush < (*pending).LSN {
		return nil
	}
	if !k.streaming() {
		*pending = nil
		return nil
	}
	h := **pending
	h.ConfirmedLSN = s.ConfirmedFlush
	if err := state.SaveHorizon(ctx, c, k.cfg.Table, k.cfg.Slot, h); err != nil {
		return saveError{withStateFix(err, k.cfg.Table, c.Config().User)}
	}
	k.log.Debug("horizon confirmed", "lsn", h.LSN, "confirmed_lsn", h.ConfirmedLSN)
	next, err := state.TakeHorizon(ctx, c)
	if err != nil {
		*pending = nil
		return err
	}
	*pending = &next
	return nil
}

// withStateFix adds to an error of the state table what to do about it.
func withStateFix(err error, table schema.Table, user string) error {
	st := table.StateTable()
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr) && pgErr.Code == "42P01":
		return fmt.Errorf("%w; run `outbox-relay setup` to create %s", err, st)
	case errors.As(err, &pgErr) && pgErr.Code == "42501":
		return fmt.Errorf("%w; GRANT SELECT, INSERT, UPDATE ON %s TO %s", err, st.Quoted(), pgx.Identifier{user}.Sanitize())
	}
	return err
}
