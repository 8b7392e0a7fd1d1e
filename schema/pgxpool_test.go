package schema_test

import (
	"database/sql"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/outbox-relay/outbox-relay/schema"
)

var _ schema.Execer = (*pgxpool.Pool)(nil)

func init() {
	writers = append(writers,
		writer{"pgxpool.Pool", func(t *testing.T, dsn string, ob schema.Outbox, msgs []schema.Message) error {
			pool, err := pgxpool.New(t.Context(), dsn)
			if err != nil {
				t.Fatalf("pgxpool.New: %v", err)
			}
			defer pool.Close()
			return ob.Insert(t.Context(), pool, msgs...)
		}},
		writer{"sql.Tx", func(t *testing.T, dsn string, ob schema.Outbox, msgs []schema.Message) error {
			tx, err := openSQL(t, dsn).BeginTx(t.Context(), nil)
			if err != nil {
				t.Fatalf("begin: %v", err)
			}
			if err := ob.InsertSQL(t.Context(), tx, msgs...); err != nil {
				tx.Rollback()
				return err
			}
			return tx.Commit()
		}},
		writer{"sql.DB", func(t *testing.T, dsn string, ob schema.Outbox, msgs []schema.Message) error {
			return ob.InsertSQL(t.Context(), openSQL(t, dsn), msgs...)
		}},
	)
}

// openSQL opens dsn with pgx's database/sql driver, closed when t ends.
func openSQL(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatalf("sql.Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestInsertSQLRollback(t *testing.T) {
	msgs := sample()
	for _, commit := range []bool{false, true} {
		name := map[bool]string{false: "rollback", true: "commit"}[commit]
		t.Run(name, func(t *testing.T) {
			dsn, conn := newOutbox(t)
			tx, err := openSQL(t, dsn).BeginTx(t.Context(), nil)
			if err != nil {
				t.Fatalf("begin: %v", err)
			}
			if err := schema.InsertSQL(t.Context(), tx, msgs...); err != nil {
				t.Fatalf("InsertSQL: %v", err)
			}
			if got := count(t, conn, schema.DefaultTable); got != 0 {
				t.Errorf("before %s another session sees %d rows, want 0", name, got)
			}
			want := 0
			if commit {
				err, want = tx.Commit(), len(msgs)
			} else {
				err = tx.Rollback()
			}
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if got := count(t, conn, schema.DefaultTable); got != want {
				t.Errorf("after %s outbox holds %d rows, want %d", name, got, want)
			}
		})
	}
}

func TestInsertPoolRejects(t *testing.T) {
	// Through a pool every statement commits on its own, as through a
	// *pgx.Conn in TestInsertRejectsInDatabase.
	dsn, conn := newOutbox(t)
	pool, err := pgxpool.New(t.Context(), dsn)
	if err != nil {
		t.Fatalf("pgxpool.New: %v", err)
	}
	defer pool.Close()
	for _, b := range badMessages {
		t.Run(b.name, func(t *testing.T) {
			msgs := numbered(10)
			b.change(&msgs[7])
			if err := schema.Insert(t.Context(), pool, msgs...); err == nil {
				t.Fatalf("Insert succeeded, want an error")
			}
			if got := count(t, conn, schema.DefaultTable); got != 0 {
				t.Errorf("after a rejected Insert, outbox holds %d rows, want 0", got)
			}
		})
	}
}
