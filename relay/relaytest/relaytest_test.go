package relaytest_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/outbox-relay/outbox-relay/cdc/pgtest"
	"github.com/outbox-relay/outbox-relay/relay"
	"github.com/outbox-relay/outbox-relay/relay/relaytest"
	"github.com/outbox-relay/outbox-relay/schema"
	"github.com/outbox-relay/outbox-relay/sinks/kafka"
)

// connect opens a connection to dsn, closed when t ends.
func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func insert(t *testing.T, db schema.Execer, msgs ...schema.Message) {
	t.Helper()
	if err := schema.Insert(t.Context(), db, msgs...); err != nil {
		t.Fatalf("insert: %v", err)
	}
}

func msg(aggregateType, aggregateID, eventType, payload string, headers map[string]string) schema.Message {
	return schema.Message{AggregateType: aggregateType, AggregateID: aggregateID, EventType: eventType,
		Payload: []byte(payload), Headers: headers}
}

// summary is what a test compares of a record: the server-made id and
// position headers are left out.
type summary struct {
	Topic, Key, Value string
	Headers           map[string]string
}

func summarize(recs []relaytest.Record) []summary {
	out := make([]summary, len(recs))
	for i, r := range recs {
		h := make(map[string]string)
		for k, v := range r.Headers {
			if k != kafka.HeaderID && k != kafka.HeaderPosition {
				h[k] = v
			}
		}
		out[i] = summary{r.Topic, r.Key, string(r.Value), h}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Topic < out[j].Topic })
	return out
}

func TestTopicsAndHeaders(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	r := relaytest.Start(t, dsn, relaytest.Config{})
	conn := connect(t, dsn)
	if err := pgx.BeginFunc(t.Context(), conn, func(tx pgx.Tx) error {
		return schema.Insert(t.Context(), tx,
			msg("order", "o-1", "order.placed", `{"n": 1}`, map[string]string{"tenant": "acme"}),
			msg("customer", "c-1", "customer.created", `{"name": "Ada"}`, nil),
			msg("order", "o-1", "order.paid", `{"n": 2}`, nil),
		)
	}); err != nil {
		t.Fatalf("insert: %v", err)
	}
	got := summarize(r.Expect(t, 3))
	want := []summary{
		{"outbox.customer", "c-1", `{"name": "Ada"}`, map[string]string{"event_type": "customer.created", "aggregate_type": "customer"}},
		{"outbox.order", "o-1", `{"n": 1}`, map[string]string{"event_type": "order.placed", "aggregate_type": "order", "tenant": "acme"}},
		{"outbox.order", "o-1", `{"n": 2}`, map[string]string{"event_type": "order.paid", "aggregate_type": "order"}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("records mismatch (-want +got):\n%s", diff)
	}
}

func TestBrokersServeOtherClients(t *testing.T) {
	// The application's own consumer reads the same records from Brokers.
	dsn := pgtest.NewDatabase(t)
	r := relaytest.Start(t, dsn, relaytest.Config{})
	insert(t, connect(t, dsn), msg("order", "o-1", "order.placed", `{}`, map[string]string{"k": "v"}))
	want := r.Expect(t, 1)[0]

	cl, err := kgo.NewClient(kgo.SeedBrokers(r.Brokers()...), kgo.ConsumeTopics("outbox.order"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatalf("create consumer: %v", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var got []*kgo.Record
	for len(got) == 0 {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("consume outbox.order: %v", err)
		}
		got = append(got, fs.Records()...)
	}
	h := map[string]string{}
	for _, kh := range got[0].Headers {
		h[kh.Key] = string(kh.Value)
	}
	if string(got[0].Key) != want.Key || string(got[0].Value) != string(want.Value) || !cmp.Equal(h, want.Headers) {
		t.Errorf("own consumer read key %q value %s headers %v; relaytest read %v", got[0].Key, got[0].Value, h, want)
	}
}

func TestConfig(t *testing.T) {
	// Another table, Debezium's column names, a topic per event type and
	// several partitions.
	dsn := pgtest.NewDatabase(t)
	ob := schema.Outbox{Table: schema.Table{Schema: "public", Name: "outboxevent"}, Columns: schema.DebeziumColumns}
	r := relaytest.Start(t, dsn, relaytest.Config{
		Table:      ob.Table,
		Columns:    ob.Columns,
		Topic:      "{aggregate_type}.{event_type}",
		Partitions: 3,
	})
	conn := connect(t, dsn)
	var msgs []schema.Message
	for i := range 30 {
		msgs = append(msgs, msg("order", fmt.Sprintf("o-%d", i), "placed", fmt.Sprintf(`{"i": %d}`, i), nil))
	}
	if err := ob.Insert(t.Context(), conn, msgs...); err != nil {
		t.Fatalf("insert: %v", err)
	}
	partitions := map[int32]bool{}
	for _, rec := range r.Expect(t, len(msgs)) {
		if rec.Topic != "order.placed" {
			t.Errorf("record on topic %q, want order.placed", rec.Topic)
		}
		if rec.Partition < 0 || rec.Partition >= 3 {
			t.Errorf("record on partition %d, want 0 to 2", rec.Partition)
		}
		partitions[rec.Partition] = true
	}
	if len(partitions) < 2 {
		t.Errorf("30 keys landed on partitions %v of 3, want spread", partitions)
	}
}

func TestRelaysShareADatabase(t *testing.T) {
	// Each Relay has its own slot: both see every event committed after
	// they started.
	dsn := pgtest.NewDatabase(t)
	a := relaytest.Start(t, dsn, relaytest.Config{})
	b := relaytest.Start(t, dsn, relaytest.Config{})
	if a.Slot == b.Slot || a.Publication == b.Publication {
		t.Fatalf("two relays share slot %q / publication %q", a.Slot, a.Publication)
	}
	insert(t, connect(t, dsn), msg("order", "o-1", "order.placed", `{}`, nil))
	for _, r := range []*relaytest.Relay{a, b} {
		if rec := r.Expect(t, 1)[0]; rec.Key != "o-1" {
			t.Errorf("relay on slot %s read %v, want key o-1", r.Slot, rec)
		}
	}
}

func TestDeadLetter(t *testing.T) {
	// A row with no aggregate ID goes to the dead-letter topic, which Next
	// reads too; events after it flow.
	dsn := pgtest.NewDatabase(t)
	r := relaytest.Start(t, dsn, relaytest.Config{})
	conn := connect(t, dsn)
	if _, err := conn.Exec(t.Context(), `INSERT INTO outbox (id, aggregate_type, aggregate_id, event_type, payload)
		VALUES (gen_random_uuid(), 'order', '', 'order.placed', '{}')`); err != nil {
		t.Fatalf("insert poison row: %v", err)
	}
	insert(t, conn, msg("order", "o-2", "order.placed", `{}`, nil))
	byTopic := map[string]relaytest.Record{}
	for _, rec := range r.Expect(t, 2) {
		byTopic[rec.Topic] = rec
	}
	if dl, ok := byTopic[kafka.DefaultDeadLetterTopic]; !ok || dl.Headers["dlq_reason"] != "aggregate_id" {
		t.Errorf("dead-letter record %v (headers %v), want one with dlq_reason aggregate_id", dl, dl.Headers)
	}
	if rec, ok := byTopic["outbox.order"]; !ok || rec.Key != "o-2" {
		t.Errorf("outbox.order record %v, want the event after the poison one", rec)
	}
}

func TestHaltReturnsError(t *testing.T) {
	// Under PolicyHalt a poison row stops the relay: Next returns why, and
	// the cleanup, which sees the error Next returned, does not fail the test.
	dsn := pgtest.NewDatabase(t)
	r := relaytest.Start(t, dsn, relaytest.Config{PoisonPolicy: relay.PolicyHalt})
	if _, err := connect(t, dsn).Exec(t.Context(), `INSERT INTO outbox (id, aggregate_type, aggregate_id, event_type, payload)
		VALUES (gen_random_uuid(), 'order', '', 'order.placed', '{}')`); err != nil {
		t.Fatalf("insert poison row: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	rec, err := r.Next(ctx)
	if !errors.Is(err, relay.ErrSinkFailed) || !errors.Is(err, schema.ErrNoAggregateID) {
		t.Fatalf("Next = %v, %v; want an error wrapping relay.ErrSinkFailed and schema.ErrNoAggregateID", rec, err)
	}
	if _, err2 := r.Next(ctx); !errors.Is(err2, relay.ErrSinkFailed) {
		t.Errorf("Next after the relay stopped = %v, want the same error again", err2)
	}
}

func TestNextWaitsForContext(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	r := relaytest.Start(t, dsn, relaytest.Config{})
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if rec, err := r.Next(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Next with nothing published = %v, %v; want context.DeadlineExceeded", rec, err)
	}
}

func TestCleanup(t *testing.T) {
	// When the test that started it ends, nothing of the relay is left but
	// the outbox table and its rows.
	dsn := pgtest.NewDatabase(t)
	conn := connect(t, dsn)
	ignore := goleak.IgnoreCurrent()
	var slot, publication string
	t.Run("relay", func(t *testing.T) {
		r := relaytest.Start(t, dsn, relaytest.Config{})
		slot, publication = r.Slot, r.Publication
		insert(t, connect(t, dsn), msg("order", "o-1", "order.placed", `{}`, nil))
		r.Expect(t, 1)
	})
	if err := goleak.Find(ignore); err != nil {
		t.Errorf("goroutines left after the test ended: %v", err)
	}
	var slots, pubs, rows int
	if err := conn.QueryRow(t.Context(), `SELECT
		(SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1),
		(SELECT count(*) FROM pg_publication WHERE pubname = $2),
		(SELECT count(*) FROM outbox)`, slot, publication).Scan(&slots, &pubs, &rows); err != nil {
		t.Fatalf("read what is left: %v", err)
	}
	if slots != 0 || pubs != 0 || rows != 1 {
		t.Errorf("after the test: %d slots %q, %d publications %q, %d outbox rows; want 0, 0, 1", slots, slot, pubs, publication, rows)
	}
}
