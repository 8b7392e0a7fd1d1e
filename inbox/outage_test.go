package inbox

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestDatabaseOutage loses the handler's connection more often than
// MaxAttempts: the record is retried, not dead-lettered, and applied once
// the database is back.
func TestDatabaseOutage(t *testing.T) {
	c := newBroker(t, 1)
	db := newDB(t)
	produce(t, c, event("acct-1", 9, 0))
	cfg := testConfig(c, db, "outage")
	cfg.MaxAttempts = 2
	var calls atomic.Int32
	h := func(ctx context.Context, tx pgx.Tx, ev Event) error {
		if calls.Add(1) <= 5 {
			// The server ends this session, as a restart or failover would.
			_, err := tx.Exec(ctx, "SELECT pg_terminate_backend(pg_backend_pid())")
			return err
		}
		return balanceHandler(ctx, tx, ev)
	}
	r := start(t, cfg, h, nil)
	waitFor(t, "the event applied", func() bool { return testutil.ToFloat64(r.c.metrics.processed) == 1 })
	if got := testutil.ToFloat64(r.c.metrics.dead); got != 0 {
		t.Errorf("dead letters = %v, want 0: a database outage dead-lettered the record", got)
	}
	if got := calls.Load(); got != 6 {
		t.Errorf("handler called %d times, want 6", got)
	}
	if got := queryInt(t, db, `SELECT cents FROM balances WHERE id = 'acct-1'`); got != 9 {
		t.Errorf("balance = %d, want 9", got)
	}
}

// TestMissingTable: Run refuses to start without the inbox table, and says
// how to create it.
func TestMissingTable(t *testing.T) {
	c := newBroker(t, 1)
	db := newDB(t)
	cfg := testConfig(c, db, "missing")
	cfg.Table = "public.no_such_inbox"
	cons, err := New(cfg, balanceHandler, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	err = cons.Run(ctx)
	if err == nil || !containsAll(err.Error(), "no_such_inbox", "inbox.Setup") {
		t.Errorf("Run = %v, want an error naming the table and inbox.Setup", err)
	}
}

func TestPrune(t *testing.T) {
	c := newBroker(t, 1)
	db := newDB(t)
	cfg := testConfig(c, db, "prune")
	cfg.PruneBatch = 3
	cons, err := New(cfg, balanceHandler, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(t.Context(), `INSERT INTO outbox_inbox (consumer, event_id, topic, "partition", "offset", processed_at)
		SELECT $1, 'old-' || i, 't', 0, i, now() - interval '3 days' FROM generate_series(1, 10) i
		UNION ALL SELECT $1, 'new-' || i, 't', 0, i, now() FROM generate_series(1, 4) i
		UNION ALL SELECT 'other', 'old-' || i, 't', 0, i, now() - interval '3 days' FROM generate_series(1, 5) i`, "prune"); err != nil {
		t.Fatal(err)
	}
	n, err := cons.Prune(t.Context(), 48*time.Hour)
	if err != nil || n != 10 {
		t.Fatalf("Prune(48h) = %d, %v; want 10, nil", n, err)
	}
	if got := queryInt(t, db, `SELECT count(*) FROM outbox_inbox WHERE consumer = 'prune'`); got != 4 {
		t.Errorf("%d rows of the consumer left, want 4", got)
	}
	if got := queryInt(t, db, `SELECT count(*) FROM outbox_inbox WHERE consumer = 'other'`); got != 5 {
		t.Errorf("%d rows of another consumer left, want 5 (untouched)", got)
	}
	if _, err := cons.Prune(t.Context(), 0); err == nil {
		t.Error("Prune(0) succeeded, want an error")
	}
}

// TestRetentionFromRun: Config.Retention makes Run prune.
func TestRetentionFromRun(t *testing.T) {
	c := newBroker(t, 1)
	db := newDB(t)
	if _, err := db.Exec(t.Context(), `INSERT INTO outbox_inbox (consumer, event_id, topic, "partition", "offset", processed_at)
		VALUES ('retention', 'old', 't', 0, 0, now() - interval '2 hours')`); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(c, db, "retention")
	cfg.Retention = time.Hour
	cfg.PruneInterval = 20 * time.Millisecond
	start(t, cfg, balanceHandler, nil)
	waitFor(t, "the old row pruned", func() bool {
		return queryInt(t, db, `SELECT count(*) FROM outbox_inbox WHERE consumer = 'retention'`) == 0
	})
}
