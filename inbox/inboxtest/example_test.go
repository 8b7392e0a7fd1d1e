package inboxtest_test

// The tests in this file are written as an application writes its own: the
// code under test records a transfer and the event about it in one
// transaction, the in-process relay publishes the event, and the
// application's inbox handler applies it to a balance. One database serves
// both sides here; an application may give each its own.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outbox-relay/outbox-relay/cdc/pgtest"
	"github.com/outbox-relay/outbox-relay/inbox"
	"github.com/outbox-relay/outbox-relay/inbox/inboxtest"
	"github.com/outbox-relay/outbox-relay/relay/relaytest"
	"github.com/outbox-relay/outbox-relay/schema"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// transferred is the writer's event.
type transferred struct {
	Delta int64 `json:"delta"`
}

// transfer is the writer code under test: it records a transfer and, in the
// same transaction, the event announcing it, and returns the event's ID.
func transfer(ctx context.Context, tx pgx.Tx, account string, delta int64) (string, error) {
	var id string
	if err := tx.QueryRow(ctx, `INSERT INTO transfers (account, delta) VALUES ($1, $2) RETURNING id::text`,
		account, delta).Scan(&id); err != nil {
		return "", err
	}
	msg, err := schema.NewMessage("account", account, "account.transferred", transferred{Delta: delta})
	if err != nil {
		return "", err
	}
	msg.ID = id
	return id, schema.Insert(ctx, tx, msg)
}

// apply is the consumer code under test, the inbox handler: it adds the
// transfer to the account's balance, in the inbox's transaction.
func apply(ctx context.Context, tx pgx.Tx, ev inbox.Event) error {
	var t transferred
	if err := json.Unmarshal(ev.Value, &t); err != nil {
		return inbox.Permanent(fmt.Errorf("decode event %s: %w", ev.ID, err))
	}
	_, err := tx.Exec(ctx, `INSERT INTO balances (account, amount) VALUES ($1, $2)
		ON CONFLICT (account) DO UPDATE SET amount = balances.amount + EXCLUDED.amount`, string(ev.Key), t.Delta)
	return err
}

// newDatabase returns the DSN of a new database with both sides' tables,
// and a pool on it.
func newDatabase(t *testing.T) (string, *pgxpool.Pool) {
	t.Helper()
	dsn := pgtest.NewDatabase(t)
	pool, err := pgxpool.New(t.Context(), dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(pool.Close)
	if _, err := pool.Exec(t.Context(), `
		CREATE TABLE transfers (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), account text NOT NULL, delta bigint NOT NULL);
		CREATE TABLE balances (account text PRIMARY KEY, amount bigint NOT NULL)`); err != nil {
		t.Fatalf("create tables: %v", err)
	}
	return dsn, pool
}

// commit runs fn in a transaction and returns the ID it returns.
func commit(t *testing.T, pool *pgxpool.Pool, fn func(tx pgx.Tx) (string, error)) string {
	t.Helper()
	var id string
	if err := pgx.BeginFunc(t.Context(), pool, func(tx pgx.Tx) (err error) {
		id, err = fn(tx)
		return err
	}); err != nil {
		t.Fatalf("commit: %v", err)
	}
	return id
}

func balance(t *testing.T, pool *pgxpool.Pool, account string) int64 {
	t.Helper()
	var amount int64
	if err := pool.QueryRow(t.Context(), `SELECT amount FROM balances WHERE account = $1`, account).Scan(&amount); err != nil {
		t.Fatalf("balance of %s: %v", account, err)
	}
	return amount
}

// TestTransferUpdatesBalance is the writer, the relay and the handler in
// one test: two transfers committed, one rolled back; the balance holds the
// two.
func TestTransferUpdatesBalance(t *testing.T) {
	dsn, pool := newDatabase(t)
	relay := relaytest.Start(t, dsn, relaytest.Config{})
	consumer := inboxtest.Start(t, relay, inbox.Config{Topics: []string{"outbox.account"}, DB: pool}, apply)

	a := commit(t, pool, func(tx pgx.Tx) (string, error) { return transfer(t.Context(), tx, "alice", 500) })
	err := pgx.BeginFunc(t.Context(), pool, func(tx pgx.Tx) error {
		if _, err := transfer(t.Context(), tx, "alice", 1_000_000); err != nil {
			return err
		}
		return errRollback
	})
	if !errors.Is(err, errRollback) {
		t.Fatalf("rolled-back transfer: %v", err)
	}
	b := commit(t, pool, func(tx pgx.Tx) (string, error) { return transfer(t.Context(), tx, "alice", -200) })

	consumer.Wait(t, a, b)
	if got := balance(t, pool, "alice"); got != 300 {
		t.Errorf("balance of alice = %d, want 300: 500 - 200, and not the rolled-back transfer", got)
	}
}

var errRollback = errors.New("roll back")

// TestRedeliveredEventAppliesOnce delivers an event twice, as Kafka may
// after a crash of the relay or of the consumer: the inbox skips the second
// copy.
func TestRedeliveredEventAppliesOnce(t *testing.T) {
	dsn, pool := newDatabase(t)
	relay := relaytest.Start(t, dsn, relaytest.Config{})
	consumer := inboxtest.Start(t, relay, inbox.Config{Topics: []string{"outbox.account"}, DB: pool}, apply)

	id := commit(t, pool, func(tx pgx.Tx) (string, error) { return transfer(t.Context(), tx, "bob", 700) })
	consumer.Wait(t, id)

	// The record once more, as the relay published it.
	rec := relay.Expect(t, 1)[0]
	cl, err := kgo.NewClient(kgo.SeedBrokers(relay.Brokers()...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	again := &kgo.Record{Topic: rec.Topic, Key: []byte(rec.Key), Value: rec.Value}
	for k, v := range rec.Headers {
		again.Headers = append(again.Headers, kgo.RecordHeader{Key: k, Value: []byte(v)})
	}
	if err := cl.ProduceSync(t.Context(), again).FirstErr(); err != nil {
		t.Fatalf("produce the record again: %v", err)
	}
	// A later event on the same one-partition topic is applied after the copy.
	marker := commit(t, pool, func(tx pgx.Tx) (string, error) { return transfer(t.Context(), tx, "bob", 1) })
	consumer.Wait(t, marker)

	if got := balance(t, pool, "bob"); got != 701 {
		t.Errorf("balance of bob = %d, want 701: the copy of the 700 applied again?", got)
	}
	if got := consumer.Duplicates(); got != 1 {
		t.Errorf("the consumer skipped %d duplicates, want 1", got)
	}
}
