package cdc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/outbox-relay/outbox-relay/internal/state"
)

// Recreate replaces a lost slot: it drops cfg.Slot if the server
// invalidated it (wal_status = lost), creates it again over a replication
// connection with an exported snapshot, and calls fn with a REPEATABLE READ
// transaction that imported that snapshot, and with the new slot's
// consistent point, where streaming will start. The transaction sees exactly
// the rows committed before the consistent point, and the slot sends exactly
// those committed after it, so nothing falls between the two. Recreate
// returns once fn has returned and the transaction has ended.
//
// When fn fails, Recreate drops the new slot again, so that no stream can
// start from it and skip the rows fn did not finish with, and returns fn's
// error. Before it creates the slot it records in the state table that a
// recovery began, and once fn is done that it ended (state.MarkRecovery):
// a process killed while fn runs leaves the new slot behind with the
// recovery recorded as begun, a Stream refuses to start from it
// (ErrSlotRecovering), and the next Recreate drops it and starts over.
//
// Recreates of one slot on one server run one at a time (a session advisory
// lock). When the slot exists and is usable, because another relay
// recreated it first and finished, Recreate returns false and calls
// nothing. A slot that
// exists and is in use or not lost is an error. logger may be nil.
func Recreate(ctx context.Context, cfg Config, logger *slog.Logger, fn func(ctx context.Context, tx pgx.Tx, start pglogrepl.LSN) error) (bool, error) {
	if err := cfg.Validate(); err != nil {
		return false, err
	}
	cfg = cfg.withDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "cdc", "slot", cfg.Slot)
	ccfg, err := pgx.ParseConfig(cfg.DSN)
	if err != nil {
		return false, fmt.Errorf("parse PostgreSQL DSN: %w", err)
	}
	if ccfg.ConnectTimeout == 0 {
		ccfg.ConnectTimeout = 10 * time.Second
	}
	db, err := pgx.ConnectConfig(ctx, ccfg)
	if err != nil {
		return false, ConnectError(cfg.DSN, err)
	}
	defer db.Close(context.WithoutCancel(ctx))
	if _, err := db.Exec(ctx, "SELECT pg_advisory_lock(hashtextextended('outbox-relay recreate slot ' || $1, 0))", cfg.Slot); err != nil {
		return false, fmt.Errorf("lock the recreation of slot %q: %w", cfg.Slot, err)
	}

	began, interrupted, err := recoveryStarted(ctx, db, cfg)
	if err != nil {
		return false, err
	}
	slot, err := ReadSlot(ctx, db, cfg.Slot)
	drop := ""
	switch {
	case errors.Is(err, ErrNoSlot):
	case err != nil:
		return false, err
	case slot.WALStatus == "lost":
		drop = "dropped the invalidated slot"
	case interrupted && !slot.Active && slot.Usable() == nil:
		// The slot of a recovery that did not end: its rows were not all
		// republished, and a stream from it would skip the rest.
		drop = "an earlier recovery of the slot began and did not end: dropped the slot it created, recovering again"
	case slot.Usable() == nil && !interrupted:
		logger.Info("slot is usable again: another relay recreated it")
		return false, nil
	case slot.Usable() == nil:
		return false, fmt.Errorf("slot %q of an interrupted recovery is streaming to another connection (pid %d): %w; stop that relay and start again",
			cfg.Slot, slot.ActivePID, ErrSlotInUse)
	default:
		return false, slot.Usable()
	}
	// Recorded before anything changes, so that a process killed from
	// here on leaves a mark that no stream passes.
	if err := state.MarkRecovery(ctx, db, cfg.Table, cfg.Slot); err != nil {
		if !stateUnavailable(err) {
			return false, err
		}
		logger.Warn("cannot record the recovery in the state table: if this relay stops before the recovery ends, the next start streams the new slot and skips the rows not yet republished; run `outbox-relay setup` and grant the relay SELECT, INSERT, UPDATE on "+cfg.Table.StateTable().String(),
			"err", err)
	}
	if drop != "" {
		if _, err := db.Exec(ctx, "SELECT pg_drop_replication_slot($1)", cfg.Slot); err != nil {
			return false, fmt.Errorf("drop slot %q before recreating it: %w", cfg.Slot, err)
		}
		attrs := []any{"lsn", slot.ConfirmedFlush.String()}
		if interrupted {
			attrs = append(attrs, "recovery_started", began.UTC().Format(time.RFC3339Nano))
		}
		logger.Warn(drop, attrs...)
	}

	pcfg := ccfg.Config.Copy()
	pcfg.RuntimeParams["replication"] = "database"
	repl, err := pgconn.ConnectConfig(ctx, pcfg)
	if err != nil {
		return false, fmt.Errorf("open replication connection to %s: %w", RedactDSN(cfg.DSN), err)
	}
	defer repl.Close(context.WithoutCancel(ctx))
	res, err := pglogrepl.CreateReplicationSlot(ctx, repl, cfg.Slot, "pgoutput", pglogrepl.CreateReplicationSlotOptions{
		Mode:           pglogrepl.LogicalReplication,
		SnapshotAction: "EXPORT_SNAPSHOT",
	})
	if err != nil {
		return false, fmt.Errorf("create replication slot %q with an exported snapshot: %w", cfg.Slot, err)
	}
	start, err := pglogrepl.ParseLSN(res.ConsistentPoint)
	if err != nil {
		return false, fmt.Errorf("slot %q created at %q: %w", cfg.Slot, res.ConsistentPoint, err)
	}
	logger.Info("slot created with an exported snapshot", "lsn", start.String(), "snapshot", res.SnapshotName)

	fail := func(err error) (bool, error) {
		// The snapshot's rows were not all handled: a stream from the new
		// slot would skip them.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		repl.Close(dctx)
		if _, derr := db.Exec(dctx, "SELECT pg_drop_replication_slot($1)", cfg.Slot); derr != nil {
			return false, fmt.Errorf("%w; the new slot %q could not be dropped (%w): drop it (SELECT pg_drop_replication_slot('%s')) before the next start, or rows committed before %s are never published",
				err, cfg.Slot, derr, cfg.Slot, start)
		}
		logger.Warn("dropped the new slot again: its snapshot's rows were not all handled", "lsn", start.String())
		return false, err
	}
	tx, err := db.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return fail(fmt.Errorf("begin snapshot transaction: %w", err))
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // read only
	if _, err := tx.Exec(ctx, "SET TRANSACTION SNAPSHOT '"+res.SnapshotName+"'"); err != nil {
		return fail(fmt.Errorf("import snapshot %s of slot %q: %w", res.SnapshotName, cfg.Slot, err))
	}
	// The transaction holds the snapshot now; the replication connection
	// may go.
	repl.Close(ctx)
	if err := fn(ctx, tx, start); err != nil {
		return fail(err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fail(fmt.Errorf("end snapshot transaction: %w", err))
	}
	if err := state.EndRecovery(ctx, db, cfg.Table, cfg.Slot); err != nil && !stateUnavailable(err) {
		return false, fmt.Errorf("slot %q is recovered, but the end of the recovery could not be recorded, so the next start recovers again: %w", cfg.Slot, err)
	}
	return true, nil
}

// recoveryStarted reads from the state table whether a recovery of the
// slot began and has not ended. A server without the state table, or a
// role that may not read it, has none recorded.
func recoveryStarted(ctx context.Context, db *pgx.Conn, cfg Config) (time.Time, bool, error) {
	at, found, err := state.RecoveryStarted(ctx, db, cfg.Table, cfg.Slot)
	if stateUnavailable(err) {
		return time.Time{}, false, nil
	}
	return at, found, err
}

// recovering returns an error wrapping ErrSlotRecovering when a recovery
// of the slot began and has not ended: the stream must not start.
func recovering(ctx context.Context, db *pgx.Conn, cfg Config) error {
	at, found, err := recoveryStarted(ctx, db, cfg)
	if err != nil {
		return err
	}
	if found {
		return fmt.Errorf("slot %q: a recovery began at %s and has not ended: it may still be republishing from the outbox table, or it was stopped, and the slot skips the rows it did not send: %w",
			cfg.Slot, at.UTC().Format(time.RFC3339), ErrSlotRecovering)
	}
	return nil
}

// stateUnavailable reports the errors of a server without the state table
// (setup older than it) or of a role without privileges on it.
func stateUnavailable(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "42501")
}
