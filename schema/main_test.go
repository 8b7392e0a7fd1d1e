package schema_test

import (
	"context"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/outbox-relay/outbox-relay/cdc/pgtest"
	"github.com/outbox-relay/outbox-relay/schema"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// connect opens a connection to dsn that is closed when t ends.
func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// migrate runs every migration for table t with columns c through conn.
func migrate(t *testing.T, conn *pgx.Conn, tbl schema.Table, c schema.Columns) {
	t.Helper()
	ms, err := schema.Migrations(tbl, c)
	if err != nil {
		t.Fatalf("Migrations(%v, %+v): %v", tbl, c, err)
	}
	for _, m := range ms {
		if _, err := conn.Exec(t.Context(), m.SQL); err != nil {
			t.Fatalf("migration %s: %v\n%s", m.Name, err, m.SQL)
		}
	}
}

// newOutbox returns a connection to a fresh database holding the default
// outbox table.
func newOutbox(t *testing.T) (dsn string, conn *pgx.Conn) {
	t.Helper()
	dsn = pgtest.NewDatabase(t)
	conn = connect(t, dsn)
	migrate(t, conn, schema.DefaultTable, schema.DefaultColumns)
	return dsn, conn
}

// count returns the number of rows in tbl.
func count(t *testing.T, conn *pgx.Conn, tbl schema.Table) int {
	t.Helper()
	var n int
	if err := conn.QueryRow(t.Context(), "SELECT count(*) FROM "+tbl.Quoted()).Scan(&n); err != nil {
		t.Fatalf("count rows of %s: %v", tbl, err)
	}
	return n
}

// columnNames returns tbl's column names in table order.
func columnNames(t *testing.T, conn *pgx.Conn, tbl schema.Table) []string {
	t.Helper()
	rows, err := conn.Query(t.Context(),
		`SELECT column_name FROM information_schema.columns
		 WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position`, tbl.Schema, tbl.Name)
	if err != nil {
		t.Fatalf("columns of %s: %v", tbl, err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("columns of %s: %v", tbl, err)
	}
	return names
}
