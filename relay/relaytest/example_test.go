package relaytest_test

// The tests in this file are written as an application writes its own: the
// code under test stores an order and the event about it in one
// transaction, and the test asserts what reaches Kafka. The application
// brings its PostgreSQL; here cdc/pgtest provides one (pgtest.Main starts a
// private server for the package, pgtest.NewDatabase makes a database per
// test).

import (
	"context"
	"encoding/json"
	"os"
	"regexp"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/outbox-relay/outbox-relay/cdc/pgtest"
	"github.com/outbox-relay/outbox-relay/relay/relaytest"
	"github.com/outbox-relay/outbox-relay/schema"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// orderPlaced is the application's event.
type orderPlaced struct {
	OrderID    string `json:"order_id"`
	TotalCents int    `json:"total_cents"`
}

// placeOrder is the application code under test: it stores an order and,
// in the same transaction, the event that announces it.
func placeOrder(ctx context.Context, tx pgx.Tx, id string, totalCents int) error {
	if _, err := tx.Exec(ctx, `INSERT INTO orders (id, total_cents) VALUES ($1, $2)`, id, totalCents); err != nil {
		return err
	}
	msg, err := schema.NewMessage("order", id, "order.placed", orderPlaced{OrderID: id, TotalCents: totalCents})
	if err != nil {
		return err
	}
	return schema.Insert(ctx, tx, msg)
}

// newOrdersDatabase returns the DSN of a new database holding the
// application's tables, and a connection to it.
func newOrdersDatabase(t *testing.T) (string, *pgx.Conn) {
	t.Helper()
	dsn := pgtest.NewDatabase(t)
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	if _, err := conn.Exec(t.Context(), `CREATE TABLE orders (id text PRIMARY KEY, total_cents int NOT NULL)`); err != nil {
		t.Fatalf("create orders: %v", err)
	}
	return dsn, conn
}

const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func TestPlaceOrderPublishesEvent(t *testing.T) {
	dsn, conn := newOrdersDatabase(t)
	relay := relaytest.Start(t, dsn, relaytest.Config{})

	// The request being served carries a trace; the event continues it.
	ctx := schema.ContextWithTrace(t.Context(), traceparent, "vendor=abc")
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		return placeOrder(ctx, tx, "o-42", 1250)
	})
	if err != nil {
		t.Fatalf("place order: %v", err)
	}

	rec := relay.Expect(t, 1)[0]
	if rec.Topic != "outbox.order" || rec.Key != "o-42" {
		t.Errorf("record on %s with key %q, want outbox.order and key o-42", rec.Topic, rec.Key)
	}
	var got orderPlaced
	if err := json.Unmarshal(rec.Value, &got); err != nil {
		t.Fatalf("value %s: %v", rec.Value, err)
	}
	if want := (orderPlaced{OrderID: "o-42", TotalCents: 1250}); got != want {
		t.Errorf("value decodes to %+v, want %+v", got, want)
	}
	if _, err := uuid.Parse(rec.Headers["id"]); err != nil {
		t.Errorf("header id = %q, want a UUID: %v", rec.Headers["id"], err)
	}
	if !regexp.MustCompile(`^[0-9a-f]{24}$`).MatchString(rec.Headers["position"]) {
		t.Errorf("header position = %q, want 24 hex digits", rec.Headers["position"])
	}
	want := map[string]string{
		"id":             rec.Headers["id"],
		"position":       rec.Headers["position"],
		"event_type":     "order.placed",
		"aggregate_type": "order",
		"traceparent":    traceparent,
		"tracestate":     "vendor=abc",
	}
	if diff := cmp.Diff(want, rec.Headers); diff != "" {
		t.Errorf("headers mismatch (-want +got):\n%s", diff)
	}
}

func TestRolledBackOrderPublishesNothing(t *testing.T) {
	dsn, conn := newOrdersDatabase(t)
	relay := relaytest.Start(t, dsn, relaytest.Config{})

	tx, err := conn.Begin(t.Context())
	if err != nil {
		t.Fatalf("begin: %v", err)
	}
	if err := placeOrder(t.Context(), tx, "o-rolled-back", 100); err != nil {
		t.Fatalf("place order: %v", err)
	}
	if err := tx.Rollback(t.Context()); err != nil {
		t.Fatalf("rollback: %v", err)
	}

	// No sleep: a marker committed afterwards goes to the same one-partition
	// topic, behind anything committed before it. If it comes first, the
	// rolled-back event was not published.
	if err := pgx.BeginFunc(t.Context(), conn, func(tx pgx.Tx) error {
		return placeOrder(t.Context(), tx, "o-marker", 1)
	}); err != nil {
		t.Fatalf("place marker order: %v", err)
	}
	if rec := relay.Expect(t, 1)[0]; rec.Key != "o-marker" {
		t.Errorf("first record is %v, want the marker order: a rolled-back event was published", rec)
	}
}
