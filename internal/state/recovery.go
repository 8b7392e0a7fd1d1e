package state

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outbox-relay/outbox-relay/schema"
)

// A recovery of a lost slot creates the slot again and then republishes
// rows from the outbox table; until the republishing is done, a stream from
// the new slot would skip the rows not yet sent. The state table records
// that a recovery began, so that a relay killed in between is found out by
// the next one, which recovers again instead of streaming.

// MarkRecovery records in the state table next to table that a recovery of
// slot begins now. Call it before the slot is created. Errors wrap
// PostgreSQL's, as SaveHorizon's do.
func MarkRecovery(ctx context.Context, db schema.Execer, table schema.Table, slot string) error {
	_, err := db.Exec(ctx, `
		INSERT INTO `+table.StateTable().Quoted()+` AS s (slot_name, recovery_started, updated_at)
		VALUES ($1, now(), now())
		ON CONFLICT (slot_name) DO UPDATE SET recovery_started = now(), updated_at = now()`, slot)
	if err != nil {
		return fmt.Errorf("record the start of the recovery of slot %q in %s: %w", slot, table.StateTable(), err)
	}
	return nil
}

// EndRecovery records that the recovery of slot is done: every row it had
// to republish was acknowledged.
func EndRecovery(ctx context.Context, db schema.Execer, table schema.Table, slot string) error {
	_, err := db.Exec(ctx, `UPDATE `+table.StateTable().Quoted()+` SET recovery_started = NULL, updated_at = now() WHERE slot_name = $1`, slot)
	if err != nil {
		return fmt.Errorf("record the end of the recovery of slot %q in %s: %w", slot, table.StateTable(), err)
	}
	return nil
}

// RecoveryStarted returns when a recovery of slot began that has not ended,
// and false when none is recorded. Errors wrap PostgreSQL's, as
// LoadHorizon's do.
func RecoveryStarted(ctx context.Context, db RowQuerier, table schema.Table, slot string) (time.Time, bool, error) {
	var at time.Time
	err := db.QueryRow(ctx, `SELECT recovery_started FROM `+table.StateTable().Quoted()+` WHERE slot_name = $1 AND recovery_started IS NOT NULL`, slot).Scan(&at)
	if errors.Is(err, pgx.ErrNoRows) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, fmt.Errorf("read the recovery of slot %q from %s: %w", slot, table.StateTable(), err)
	}
	return at, true, nil
}
