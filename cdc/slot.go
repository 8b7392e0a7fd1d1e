package cdc

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
)

// Slot describes a replication slot as pg_replication_slots shows it.
type Slot struct {
	Name   string
	Plugin string
	// Active reports a connection streaming from the slot; ActivePID is its
	// server process, or zero.
	Active    bool
	ActivePID int32
	// ConfirmedFlush is the position the last consumer confirmed.
	ConfirmedFlush pglogrepl.LSN
	// RestartLSN is the oldest WAL the slot makes the server keep.
	RestartLSN pglogrepl.LSN
	// WALStatus is reserved, extended, unreserved or lost.
	WALStatus string
	// CurrentLSN is pg_current_wal_lsn() when the slot was read.
	CurrentLSN pglogrepl.LSN
	// SafeWALBytes is the WAL that can still be written before the slot
	// risks invalidation (safe_wal_size); -1 when max_slot_wal_keep_size is
	// unlimited or the slot is lost.
	SafeWALBytes int64
}

// LagBytes is the WAL written since the slot's confirmed position.
func (s Slot) LagBytes() int64 { return lsnDiff(s.CurrentLSN, s.ConfirmedFlush) }

// RetainedBytes is the WAL the slot makes the server keep.
func (s Slot) RetainedBytes() int64 { return lsnDiff(s.CurrentLSN, s.RestartLSN) }

func lsnDiff(a, b pglogrepl.LSN) int64 {
	if a < b || b == 0 {
		return 0
	}
	return int64(a - b)
}

// querier is what this package's catalog reads need of a connection:
// *pgx.Conn, pgx.Tx and *pgxpool.Pool fit.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// ReadSlot returns the named slot in the connected database, or an error
// wrapping ErrNoSlot.
func ReadSlot(ctx context.Context, db querier, name string) (Slot, error) {
	var s Slot
	var pid *int32
	var confirmed, restart *pglogrepl.LSN
	var walStatus *string
	err := db.QueryRow(ctx, `
		SELECT slot_name, coalesce(plugin, ''), active, active_pid,
		       confirmed_flush_lsn, restart_lsn, wal_status, pg_current_wal_lsn(), coalesce(safe_wal_size, -1)
		FROM pg_replication_slots WHERE slot_name = $1 AND database = current_database()`, name).
		Scan(&s.Name, &s.Plugin, &s.Active, &pid, &confirmed, &restart, &walStatus, &s.CurrentLSN, &s.SafeWALBytes)
	if errors.Is(err, pgx.ErrNoRows) {
		return Slot{}, fmt.Errorf("slot %q in this database: %w", name, ErrNoSlot)
	}
	if err != nil {
		return Slot{}, fmt.Errorf("read replication slot %q: %w", name, err)
	}
	if pid != nil {
		s.ActivePID = *pid
	}
	if confirmed != nil {
		s.ConfirmedFlush = *confirmed
	}
	if restart != nil {
		s.RestartLSN = *restart
	}
	if walStatus != nil {
		s.WALStatus = *walStatus
	}
	return s, nil
}

// Usable returns an error, wrapping a sentinel of this package, when the
// relay cannot stream from s.
func (s Slot) Usable() error {
	if s.Plugin != "pgoutput" {
		return fmt.Errorf("slot %q uses plugin %q: %w", s.Name, s.Plugin, ErrSlotPlugin)
	}
	if s.WALStatus == "lost" {
		return fmt.Errorf("slot %q lost WAL it needed (wal_status = lost), so events committed since %s cannot be relayed from it: %w",
			s.Name, s.ConfirmedFlush, ErrSlotInvalidated)
	}
	return nil
}

// CreateSlot creates the named pgoutput slot unless it exists, and reports
// whether it did. A new slot sees only transactions that commit after it.
func CreateSlot(ctx context.Context, db querier, name string) (bool, error) {
	var exists bool
	if err := db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)`, name).Scan(&exists); err != nil {
		return false, fmt.Errorf("look up slot %q: %w", name, err)
	}
	if exists {
		return false, nil
	}
	var lsn pglogrepl.LSN
	if err := db.QueryRow(ctx, createSlotSQL(name)).Scan(&lsn); err != nil {
		if Refused(err) {
			return false, fmt.Errorf("create replication slot %q: %w; the role needs the REPLICATION attribute (ALTER ROLE name REPLICATION), or run setup as an admin", name, err)
		}
		return false, fmt.Errorf("create replication slot %q: %w", name, err)
	}
	return true, nil
}

// createSlotSQL returns the statement that creates the logical replication
// slot named slot with the pgoutput plugin, with the name as a literal so
// that a person can run it as it is (setup --dry-run prints it).
func createSlotSQL(slot string) string {
	return "SELECT lsn FROM pg_create_logical_replication_slot('" + strings.ReplaceAll(slot, "'", "''") + "', 'pgoutput')"
}
