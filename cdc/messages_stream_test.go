package cdc_test

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outbox-relay/outbox-relay/cdc"
	"github.com/outbox-relay/outbox-relay/cdc/pgtest"
	"github.com/outbox-relay/outbox-relay/internal/content"
	"github.com/outbox-relay/outbox-relay/relay"
	"github.com/outbox-relay/outbox-relay/schema"
)

// TestStreamRelaysMessages writes rows and logical decoding messages in the
// same transactions, through schema.Insert, schema.Emit, schema.EmitSQL,
// the SQL function outbox_emit (as a role with no privileges) and
// pg_logical_emit_message, and checks that the stream hands on exactly the
// transactional messages of the outbox prefix, in their place among the
// rows, with one position sequence per transaction; that rolled-back
// messages never come; and that malformed content comes as a Malformed
// event instead of being dropped.
func TestStreamRelaysMessages(t *testing.T) {
	cfg := cdc.Config{DSN: pgtest.NewDatabase(t), Slot: "message_test"}
	conn := setupDB(t, cfg)
	exec(t, conn, `CREATE ROLE app_writer NOLOGIN`)
	t.Cleanup(func() { _, _ = conn.Exec(context.Background(), `DROP ROLE IF EXISTS app_writer`) })
	db, err := sql.Open("pgx", cfg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })

	reg := prometheus.NewRegistry()
	sink := newMemSink()
	core, err := relay.New(relay.Config{}, sink, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	cfg.StatusInterval = 100 * time.Millisecond
	st, err := cdc.New(cfg, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- st.Run(ctx, core) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v, want nil after cancel", err)
		}
	}()

	id := func(n string) string { return "00000000-0000-4000-8000-" + strings.Repeat("0", 12-len(n)) + n }
	msg := func(n, evType string) schema.Message {
		return schema.Message{ID: id(n), AggregateType: "order", AggregateID: "o-1", EventType: evType, Payload: []byte(`{"n":"` + n + `"}`)}
	}

	// 1: rows and messages mixed in one transaction, with messages the
	// relay must not take between them.
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	steps := []func() error{
		func() error { return schema.Insert(ctx, tx, msg("1", "row")) },
		func() error { return schema.Emit(ctx, tx, msg("2", "message")) },
		func() error {
			_, err := tx.Exec(ctx, `SELECT pg_logical_emit_message(true, 'other', 'not ours')`)
			return err
		},
		func() error {
			_, err := tx.Exec(ctx, `SELECT pg_logical_emit_message(false, 'outbox', '{"not":"transactional"}')`)
			return err
		},
		func() error { return schema.Insert(ctx, tx, msg("3", "row")) },
		func() error {
			// The function, as a role granted nothing.
			if _, err := tx.Exec(ctx, `SET LOCAL ROLE app_writer`); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `SELECT outbox_emit('invoice', 'i-1', 'issued', '{"n": 4}', '{"lang": "de"}')`)
			if err != nil {
				return err
			}
			_, err = tx.Exec(ctx, `RESET ROLE`)
			return err
		},
		func() error {
			_, err := tx.Exec(ctx, `SELECT pg_logical_emit_message(true, 'outbox', '{"id": "not-a-uuid"}')`)
			return err
		},
		func() error { return schema.Emit(ctx, tx, msg("6", "message")) },
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("transaction 1, step %d: %v", i+1, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	// 2: rolled back, through database/sql: never published.
	stx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := schema.EmitSQL(ctx, stx, msg("ff", "rolled")); err != nil {
		t.Fatal(err)
	}
	if err := stx.Rollback(); err != nil {
		t.Fatal(err)
	}
	// 3: a message alone, through database/sql, outside a transaction.
	if err := schema.EmitSQL(ctx, db, msg("7", "alone")); err != nil {
		t.Fatal(err)
	}

	sink.waitFor(t, 7)
	time.Sleep(300 * time.Millisecond) // for a stray event
	evs := sink.snapshot()
	type got struct {
		ID, AggregateType, AggregateID, EventType, Payload, Headers, Table, Prefix string
		Index                                                                      uint32
		Malformed                                                                  bool
	}
	want := []got{
		{id("1"), "order", "o-1", "row", `{"n": "1"}`, "", "public.outbox", "", 0, false},
		{id("2"), "order", "o-1", "message", `{"n":"2"}`, "", "", "outbox", 1, false},
		{id("3"), "order", "o-1", "row", `{"n": "3"}`, "", "public.outbox", "", 2, false},
		{"", "invoice", "i-1", "issued", `{"n": 4}`, `{"lang": "de"}`, "", "outbox", 3, false},
		{"", "", "", "", `{"id": "not-a-uuid"}`, "", "", "outbox", 4, true},
		{id("6"), "order", "o-1", "message", `{"n":"6"}`, "", "", "outbox", 5, false},
		{id("7"), "order", "o-1", "alone", `{"n":"7"}`, "", "", "outbox", 0, false},
	}
	if len(evs) != len(want) {
		t.Fatalf("got %d events, want %d: %+v", len(evs), len(want), evs)
	}
	for i, ev := range evs {
		g := got{ev.ID, ev.AggregateType, ev.AggregateID, ev.EventType, string(ev.Payload), string(ev.Headers), ev.Table, ev.Prefix, ev.Position.Index, ev.Malformed != nil}
		if i == 3 {
			g.ID = "" // made by outbox_emit
		}
		if g != want[i] {
			t.Errorf("event %d = %+v, want %+v", i, g, want[i])
		}
		if i > 0 && !evs[i-1].Position.Less(ev.Position) {
			t.Errorf("event %d position %s not after %s", i, ev.Position, evs[i-1].Position)
		}
		if i < 6 && ev.Position.CommitLSN != evs[0].Position.CommitLSN {
			t.Errorf("event %d commit LSN %s, want the transaction's %s", i, ev.Position.CommitLSN, evs[0].Position.CommitLSN)
		}
	}
	if err := content.Decode([]byte(`{"id":"`+evs[3].ID+`","aggregate_type":"t","aggregate_id":"a","event_type":"e","payload":1}`), new(schema.Event)); err != nil {
		t.Errorf("outbox_emit made the ID %q: %v", evs[3].ID, err)
	}
	if !errors.Is(evs[4].Malformed, schema.ErrContent) {
		t.Errorf("malformed event's error %v, want ErrContent", evs[4].Malformed)
	}
	ignored := func(reason string) float64 {
		return counterOf(t, reg, "outbox_relay_messages_ignored_total", "reason", reason)
	}
	if n, p := ignored("non_transactional"), ignored("prefix"); n != 1 || p != 1 {
		t.Errorf("messages ignored: %v non-transactional, %v of another prefix; want 1 and 1", n, p)
	}
}

// counterOf returns the value of the counter name with label=value in reg.
// (prometheus/testutil would do, but its diff dependency is not in go.sum.)
func counterOf(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no %s{%s=%q} in the registry", name, label, value)
	return 0
}

// TestSetupCreatesEmitFunction checks that setup creates outbox_emit for an
// outbox table that existed without it, as before migration 0002, and that
// running it again changes nothing.
func TestSetupCreatesEmitFunction(t *testing.T) {
	cfg := cdc.Config{DSN: pgtest.NewDatabase(t), Slot: "setup_emit_test"}
	conn := setupDB(t, cfg)
	exec(t, conn, `DROP FUNCTION outbox_emit`)
	for range 2 {
		if err := cdc.Setup(t.Context(), conn, cfg, nil); err != nil {
			t.Fatalf("Setup() = %v", err)
		}
		var n int
		if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM pg_proc WHERE proname = 'outbox_emit' AND pronamespace = 'public'::regnamespace`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Fatalf("%d functions outbox_emit in public after setup, want 1", n)
		}
	}
	stmts, err := cdc.SetupSQL(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(stmts, "\n"), `CREATE OR REPLACE FUNCTION "public".outbox_emit(`) {
		t.Errorf("SetupSQL holds no outbox_emit:\n%s", strings.Join(stmts, "\n"))
	}
	// The function checks its arguments as the table's constraints would.
	for _, q := range []string{
		`SELECT outbox_emit('t', NULL, 'e', '{}')`,
		`SELECT outbox_emit('t', '', 'e', '{}')`,
		`SELECT outbox_emit('t', 'a', 'e', '{}', '[1]')`,
	} {
		if _, err := conn.Exec(t.Context(), q); err == nil {
			t.Errorf("%s succeeded, want an error", q)
		}
	}
}
