package pgtest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// databaseTimeout bounds creating a database, and dropping it.
const databaseTimeout = 30 * time.Second

// NewDatabase creates an empty database on the package's server (see Server)
// and returns its DSN; the database goes away when t ends, as with
// Cluster.NewDatabase.
func NewDatabase(t testing.TB) string {
	t.Helper()
	return Server(t).NewDatabase(t)
}

// NewDatabase creates an empty database with a name unique to t on c and
// returns its DSN. When t ends it terminates the database's sessions and
// replication connections, drops its replication slots and drops it, unless
// Stop has removed c by then; what it cannot drop within 30 seconds fails t.
// It fails t at once if the database cannot be created.
func (c *Cluster) NewDatabase(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), databaseTimeout)
	defer cancel()
	name, err := c.createDatabase(ctx, t.Name())
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		c.mu.Lock()
		stopped := c.stopped
		c.mu.Unlock()
		if stopped {
			return // Stop removed the database with the cluster.
		}
		ctx, cancel := context.WithTimeout(context.Background(), databaseTimeout)
		defer cancel()
		if err := c.dropDatabase(ctx, name); err != nil {
			t.Errorf("pgtest: %v", err)
		}
	})
	return c.DSN(name)
}

// createDatabase creates a database named after test and returns its name.
func (c *Cluster) createDatabase(ctx context.Context, test string) (string, error) {
	conn, err := pgx.Connect(ctx, c.DSN(""))
	if err != nil {
		return "", fmt.Errorf("create database: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for {
		name := databaseName(test)
		_, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
		if sqlState(err) == "42P04" { // duplicate_database: draw another name
			continue
		}
		if err != nil {
			return "", fmt.Errorf("create database %s: %w", name, err)
		}
		return name, nil
	}
}

// dropDatabase drops the database name with its replication slots, retrying
// while sessions that are being terminated still use them.
func (c *Cluster) dropDatabase(ctx context.Context, name string) error {
	conn, err := pgx.Connect(ctx, c.DSN(""))
	if err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for {
		err := dropOnce(ctx, conn, name)
		if sqlState(err) != "55006" { // object_in_use: a session still holds a slot
			if err != nil {
				return fmt.Errorf("drop database %s: %w", name, err)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("drop database %s: %w", name, errors.Join(err, ctx.Err()))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// dropOnce ends the sessions that hold the replication slots of database
// name, drops the slots that are free and then the database, whose remaining
// sessions DROP DATABASE ... WITH (FORCE) ends. It fails with SQLSTATE 55006
// while a slot is still active.
func dropOnce(ctx context.Context, conn *pgx.Conn, name string) error {
	if _, err := conn.Exec(ctx, `SELECT pg_terminate_backend(active_pid)
		FROM pg_replication_slots WHERE database = $1 AND active_pid IS NOT NULL`, name); err != nil {
		return fmt.Errorf("terminate replication sessions: %w", err)
	}
	if _, err := conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name)
		FROM pg_replication_slots WHERE database = $1 AND NOT active`, name); err != nil {
		return fmt.Errorf("drop replication slots: %w", err)
	}
	_, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	return err
}

// databaseName returns a new database name made of "pgtest_", the test name
// in lower case ASCII letters, digits and underscores, and a random suffix that
// keeps it unique among the test binaries sharing a server. It fits
// PostgreSQL's 63-byte limit on names.
func databaseName(test string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(test) {
		switch {
		case r >= 'a' && r <= 'z' || r >= '0' && r <= '9':
			b.WriteRune(r)
		case b.Len() > 0 && !strings.HasSuffix(b.String(), "_"):
			b.WriteByte('_')
		}
		if b.Len() >= 40 {
			break
		}
	}
	base := strings.TrimSuffix(b.String(), "_")
	if base == "" {
		base = "test"
	}
	return fmt.Sprintf("pgtest_%s_%08x", base, rand.Uint32())
}

// sqlState returns the SQLSTATE of a server error in err's chain, or "".
func sqlState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}
