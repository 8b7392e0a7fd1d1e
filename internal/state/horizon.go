package state

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/outbox-relay/outbox-relay/schema"
)

// Horizon divides the outbox's rows into those the relay has confirmed and
// those it may not have. Rows carry no LSN, and created_at is the start
// time of the inserting transaction, so neither says whether the relay has
// confirmed a row; a horizon does.
//
// A horizon is taken (TakeHorizon) in one statement: first the snapshot S
// (pg_current_snapshot()), then the WAL insert position W
// (pg_current_wal_insert_lsn()) and the time T (now()). A transaction
// inserts its commit record before it leaves the proc array, so every
// transaction S sees as finished wrote its commit record before W. Once the
// slot's confirmed_flush_lsn is at or past W, the relay has confirmed every
// transaction that committed before S was taken: the horizon is
// confirmed. A horizon not confirmed yet is pending.
//
// Which rows a horizon covers is CommittedIn: those whose inserting
// transaction had finished before the oldest transaction running at S began
// (xmin below pg_snapshot_xmin(S)). That is narrower than "visible in S"
// (pg_visible_in_snapshot) on purpose: S lists only top-level transaction
// IDs, so a row written in a subtransaction (a SAVEPOINT, a PL/pgSQL
// exception block) of a transaction still running at S would look finished
// although its commit record may come after W. A row of a transaction that
// was running at S, or that began later, is not covered; the next horizon
// covers it.
type Horizon struct {
	// Snapshot is S in pg_snapshot's text form, xmin:xmax:xip_list.
	Snapshot string
	// LSN is W: pg_current_wal_insert_lsn() read just after S.
	LSN pglogrepl.LSN
	// Time is T: now() of the statement that took the horizon, read before
	// S. Once the horizon is confirmed, every transaction that had finished
	// committing by T is confirmed, so T bounds from below the time before
	// which nothing committed is unconfirmed. (A commit timestamp is taken a
	// moment before the transaction finishes committing; compare with a
	// margin.) Every row CommittedIn covers committed before T.
	Time time.Time
	// ConfirmedLSN is the slot's confirmed_flush_lsn when the horizon was
	// found confirmed, at or past LSN; zero in a pending horizon.
	ConfirmedLSN pglogrepl.LSN
}

// RowQuerier runs a query returning at most one row; pgx.Tx, *pgx.Conn and
// *pgxpool.Pool satisfy it.
type RowQuerier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// takeHorizonSQL reads S in a materialized CTE, so that W and T are read
// after it: W must be at or past every commit record S sees.
const takeHorizonSQL = `
	WITH s AS MATERIALIZED (SELECT pg_current_snapshot() AS snap)
	SELECT snap::text, pg_current_wal_insert_lsn(), now() FROM s`

// TakeHorizon takes a pending horizon through db, a normal (not
// replication) connection to the primary. Run it outside an explicit
// transaction, or T is that transaction's start. It fails on a standby
// (pg_current_wal_insert_lsn needs the primary).
func TakeHorizon(ctx context.Context, db RowQuerier) (Horizon, error) {
	var h Horizon
	if err := db.QueryRow(ctx, takeHorizonSQL).Scan(&h.Snapshot, &h.LSN, &h.Time); err != nil {
		return Horizon{}, fmt.Errorf("take horizon: %w", err)
	}
	return h, nil
}

// SaveHorizon records h as the confirmed horizon of slot in the state table
// next to table (schema.Table.StateTable), through db. It keeps the newer
// one: a horizon older than the one recorded (a lower LSN, as a second
// relay on the slot may save) changes nothing, and so does any horizon
// while a recovery of the slot is recorded as begun (MarkRecovery): the
// slot then is a new one, whose position says nothing of the rows the
// recovery has yet to republish. The caller must have seen the slot's
// confirmed_flush_lsn at or past h.LSN and set h.ConfirmedLSN to it.
// Errors wrap PostgreSQL's: undefined_table (42P01) when setup has not
// created the state table, insufficient_privilege (42501) without INSERT
// and UPDATE on it.
func SaveHorizon(ctx context.Context, db schema.Execer, table schema.Table, slot string, h Horizon) error {
	st := table.StateTable().Quoted()
	_, err := db.Exec(ctx, `
		INSERT INTO `+st+` AS s (slot_name, horizon_snapshot, horizon_lsn, horizon_time, confirmed_lsn, updated_at)
		VALUES ($1, $2::pg_snapshot, $3::pg_lsn, $4, $5::pg_lsn, now())
		ON CONFLICT (slot_name) DO UPDATE SET
			horizon_snapshot = EXCLUDED.horizon_snapshot, horizon_lsn = EXCLUDED.horizon_lsn,
			horizon_time = EXCLUDED.horizon_time, confirmed_lsn = EXCLUDED.confirmed_lsn, updated_at = now()
		WHERE s.recovery_started IS NULL AND (s.horizon_lsn IS NULL OR s.horizon_lsn <= EXCLUDED.horizon_lsn)`,
		slot, h.Snapshot, h.LSN.String(), h.Time, h.ConfirmedLSN.String())
	if err != nil {
		return fmt.Errorf("save horizon of slot %q at %s in %s: %w", slot, h.LSN, table.StateTable(), err)
	}
	return nil
}

// LoadHorizon returns the confirmed horizon recorded for slot in the state
// table next to table, and false when none is recorded. Errors wrap
// PostgreSQL's, as SaveHorizon's do (SELECT is needed).
func LoadHorizon(ctx context.Context, db RowQuerier, table schema.Table, slot string) (Horizon, bool, error) {
	var h Horizon
	err := db.QueryRow(ctx, `
		SELECT horizon_snapshot::text, horizon_lsn, horizon_time, confirmed_lsn
		FROM `+table.StateTable().Quoted()+` WHERE slot_name = $1 AND horizon_snapshot IS NOT NULL`, slot).
		Scan(&h.Snapshot, &h.LSN, &h.Time, &h.ConfirmedLSN)
	if errors.Is(err, pgx.ErrNoRows) {
		return Horizon{}, false, nil
	}
	if err != nil {
		return Horizon{}, false, fmt.Errorf("load horizon of slot %q from %s: %w", slot, table.StateTable(), err)
	}
	return h, true, nil
}

// CommittedIn returns an SQL boolean expression that is true for a row of t
// whose inserting transaction had finished when the snapshot in the query
// parameter param (such as "$1", a pg_snapshot's text form,
// Horizon.Snapshot) was taken, and before every transaction running then
// began: the rows the horizon of that snapshot covers (see Horizon). Prune
// and recovery share this one definition. The expression names the row's
// xmin qualified by t, so use it where t is in FROM without an alias. Only
// committed rows are visible to a query, so among them it selects those
// committed before the snapshot; a row of a transaction running then, or
// begun later, is not selected.
//
// xmin is a 32-bit transaction ID and the snapshot holds 64-bit ones
// (xid8); the row's is made 64-bit by its signed 32-bit distance from the
// snapshot's xmax, which is exact for any transaction ID less than 2^31
// transactions from it (PostgreSQL's wraparound protection keeps live rows
// within that). Special IDs (below 3) are never selected. VACUUM FREEZE
// keeps the raw xmin, so a frozen row more than 2^31 transactions older
// than the snapshot reads as a future one and is not selected: prune keeps
// it and recovery sends it again, never the other way round.
func CommittedIn(t schema.Table, param string) string {
	xmin := t.Quoted() + ".xmin::text::bigint"
	snap := param + "::pg_snapshot"
	xmax8 := "pg_snapshot_xmax(" + snap + ")::text::bigint"
	return fmt.Sprintf("(%[1]s >= 3 AND %[2]s + ((((%[1]s - %[2]s) %% 4294967296) + 4294967296 + 2147483648) %% 4294967296 - 2147483648) < pg_snapshot_xmin(%[3]s)::text::bigint)",
		xmin, xmax8, snap)
}
