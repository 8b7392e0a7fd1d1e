package cdc_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outbox-relay/outbox-relay/cdc"
	"github.com/outbox-relay/outbox-relay/cdc/pgtest"
	"github.com/outbox-relay/outbox-relay/relay"
	"github.com/outbox-relay/outbox-relay/schema"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// memSink acknowledges every event at once, from another goroutine, and
// keeps what it saw.
type memSink struct {
	mu     sync.Mutex
	events []schema.Event
	added  chan struct{}
}

func newMemSink() *memSink { return &memSink{added: make(chan struct{}, 1)} }

func (s *memSink) Publish(_ context.Context, ev *schema.Event, done func(error)) {
	s.mu.Lock()
	s.events = append(s.events, *ev)
	s.mu.Unlock()
	select {
	case s.added <- struct{}{}:
	default:
	}
	go done(nil)
}

func (s *memSink) Flush(context.Context) error { return nil }

func (s *memSink) snapshot() []schema.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]schema.Event(nil), s.events...)
}

// waitFor waits until the sink holds n events.
func (s *memSink) waitFor(t *testing.T, n int) []schema.Event {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		if evs := s.snapshot(); len(evs) >= n {
			return evs
		}
		select {
		case <-s.added:
		case <-deadline:
			t.Fatalf("sink holds %d events after 30s, want %d", len(s.snapshot()), n)
		}
	}
}

// running is a Stream running against a Relay with a memSink.
type running struct {
	sink   *memSink
	core   *relay.Relay
	cancel context.CancelFunc
	done   chan error
}

func startStream(t *testing.T, cfg cdc.Config) *running {
	t.Helper()
	cfg.StatusInterval = 100 * time.Millisecond
	sink := newMemSink()
	core, err := relay.New(relay.Config{}, sink, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	st, err := cdc.New(cfg, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	r := &running{sink: sink, core: core, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- st.Run(ctx, core) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop cancels the stream and waits for it; it may be called more than once.
func (r *running) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case err, ok := <-r.done:
		if ok && err != nil {
			t.Errorf("Run() = %v, want nil after cancel", err)
		}
		if ok {
			close(r.done)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return 30s after cancel")
	}
}

func setupDB(t *testing.T, cfg cdc.Config) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), cfg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	if err := cdc.Setup(t.Context(), conn, cfg, nil); err != nil {
		t.Fatalf("Setup() = %v", err)
	}
	return conn
}

func exec(t *testing.T, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(t.Context(), sql, args...); err != nil {
		t.Fatalf("exec %q: %v", sql, err)
	}
}

func TestStreamRelaysCommittedInsertsOnly(t *testing.T) {
	cfg := cdc.Config{DSN: pgtest.NewDatabase(t), Slot: "stream_test"}
	conn := setupDB(t, cfg)
	exec(t, conn, `CREATE TABLE other (id int primary key, v text)`)
	r := startStream(t, cfg)
	ctx := t.Context()

	// 1: a committed transaction with two events.
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := schema.Insert(ctx, tx,
		schema.Message{ID: "00000000-0000-0000-0000-000000000001", AggregateType: "order", AggregateID: "o-1", EventType: "created", Payload: []byte(`{"n":1}`), Headers: map[string]string{"trace": "abc"}},
		schema.Message{ID: "00000000-0000-0000-0000-000000000002", AggregateType: "order", AggregateID: "o-1", EventType: "paid", Payload: []byte(`{"n":2}`)},
	); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	// 2: rolled back: never published.
	tx, _ = conn.Begin(ctx)
	if err := schema.Insert(ctx, tx, schema.Message{ID: "00000000-0000-0000-0000-0000000000ff", AggregateType: "order", AggregateID: "o-9", EventType: "rolled", Payload: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	// 3: insert-then-delete in one transaction is still published; the
	// delete, updates and truncates are not.
	tx, _ = conn.Begin(ctx)
	if err := schema.Insert(ctx, tx, schema.Message{ID: "00000000-0000-0000-0000-000000000003", AggregateType: "user", AggregateID: "u-1", EventType: "registered", Payload: []byte(`{"n":3}`)}); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `DELETE FROM outbox`); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	// 4: writes to another table, updates and a truncate.
	exec(t, conn, `INSERT INTO other VALUES (1, 'x')`)
	if err := schema.Insert(ctx, conn, schema.Message{ID: "00000000-0000-0000-0000-000000000004", AggregateType: "user", AggregateID: "u-1", EventType: "renamed", Payload: []byte(`{"n":4}`)}); err != nil {
		t.Fatal(err)
	}
	exec(t, conn, `UPDATE outbox SET event_type = 'changed'`)
	exec(t, conn, `TRUNCATE outbox`)
	// 5: the table changes shape; the stream keeps up.
	exec(t, conn, `ALTER TABLE outbox ADD COLUMN extra text`)
	if err := schema.Insert(ctx, conn, schema.Message{ID: "00000000-0000-0000-0000-000000000005", AggregateType: "user", AggregateID: "u-2", EventType: "after_alter", Payload: []byte(`{"n":5}`)}); err != nil {
		t.Fatal(err)
	}

	evs := r.sink.waitFor(t, 5)
	type got struct {
		ID, AggregateType, AggregateID, EventType, Payload, Headers, Table string
	}
	want := []got{
		{"00000000-0000-0000-0000-000000000001", "order", "o-1", "created", `{"n": 1}`, `{"trace": "abc"}`, "public.outbox"},
		{"00000000-0000-0000-0000-000000000002", "order", "o-1", "paid", `{"n": 2}`, "", "public.outbox"},
		{"00000000-0000-0000-0000-000000000003", "user", "u-1", "registered", `{"n": 3}`, "", "public.outbox"},
		{"00000000-0000-0000-0000-000000000004", "user", "u-1", "renamed", `{"n": 4}`, "", "public.outbox"},
		{"00000000-0000-0000-0000-000000000005", "user", "u-2", "after_alter", `{"n": 5}`, "", "public.outbox"},
	}
	// Give a stray event time to arrive before counting.
	time.Sleep(300 * time.Millisecond)
	evs = r.sink.snapshot()
	if len(evs) != len(want) {
		t.Fatalf("got %d events, want %d: %+v", len(evs), len(want), evs)
	}
	for i, ev := range evs {
		g := got{ev.ID, ev.AggregateType, ev.AggregateID, ev.EventType, string(ev.Payload), string(ev.Headers), ev.Table}
		if g != want[i] {
			t.Errorf("event %d = %+v, want %+v", i, g, want[i])
		}
		if ev.CommitTime.IsZero() || time.Since(ev.CommitTime) > time.Minute {
			t.Errorf("event %d commit time %v, want a recent time", i, ev.CommitTime)
		}
		if i > 0 && !evs[i-1].Position.Less(ev.Position) {
			t.Errorf("event %d position %s not after %s", i, ev.Position, evs[i-1].Position)
		}
	}
	if evs[0].Position.CommitLSN != evs[1].Position.CommitLSN || evs[0].Position.Index != 0 || evs[1].Position.Index != 1 {
		t.Errorf("positions of one transaction = %s, %s; want one commit LSN, indexes 0 and 1", evs[0].Position, evs[1].Position)
	}

	// The slot confirms everything once the sink has acknowledged it.
	waitConfirmed(t, conn, cfg.Slot, func(s cdc.Slot) bool {
		return s.ConfirmedFlush >= r.core.Flushed() && s.ConfirmedFlush > evs[4].Position.CommitLSN
	})
}

// waitConfirmed polls the slot until ok holds, for up to 30 seconds.
func waitConfirmed(t *testing.T, conn *pgx.Conn, slot string, ok func(cdc.Slot) bool) cdc.Slot {
	t.Helper()
	var s cdc.Slot
	var err error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		s, err = cdc.ReadSlot(t.Context(), conn, slot)
		if err != nil {
			t.Fatal(err)
		}
		if ok(s) {
			return s
		}
	}
	t.Fatalf("slot %s after 30s: %+v (err %v)", slot, s, err)
	return s
}

func TestStreamResumesAfterStopWithoutDuplicates(t *testing.T) {
	cfg := cdc.Config{DSN: pgtest.NewDatabase(t), Slot: "resume_test"}
	conn := setupDB(t, cfg)
	ctx := t.Context()
	insert := func(from, n int) {
		t.Helper()
		msgs := make([]schema.Message, n)
		for i := range msgs {
			msgs[i] = schema.Message{AggregateType: "a", AggregateID: fmt.Sprint(from + i), EventType: "e", Payload: []byte(`{}`)}
		}
		if err := schema.Insert(ctx, conn, msgs...); err != nil {
			t.Fatal(err)
		}
	}
	insert(0, 10)
	r := startStream(t, cfg)
	first := r.sink.waitFor(t, 10)
	r.stop(t)

	insert(10, 5)
	r2 := startStream(t, cfg)
	second := r2.sink.waitFor(t, 5)
	time.Sleep(300 * time.Millisecond)
	second = r2.sink.snapshot()
	if len(second) != 5 {
		t.Fatalf("after restart got %d events, want the 5 new ones", len(second))
	}
	if second[0].AggregateID != "10" || !first[9].Position.Less(second[0].Position) {
		t.Errorf("after restart first event %s at %s, want aggregate 10 after %s", second[0].AggregateID, second[0].Position, first[9].Position)
	}
}

// TestStreamStopsAtRowsOfAnEarlierShape renames a mapped column and
// renames it back, with a row written in between: start-up finds the
// table as mapped, but PostgreSQL decodes that row with the columns of
// its time, and the stream stops on it with ErrRowColumns, naming the
// transaction. Moving the slot past it, as the relay's hint says, lets
// the stream go on.
func TestStreamStopsAtRowsOfAnEarlierShape(t *testing.T) {
	cfg := cdc.Config{DSN: pgtest.NewDatabase(t), Slot: "shape_test"}
	conn := setupDB(t, cfg)
	ctx := t.Context()
	insert := func(aggregate string) {
		t.Helper()
		if err := schema.Insert(ctx, conn, schema.Message{AggregateType: "a", AggregateID: aggregate, EventType: "e", Payload: []byte(`{}`)}); err != nil {
			t.Fatal(err)
		}
	}
	insert("before")
	r := startStream(t, cfg)
	r.sink.waitFor(t, 1)
	r.stop(t)

	exec(t, conn, `ALTER TABLE outbox RENAME COLUMN aggregate_id TO agg_id`)
	exec(t, conn, `INSERT INTO outbox (id, aggregate_type, agg_id, event_type, payload) VALUES (gen_random_uuid(), 'a', 'between', 'e', '{}')`)
	exec(t, conn, `ALTER TABLE outbox RENAME COLUMN agg_id TO aggregate_id`)
	insert("after")

	r = startStream(t, cfg)
	var err error
	select {
	case err = <-r.done:
		close(r.done)
	case <-time.After(30 * time.Second):
		t.Fatal("the stream ran on for 30s past a row of the earlier shape")
	}
	if !errors.Is(err, cdc.ErrRowColumns) || !errors.Is(err, cdc.ErrColumns) {
		t.Fatalf("Run() = %v, want an error wrapping ErrRowColumns and ErrColumns", err)
	}
	t.Logf("stopped: %v", err)
	for _, want := range []string{"rows in the slot were written with other columns", "committed at 0/", "wrote public.outbox with the columns id, aggregate_type, agg_id,", "without aggregate_id (for aggregate_id)"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Run() = %q, want it to say %q", err, want)
		}
	}
	if evs := r.sink.snapshot(); len(evs) != 0 {
		t.Errorf("the stream relayed %d events past the row it could not decode", len(evs))
	}

	// The server may hold the slot a moment after the stream returned.
	for deadline := time.Now().Add(10 * time.Second); ; {
		_, err := conn.Exec(ctx, `SELECT pg_replication_slot_advance($1, pg_current_wal_lsn())`, cfg.Slot)
		var pgErr *pgconn.PgError
		if err == nil {
			break
		}
		if !errors.As(err, &pgErr) || pgErr.Code != "55006" || time.Now().After(deadline) { // object_in_use
			t.Fatalf("advance the slot: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	insert("later")
	r = startStream(t, cfg)
	if evs := r.sink.waitFor(t, 1); evs[0].AggregateID != "later" {
		t.Errorf("after the slot moved on, the first event is of aggregate %q, want later", evs[0].AggregateID)
	}
}

func TestStreamFollowsWALWhenOutboxIsIdle(t *testing.T) {
	cfg := cdc.Config{DSN: pgtest.NewDatabase(t), Slot: "idle_test"}
	conn := setupDB(t, cfg)
	exec(t, conn, `CREATE TABLE busy (id bigserial primary key, filler text)`)
	startStream(t, cfg)

	// About 64 MB of WAL on a table outside the publication.
	for range 16 {
		exec(t, conn, `INSERT INTO busy (filler) SELECT repeat('x', 1000) FROM generate_series(1, 4000)`)
	}
	var current pglogrepl.LSN
	if err := conn.QueryRow(t.Context(), `SELECT pg_current_wal_lsn()`).Scan(&current); err != nil {
		t.Fatal(err)
	}
	s := waitConfirmed(t, conn, cfg.Slot, func(s cdc.Slot) bool { return s.ConfirmedFlush+1<<20 >= current })
	t.Logf("confirmed %s, current WAL %s at the end of the writes", s.ConfirmedFlush, current)
}

func TestStreamDebeziumColumns(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	exec(t, conn, `CREATE TABLE outboxevent (id uuid primary key, aggregatetype varchar(255) not null, aggregateid varchar(255) not null, type varchar(255) not null, payload jsonb)`)
	cfg := cdc.Config{DSN: dsn, Table: schema.Table{Schema: "public", Name: "outboxevent"}, Columns: schema.DebeziumColumns, Slot: "debezium_test"}
	setupDB(t, cfg)
	r := startStream(t, cfg)
	exec(t, conn, `INSERT INTO outboxevent VALUES ('00000000-0000-0000-0000-00000000000a', 'Order', '42', 'OrderCreated', '{"total": 3}')`)
	ev := r.sink.waitFor(t, 1)[0]
	if ev.AggregateType != "Order" || ev.AggregateID != "42" || ev.EventType != "OrderCreated" || string(ev.Payload) != `{"total": 3}` || ev.Headers != nil {
		t.Errorf("event = %+v, want the Debezium row", ev)
	}
}

func TestRunReportsMissingSetup(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	tests := []struct {
		name  string
		setup string
		want  error
	}{
		{"no table", ``, cdc.ErrNoTable},
		{"no publication", `CREATE TABLE outbox (id uuid primary key, aggregate_type text, aggregate_id text, event_type text, payload jsonb, headers jsonb)`, cdc.ErrNoPublication},
	}
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.setup != "" {
				exec(t, conn, tt.setup)
			}
			st, err := cdc.New(cdc.Config{DSN: dsn, Slot: "missing_test"}, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
			defer cancel()
			err = st.Run(ctx, nil)
			if !errors.Is(err, tt.want) {
				t.Errorf("Run() = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestRunReportsColumnMappingAtStart(t *testing.T) {
	cfg := cdc.Config{DSN: pgtest.NewDatabase(t), Slot: "mapping_test"}
	setupDB(t, cfg)
	cfg.Columns = schema.DefaultColumns
	cfg.Columns.AggregateID = "nope"
	st, err := cdc.New(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	if err := st.Run(ctx, nil); !errors.Is(err, cdc.ErrColumns) || !strings.Contains(err.Error(), "nope") {
		t.Errorf("Run() = %v, want an error wrapping ErrColumns naming the column", err)
	}
}
