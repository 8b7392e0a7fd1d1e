package cdc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/outbox-relay/outbox-relay/schema"
)

// SetupSQL returns every statement Setup may run for cfg, in order, for a
// person to review or run by hand. Setup runs only those still needed.
func SetupSQL(cfg Config) ([]string, error) {
	cfg = cfg.withDefaults()
	ms, err := schema.Migrations(cfg.Table, cfg.Columns)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range ms {
		out = append(out, m.SQL)
	}
	return append(out,
		schema.CreatePublicationSQL(cfg.Publication, cfg.Table)+";",
		createSlotSQL(cfg.Slot)+";",
	), nil
}

// Setup makes the outbox table (if missing), the SQL function outbox_emit
// in the table's schema (if missing), the publication (if missing, or adds
// the table to it) and the replication slot (if missing), in that order: a
// publication must exist before the rows it publishes are written. It also
// creates the relay's state table next to the outbox table, when missing.
// It is idempotent. It needs the table's ownership (or CREATE on its schema)
// and the REPLICATION attribute; without CREATE on the schema it logs that
// outbox_emit is missing and goes on.
func Setup(ctx context.Context, conn *pgx.Conn, cfg Config, logger *slog.Logger) error {
	cfg = cfg.withDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	log := logger.With("component", "setup")
	if err := checkWALLevel(ctx, conn); err != nil {
		return err
	}

	exists, err := tableExists(ctx, conn, cfg.Table)
	if err != nil {
		return err
	}
	if !exists {
		ms, err := schema.Migrations(cfg.Table, cfg.Columns)
		if err != nil {
			return err
		}
		for _, m := range ms {
			if _, err := conn.Exec(ctx, m.SQL); err != nil {
				return fmt.Errorf("create outbox table %s (migration %s): %w", cfg.Table, m.Name, err)
			}
		}
		log.Info("outbox table created", "table", cfg.Table.String())
	} else if err := setupState(ctx, conn, cfg, log); err != nil {
		return err
	}

	if err := CheckColumns(ctx, conn, cfg.Table, cfg.Columns); err != nil {
		return err
	}
	if err := ensureEmitFunction(ctx, conn, cfg, log); err != nil {
		return err
	}

	st, err := readPublished(ctx, conn, cfg.Table, cfg.Publication)
	if err != nil {
		return err
	}
	switch {
	case !st.pubExists:
		if _, err := conn.Exec(ctx, schema.CreatePublicationSQL(cfg.Publication, cfg.Table)); err != nil {
			if Refused(err) {
				return fmt.Errorf("create publication %q for %s: %w; creating it needs CREATE on the database and ownership of the table: run setup as the table's owner or an admin", cfg.Publication, cfg.Table, err)
			}
			return fmt.Errorf("create publication %q for %s: %w", cfg.Publication, cfg.Table, err)
		}
		log.Info("publication created", "publication", cfg.Publication)
	case !st.published:
		if _, err := conn.Exec(ctx, addTableToPublicationSQL(cfg.Publication, cfg.Table)); err != nil {
			if Refused(err) {
				return fmt.Errorf("add %s to publication %q: %w; that needs ownership of the publication and the table: run setup as their owner or an admin", cfg.Table, cfg.Publication, err)
			}
			return fmt.Errorf("add %s to publication %q: %w", cfg.Table, cfg.Publication, err)
		}
		log.Info("table added to publication", "publication", cfg.Publication, "table", cfg.Table.String())
	}

	created, err := CreateSlot(ctx, conn, cfg.Slot)
	if err != nil {
		return err
	}
	if created {
		log.Info("slot created", "slot", cfg.Slot)
	}
	s, err := ReadSlot(ctx, conn, cfg.Slot)
	if err != nil {
		return err
	}
	return s.Usable()
}

// ensureEmitFunction creates the SQL function outbox_emit in the table's
// schema when it is missing. A role that may not create it there is told
// so in a warning: the table-less outbox works without it, through
// pg_logical_emit_message or schema.Emit.
func ensureEmitFunction(ctx context.Context, conn *pgx.Conn, cfg Config, log *slog.Logger) error {
	fn := emitFunction(cfg.Table)
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT to_regprocedure($1) IS NOT NULL", fn).Scan(&exists); err != nil {
		return fmt.Errorf("look up function %s: %w", fn, err)
	}
	if exists {
		return nil
	}
	ms, err := schema.Migrations(cfg.Table, cfg.Columns)
	if err != nil {
		return err
	}
	for _, m := range ms {
		if m.Version != emitMigration {
			continue
		}
		if _, err := conn.Exec(ctx, m.SQL); err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == "42501" { // insufficient_privilege
				log.Warn("function outbox_emit not created: this role may not create functions in the table's schema; "+
					"have its owner run the SQL of `outbox-relay setup --dry-run` that creates it, or emit messages with pg_logical_emit_message",
					"function", fn, "err", err)
				return nil
			}
			return fmt.Errorf("create function %s (migration %s): %w", fn, m.Name, err)
		}
		log.Info("function created", "function", fn)
	}
	return nil
}

// setupState creates the relay's state table next to an outbox table that
// already existed, when it is missing (migration stateMigration).
func setupState(ctx context.Context, conn *pgx.Conn, cfg Config, log *slog.Logger) error {
	st := cfg.Table.StateTable()
	if ok, err := tableExists(ctx, conn, st); err != nil || ok {
		return err
	}
	ms, err := schema.Migrations(cfg.Table, cfg.Columns)
	if err != nil {
		return err
	}
	for _, m := range ms {
		if m.Version != stateMigration {
			continue
		}
		if _, err := conn.Exec(ctx, m.SQL); err != nil {
			return fmt.Errorf("create state table %s (migration %s): %w", st, m.Name, err)
		}
	}
	log.Info("state table created", "table", st.String())
	return nil
}

// The versions of the migrations of schema.Migrations that Setup runs on
// their own, against an outbox table made before them.
const (
	// emitMigration creates the SQL function outbox_emit (emitFunction).
	emitMigration = 2
	// stateMigration creates the relay's state table
	// (schema.Table.StateTable).
	stateMigration = 3
)

// emitFunction returns the signature of the SQL function outbox_emit that
// migration emitMigration creates in t's schema, quoted, as to_regprocedure
// reads it.
func emitFunction(t schema.Table) string {
	return pgx.Identifier{t.Schema}.Sanitize() + ".outbox_emit(text, text, text, jsonb, jsonb)"
}

// addTableToPublicationSQL returns the statement that adds t to the
// existing publication pub.
func addTableToPublicationSQL(pub string, t schema.Table) string {
	return "ALTER PUBLICATION " + pgx.Identifier{pub}.Sanitize() + " ADD TABLE " + t.Quoted()
}
