package cdc

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/outbox-relay/outbox-relay/schema"
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

// querier is what the functions here need of a connection.
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
		return Slot{}, fmt.Errorf("slot %q in this database: %w; run `outbox-relay setup`", name, ErrNoSlot)
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
		return fmt.Errorf("slot %q uses plugin %q: %w; drop it or choose another --slot", s.Name, s.Plugin, ErrSlotPlugin)
	}
	if s.WALStatus == "lost" {
		return fmt.Errorf("slot %q lost WAL it needed (wal_status = lost): %w; events in the lost WAL cannot be relayed: drop the slot (SELECT pg_drop_replication_slot('%s')), run `outbox-relay setup`, and reconcile the outbox rows written since %s",
			s.Name, ErrSlotInvalidated, s.Name, s.ConfirmedFlush)
	}
	return nil
}

// CheckServer verifies what streaming needs from the server, the table and
// the publication: PostgreSQL 14 or later with wal_level = logical, the
// table exists, and the publication exists and includes the table. Errors
// wrap ErrServerVersion, ErrWALLevel, ErrNoTable, ErrNoPublication or
// ErrNotPublished.
func CheckServer(ctx context.Context, db querier, table schema.Table, publication string) error {
	if err := checkWALLevel(ctx, db); err != nil {
		return err
	}
	if ok, err := tableExists(ctx, db, table); err != nil {
		return err
	} else if !ok {
		return fmt.Errorf("table %s: %w; run `outbox-relay setup` or set --table", table, ErrNoTable)
	}
	exists, published, err := readPublication(ctx, db, publication, table)
	if err != nil {
		return err
	}
	if !exists {
		return fmt.Errorf("publication %q: %w; run `outbox-relay setup` (as the table's owner)", publication, ErrNoPublication)
	}
	if !published {
		return fmt.Errorf("publication %q lacks table %s: %w; run `outbox-relay setup`, or ALTER PUBLICATION %s ADD TABLE %s",
			publication, table, ErrNotPublished, publication, table)
	}
	return nil
}

// checkWALLevel returns an error wrapping ErrWALLevel unless the server
// decodes logically.
// minServerVersion is the oldest server_version_num the relay streams
// from: pgoutput sends logical decoding messages from PostgreSQL 14.
const minServerVersion = 140000

func checkWALLevel(ctx context.Context, db querier) error {
	var level string
	var version int
	if err := db.QueryRow(ctx, "SELECT current_setting('wal_level'), current_setting('server_version_num')::int").Scan(&level, &version); err != nil {
		return fmt.Errorf("read wal_level: %w", err)
	}
	if version < minServerVersion {
		return fmt.Errorf("PostgreSQL %d.%d: %w; the relay needs PostgreSQL 14 or later (pgoutput's logical decoding messages)", version/10000, version%10000, ErrServerVersion)
	}
	if level != "logical" {
		return fmt.Errorf("wal_level is %q: %w; set wal_level = logical (ALTER SYSTEM SET wal_level = logical, or in postgresql.conf) and restart PostgreSQL", level, ErrWALLevel)
	}
	return nil
}

// readPublication reports whether the publication exists and whether it
// includes table.
func readPublication(ctx context.Context, db querier, publication string, table schema.Table) (exists, published bool, _ error) {
	err := db.QueryRow(ctx, `
		SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1),
		       EXISTS (SELECT 1 FROM pg_publication_tables WHERE pubname = $1 AND schemaname = $2 AND tablename = $3)`,
		publication, table.Schema, table.Name).Scan(&exists, &published)
	if err != nil {
		return false, false, fmt.Errorf("read publication %q: %w", publication, err)
	}
	return exists, published, nil
}

func tableExists(ctx context.Context, db querier, t schema.Table) (bool, error) {
	var ok bool
	err := db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = $2)`, t.Schema, t.Name).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("look up table %s: %w", t, err)
	}
	return ok, nil
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
	if err := db.QueryRow(ctx, schema.CreateSlotSQL(name)).Scan(&lsn); err != nil {
		return false, fmt.Errorf("create replication slot %q: %w", name, err)
	}
	return true, nil
}

// CheckColumns verifies that table has every column cols maps, and returns
// an error wrapping ErrColumns that names those it lacks.
func CheckColumns(ctx context.Context, db interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}, table schema.Table, cols schema.Columns) error {
	rows, err := db.Query(ctx, `
		SELECT a.attname FROM pg_attribute a
		JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped
		ORDER BY a.attnum`, table.Schema, table.Name)
	if err != nil {
		return fmt.Errorf("read columns of %s: %w", table, err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("read columns of %s: %w", table, err)
	}
	if _, err := cols.Bind(table.String(), names); err != nil {
		return fmt.Errorf("%w: %w", ErrColumns, err)
	}
	return nil
}
