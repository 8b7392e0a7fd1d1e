package cdc_test

import (
	"testing"

	"github.com/outbox-relay/outbox-relay/cdc"
	"github.com/outbox-relay/outbox-relay/cdc/pgtest"
	"github.com/outbox-relay/outbox-relay/schema"
)

// TestSetupAddsStateTable runs setup against an outbox table made before the
// state table existed: setup adds the state table and keeps the rows.
func TestSetupAddsStateTable(t *testing.T) {
	cfg := cdc.Config{DSN: pgtest.NewDatabase(t), Slot: "setup_state_test"}
	conn := setupDB(t, cfg)
	st := schema.DefaultTable.StateTable()
	exec(t, conn, "DROP TABLE "+st.Quoted())
	exec(t, conn, `INSERT INTO outbox (id, aggregate_type, aggregate_id, event_type, payload) VALUES (gen_random_uuid(), 'a', '1', 'e', '{}')`)
	if err := cdc.Setup(t.Context(), conn, cfg, nil); err != nil {
		t.Fatalf("Setup() again = %v", err)
	}
	var n int
	if err := conn.QueryRow(t.Context(), "SELECT (SELECT count(*) FROM outbox) + (SELECT count(*) FROM "+st.Quoted()+")").Scan(&n); err != nil {
		t.Fatalf("read %s after Setup: %v", st, err)
	}
	if n != 1 {
		t.Errorf("after Setup, outbox and state rows = %d, want 1", n)
	}
}

// TestSetupAddsEmitFunction runs setup against an outbox table whose SQL
// function outbox_emit is missing: setup creates it again.
func TestSetupAddsEmitFunction(t *testing.T) {
	cfg := cdc.Config{DSN: pgtest.NewDatabase(t), Slot: "setup_emit_test"}
	conn := setupDB(t, cfg)
	const fn = "public.outbox_emit(text, text, text, jsonb, jsonb)"
	exec(t, conn, "DROP FUNCTION "+fn)
	if err := cdc.Setup(t.Context(), conn, cfg, nil); err != nil {
		t.Fatalf("Setup() again = %v", err)
	}
	var exists bool
	if err := conn.QueryRow(t.Context(), "SELECT to_regprocedure($1) IS NOT NULL", fn).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if !exists {
		t.Errorf("after Setup, function %s does not exist", fn)
	}
}
