package replayquery_test

import (
	"context"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/outbox-relay/outbox-relay/cdc/pgtest"
	"github.com/outbox-relay/outbox-relay/schema"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// newOutbox returns a connection to a fresh database holding the default
// outbox table, closed when t ends.
func newOutbox(t *testing.T) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), pgtest.NewDatabase(t))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	ms, err := schema.Migrations(schema.DefaultTable, schema.DefaultColumns)
	if err != nil {
		t.Fatalf("Migrations: %v", err)
	}
	for _, m := range ms {
		if _, err := conn.Exec(t.Context(), m.SQL); err != nil {
			t.Fatalf("migration %s: %v\n%s", m.Name, err, m.SQL)
		}
	}
	return conn
}
