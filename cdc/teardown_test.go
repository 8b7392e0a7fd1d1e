package cdc_test

import (
	"context"
	"testing"
	"time"

	"github.com/outbox-relay/outbox-relay/cdc"
	"github.com/outbox-relay/outbox-relay/cdc/pgtest"
)

// TestTeardownUndoesSetup drops the slot, even while a stream is letting
// go of it, and the publication, and keeps the table; a second Teardown
// finds nothing to drop and succeeds.
func TestTeardownUndoesSetup(t *testing.T) {
	cfg := cdc.Config{DSN: pgtest.NewDatabase(t), Slot: "teardown_test", Publication: "teardown_test"}
	conn := setupDB(t, cfg)
	exec(t, conn, `INSERT INTO outbox (id, aggregate_type, aggregate_id, event_type, payload) VALUES (gen_random_uuid(), 'a', '1', 'e', '{}')`)

	// A stream holds the slot, and stops as Teardown starts.
	r := startStream(t, cfg)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for active := false; !active; time.Sleep(10 * time.Millisecond) {
		if err := conn.QueryRow(ctx, `SELECT active FROM pg_replication_slots WHERE slot_name = $1`, cfg.Slot).Scan(&active); err != nil {
			t.Fatal(err)
		}
	}
	r.cancel()
	for range 2 {
		if err := cdc.Teardown(ctx, conn, cfg); err != nil {
			t.Fatalf("Teardown() = %v", err)
		}
	}
	var slots, pubs, rows int
	err := conn.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1),
		(SELECT count(*) FROM pg_publication WHERE pubname = $2),
		(SELECT count(*) FROM outbox)`, cfg.Slot, cfg.Publication).Scan(&slots, &pubs, &rows)
	if err != nil {
		t.Fatal(err)
	}
	if slots != 0 || pubs != 0 || rows != 1 {
		t.Errorf("after Teardown: %d slots, %d publications, %d rows; want 0, 0, 1", slots, pubs, rows)
	}
}
