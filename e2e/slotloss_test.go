package e2e

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/outbox-relay/outbox-relay/schema"
)

// TestSlotDroppedWhileRunning drops the slot while the relay reconnects
// after its walsender was terminated: the relay must not create a new slot
// (which would skip every event committed meanwhile) but exit non-zero
// saying what happened and what to do.
func TestSlotDroppedWhileRunning(t *testing.T) {
	e := newEnv(t)
	p := e.start()
	p.waitStreaming(30 * time.Second)
	e.query(t, 10*time.Second, func(ctx context.Context, conn *pgx.Conn) error {
		return schema.Insert(ctx, conn, schema.Message{AggregateType: "order", AggregateID: "1", EventType: "created", Payload: []byte(`{}`)})
	})

	// Terminate the walsender and drop the slot before the relay takes it
	// again: the relay waits at least 250ms before reconnecting.
	dropped := false
	e.query(t, 20*time.Second, func(ctx context.Context, conn *pgx.Conn) error {
		for !dropped && ctx.Err() == nil {
			if _, err := conn.Exec(ctx, `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL`, e.slot); err != nil {
				return err
			}
			_, err := conn.Exec(ctx, `SELECT pg_drop_replication_slot($1)`, e.slot)
			var pgErr *pgconn.PgError
			switch {
			case err == nil:
				dropped = true
			case errors.As(err, &pgErr) && pgErr.Code == "55006": // still active
				time.Sleep(5 * time.Millisecond)
			default:
				return err
			}
		}
		return ctx.Err()
	})
	e.query(t, 10*time.Second, func(ctx context.Context, conn *pgx.Conn) error {
		return schema.Insert(ctx, conn, schema.Message{AggregateType: "order", AggregateID: "1", EventType: "paid", Payload: []byte(`{}`)})
	})

	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		var recreated bool
		e.query(t, 10*time.Second, func(ctx context.Context, conn *pgx.Conn) error {
			return conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)`, e.slot).Scan(&recreated)
		})
		t.Fatalf("relay still running 30s after its slot was dropped (slot exists again: %v)\n%s", recreated, p.logText())
	}
	if code := p.cmd.ProcessState.ExitCode(); code == 0 {
		t.Errorf("exit code = 0 after the slot was dropped, want non-zero\n%s", p.logText())
	}
	logs := p.logText() // the last line, the exit error, is plain text
	for _, want := range []string{`replication slot "` + e.slot + `" disappeared while the relay was running`, "outbox-relay setup", "republish"} {
		if !strings.Contains(logs, want) {
			t.Errorf("stderr lacks %q:\n%s", want, logs)
		}
	}
}

// TestTableRecreatedWhileRunning drops the outbox table and creates it
// again while the relay streams. The new table is not in the publication,
// so pgoutput sends none of its rows: the relay must stop, non-zero, saying
// so and naming the replay to run. Setup and that replay then bring the
// row that was not relayed, and a new relay streams the new table.
func TestTableRecreatedWhileRunning(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.consumer()
	p := e.start()
	p.waitStreaming(30 * time.Second)
	insertEvents(t, e.dsn, "order", 1, 1)
	expectEvents(t, c, p, 1)

	e.query(t, 10*time.Second, func(ctx context.Context, conn *pgx.Conn) error {
		_, err := conn.Exec(ctx, `ALTER TABLE outbox RENAME TO outbox_old;
			CREATE TABLE outbox (LIKE outbox_old INCLUDING ALL);
			DROP TABLE outbox_old`)
		return err
	})
	insertEvents(t, e.dsn, "order", 1, 1) // into the new table: not relayed

	if code := p.waitExit(t, 30*time.Second, "its table was created again"); code == 0 {
		t.Errorf("exit code = 0 after the table was created again, want non-zero\n%s", p.logText())
	}
	logs := p.logText()
	m := regexp.MustCompile(`outbox-relay replay --since (\S+)`).FindStringSubmatch(logs)
	if !strings.Contains(logs, "public.outbox was dropped and created again") || m == nil {
		t.Fatalf("stderr does not say the table was created again and which replay to run:\n%s", logs)
	}

	t.Logf("the relay stopped: %s", logs[strings.LastIndex(strings.TrimSpace(logs), "\n")+1:])

	if out, err := e.command(t.Context(), "setup").CombinedOutput(); err != nil {
		t.Fatalf("outbox-relay setup: %v\n%s", err, out)
	}
	if out, err := e.command(t.Context(), "replay", "--since", m[1]).CombinedOutput(); err != nil {
		t.Fatalf("outbox-relay replay --since %s: %v\n%s", m[1], err, out)
	}
	expectEvents(t, c, p, 1)

	relaysOneRow(t, e, c)
}

// relaysOneRow starts a relay, checks that a row written once it streams
// reaches c, and stops it with SIGTERM, which must exit 0.
func relaysOneRow(t *testing.T, e *env, c *consumer) {
	t.Helper()
	p := e.start()
	p.waitStreaming(30 * time.Second)
	insertEvents(t, e.dsn, "order", 1, 1)
	expectEvents(t, c, p, 1)
	if code := p.term(30 * time.Second); code != 0 {
		t.Fatalf("exit code after SIGTERM = %d, want 0\n%s", code, p.logText())
	}
}

// TestColumnRenamedBack renames a mapped column and renames it back while
// no relay runs, with a row written in between. PostgreSQL decodes that
// row with the columns of its time, so the relay must stop at it, saying
// so and naming the way on; following it (move the slot past the rows,
// replay from before the rename) must deliver every row, and a new relay
// must stream.
func TestColumnRenamedBack(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.consumer()
	since := time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
	relaysOneRow(t, e, c)

	execSQL(t, e.dsn,
		`ALTER TABLE outbox RENAME COLUMN aggregate_id TO agg_id`,
		`INSERT INTO outbox (id, aggregate_type, agg_id, event_type, payload) VALUES (gen_random_uuid(), 'order', 'between', 'e', '{}')`,
		`ALTER TABLE outbox RENAME COLUMN agg_id TO aggregate_id`)
	insertEvents(t, e.dsn, "order", 1, 1)

	p := e.start()
	if code := p.waitExit(t, 30*time.Second, "rows of the earlier shape"); code == 0 {
		t.Errorf("exit code = 0 at rows written under another column name, want non-zero\n%s", p.logText())
	}
	logs := p.logText()
	for _, want := range []string{
		"rows in the slot were written with other columns",
		"without aggregate_id (for aggregate_id)",
		"pg_replication_slot_advance('" + e.slot + "', pg_current_wal_lsn())",
		"outbox-relay replay --since",
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("stderr does not say %q:\n%s", want, logs)
		}
	}

	e.query(t, 30*time.Second, func(ctx context.Context, conn *pgx.Conn) error {
		_, err := conn.Exec(ctx, `SELECT pg_replication_slot_advance($1, pg_current_wal_lsn())`, e.slot)
		return err // retried while the server still holds the slot
	})
	if out, err := e.command(t.Context(), "replay", "--since", since).CombinedOutput(); err != nil {
		t.Fatalf("outbox-relay replay --since %s: %v\n%s", since, err, out)
	}
	expectEvents(t, c, p, 3) // the first row again, the one between and the one after

	relaysOneRow(t, e, c)
}
