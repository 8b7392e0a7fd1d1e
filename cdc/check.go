package cdc

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/outbox-relay/outbox-relay/schema"
)

// CheckServer verifies what streaming needs from the server, the table and
// the publication: PostgreSQL 14 or later with wal_level = logical, the
// table exists, and the publication exists, includes the table and
// publishes inserts. Errors wrap ErrServerVersion, ErrWALLevel, ErrNoTable,
// ErrNoPublication, ErrNotPublished or ErrNoInserts.
func CheckServer(ctx context.Context, db querier, table schema.Table, publication string) error {
	if err := checkWALLevel(ctx, db); err != nil {
		return err
	}
	if ok, err := tableExists(ctx, db, table); err != nil {
		return err
	} else if !ok {
		return fmt.Errorf("table %s: %w", table, ErrNoTable)
	}
	exists, published, err := readPublication(ctx, db, publication, table)
	if err != nil {
		return err
	}
	if !exists {
		return fmt.Errorf("publication %q: %w", publication, ErrNoPublication)
	}
	if !published {
		return fmt.Errorf("publication %q lacks table %s: %w", publication, table, ErrNotPublished)
	}
	var inserts bool
	if err := db.QueryRow(ctx, `SELECT pubinsert FROM pg_publication WHERE pubname = $1`, publication).Scan(&inserts); err != nil {
		return fmt.Errorf("read publication %q: %w", publication, err)
	}
	if !inserts {
		return fmt.Errorf("publication %q: %w; ALTER PUBLICATION %s SET (publish = 'insert')",
			publication, ErrNoInserts, pgx.Identifier{publication}.Sanitize())
	}
	return nil
}

// minServerVersion is the oldest server_version_num the relay streams
// from: pgoutput sends logical decoding messages from PostgreSQL 14.
const minServerVersion = 140000

// checkWALLevel returns an error wrapping ErrServerVersion when the server
// is older than minServerVersion, or ErrWALLevel unless it decodes
// logically.
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

// tableExists reports whether table t exists.
func tableExists(ctx context.Context, db querier, t schema.Table) (bool, error) {
	var ok bool
	err := db.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = $2)`, t.Schema, t.Name).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("look up table %s: %w", t, err)
	}
	return ok, nil
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
	if _, err := bind(cols, table.String(), names); err != nil {
		return fmt.Errorf("%w: %w", ErrColumns, err)
	}
	return nil
}
