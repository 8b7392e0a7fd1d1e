package inbox

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/outbox-relay/outbox-relay/schema"
)

// Execer runs a statement: pgx.Tx, *pgx.Conn and *pgxpool.Pool satisfy it.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// SetupSQL returns the DDL of the inbox table named table ("schema.name" or
// "name", schema public; empty means DefaultTable), for a DBA to run or
// review. Every statement is idempotent (IF NOT EXISTS). The table:
//
//	CREATE TABLE IF NOT EXISTS public.outbox_inbox (
//	    consumer     text        NOT NULL,  -- Config.Name
//	    event_id     text        NOT NULL,  -- the deduplication key
//	    topic        text        NOT NULL,
//	    "partition"  integer     NOT NULL,
//	    "offset"     bigint      NOT NULL,
//	    position     text COLLATE "C",      -- the position header, if any
//	    processed_at timestamptz NOT NULL DEFAULT now(),
//	    PRIMARY KEY (consumer, event_id));
//	CREATE INDEX IF NOT EXISTS outbox_inbox_processed_at_idx
//	    ON public.outbox_inbox (consumer, processed_at);
//
// The index serves retention (Prune). The consumer's role needs SELECT,
// INSERT and, to prune, DELETE on the table.
func SetupSQL(table string) (string, error) {
	t, err := parseTable(table)
	if err != nil {
		return "", err
	}
	index := pgx.Identifier{t.Name + "_processed_at_idx"}.Sanitize()
	return fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %[1]s (
    consumer     text        NOT NULL,
    event_id     text        NOT NULL,
    topic        text        NOT NULL,
    "partition"  integer     NOT NULL,
    "offset"     bigint      NOT NULL,
    position     text COLLATE "C",
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
CREATE INDEX IF NOT EXISTS %[2]s ON %[1]s (consumer, processed_at);
`, t.Quoted(), index), nil
}

// Setup creates the inbox table named table (see SetupSQL) through db if it
// does not exist; on an existing table it changes nothing.
func Setup(ctx context.Context, db Execer, table string) error {
	sql, err := SetupSQL(table)
	if err != nil {
		return err
	}
	if _, err := db.Exec(ctx, sql); err != nil {
		return fmt.Errorf("create inbox table %s: %w", table, err)
	}
	return nil
}

// parseTable reads table, empty meaning DefaultTable.
func parseTable(table string) (schema.Table, error) {
	if table == "" {
		table = DefaultTable
	}
	t, err := schema.ParseTable(table)
	if err != nil {
		return schema.Table{}, fmt.Errorf("inbox: %w", err)
	}
	return t, nil
}
