package state_test

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

// newOutbox returns a connection to a fresh database holding the default
// outbox table and the state table next to it, as setup makes them.
func newOutbox(t *testing.T) (dsn string, conn *pgx.Conn) {
	t.Helper()
	dsn = pgtest.NewDatabase(t)
	conn = connect(t, dsn)
	ms, err := schema.Migrations(schema.DefaultTable, schema.DefaultColumns)
	if err != nil {
		t.Fatalf("Migrations: %v", err)
	}
	for _, m := range ms {
		if _, err := conn.Exec(t.Context(), m.SQL); err != nil {
			t.Fatalf("migration %s: %v\n%s", m.Name, err, m.SQL)
		}
	}
	return dsn, conn
}
