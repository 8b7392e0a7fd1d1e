package cdc_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/outbox-relay/outbox-relay/cdc"
	"github.com/outbox-relay/outbox-relay/cdc/pgtest"
	"github.com/outbox-relay/outbox-relay/schema"
)

// insertBatch writes n events numbered from first, each its own transaction.
func insertBatch(t *testing.T, dsn string, first, n int) {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatalf("connect to insert: %v", err)
	}
	defer conn.Close(context.Background())
	for i := first; i < first+n; i++ {
		if err := schema.Insert(t.Context(), conn, schema.Message{AggregateType: "a", AggregateID: fmt.Sprint(i % 5), EventType: fmt.Sprint(i), Payload: []byte(`{}`)}); err != nil {
			t.Fatalf("insert %d: %v", i, err)
		}
	}
}

// checkExactlyOnce asserts that the sink saw events 0..n-1 once each, in order.
func checkExactlyOnce(t *testing.T, evs []schema.Event, n int) {
	t.Helper()
	if len(evs) != n {
		t.Fatalf("sink saw %d events, want %d", len(evs), n)
	}
	for i, ev := range evs {
		if ev.EventType != fmt.Sprint(i) {
			t.Fatalf("event %d is %s, want %d (replays must be read past)", i, ev.EventType, i)
		}
	}
}

func TestStreamReconnectsAfterWalsenderTerminated(t *testing.T) {
	cfg := cdc.Config{DSN: pgtest.NewDatabase(t), Slot: "terminate_test"}
	conn := setupDB(t, cfg)
	r := startStream(t, cfg)
	insertBatch(t, cfg.DSN, 0, 50)
	r.sink.waitFor(t, 50)

	var terminated bool
	if err := conn.QueryRow(t.Context(), `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1`, cfg.Slot).Scan(&terminated); err != nil || !terminated {
		t.Fatalf("terminate walsender: %v %v", terminated, err)
	}
	insertBatch(t, cfg.DSN, 50, 50)
	time.Sleep(500 * time.Millisecond)
	checkExactlyOnce(t, r.sink.waitFor(t, 100), 100)
	waitConfirmed(t, conn, cfg.Slot, func(s cdc.Slot) bool { return s.Active && s.ConfirmedFlush >= r.core.Flushed() })
}

func TestStreamSurvivesServerRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL; skipped by -short")
	}
	// A cluster of its own: restarting the package's would disturb other tests.
	pg, err := pgtest.Start(t.Context(), pgtest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pg.Stop() })
	cfg := cdc.Config{DSN: pg.DSN(""), Slot: "restart_test"}
	setupDB(t, cfg)
	r := startStream(t, cfg)
	insertBatch(t, cfg.DSN, 0, 100)
	r.sink.waitFor(t, 100)

	if err := pg.Restart(t.Context(), "immediate"); err != nil {
		t.Fatal(err)
	}
	insertBatch(t, cfg.DSN, 100, 100)
	time.Sleep(500 * time.Millisecond)
	checkExactlyOnce(t, r.sink.waitFor(t, 200), 200)
}
