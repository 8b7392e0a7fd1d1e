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
	st, err := readPublished(ctx, db, table, publication)
	switch {
	case err != nil:
		return err
	case st.oid == 0:
		return fmt.Errorf("table %s: %w", table, ErrNoTable)
	case !st.pubExists:
		return fmt.Errorf("publication %q: %w", publication, ErrNoPublication)
	case !st.published:
		return fmt.Errorf("publication %q lacks table %s: %w", publication, table, ErrNotPublished)
	case !st.inserts:
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

// published is what the catalogs say of the outbox table and the
// publication: what streaming the table's inserts needs.
type published struct {
	oid       uint32 // the table's; 0 when it does not exist
	pubExists bool
	published bool // the publication includes the table
	inserts   bool // the publication publishes inserts
	allTables bool // the publication is FOR ALL TABLES
}

// readPublished reads table t and publication pub from the catalogs.
func readPublished(ctx context.Context, db querier, t schema.Table, pub string) (published, error) {
	var st published
	err := db.QueryRow(ctx, `
		SELECT coalesce((SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		                 WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')), 0),
		       EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $3),
		       EXISTS (SELECT 1 FROM pg_publication_tables WHERE pubname = $3 AND schemaname = $1 AND tablename = $2),
		       coalesce((SELECT pubinsert FROM pg_publication WHERE pubname = $3), false),
		       coalesce((SELECT puballtables FROM pg_publication WHERE pubname = $3), false)`,
		t.Schema, t.Name, pub).Scan(&st.oid, &st.pubExists, &st.published, &st.inserts, &st.allTables)
	if err != nil {
		return st, fmt.Errorf("read table %s and publication %q: %w", t, pub, err)
	}
	return st, nil
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
