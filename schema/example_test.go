package schema_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"log"
	"os"

	"github.com/jackc/pgx/v5"

	"github.com/outbox-relay/outbox-relay/schema"
)

// An application writes its own rows and the events about them in one
// transaction: the relay publishes the events if and only if it commits.
func ExampleInsert() {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close(ctx)

	payload, err := json.Marshal(map[string]any{"order_id": "o-42", "total": 1250})
	if err != nil {
		log.Fatal(err)
	}
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "INSERT INTO orders (id, total) VALUES ($1, $2)", "o-42", 1250); err != nil {
			return err
		}
		return schema.Insert(ctx, tx, schema.Message{
			AggregateType: "order",
			AggregateID:   "o-42", // the Kafka key: events of one order stay in order
			EventType:     "order.created",
			Payload:       payload,
			Headers:       map[string]string{"trace-id": "4bf92f3577b34da6"},
		})
	})
	if err != nil {
		log.Fatal(err)
	}
}

// With database/sql, register pgx's driver by importing
// github.com/jackc/pgx/v5/stdlib for its side effect, and pass the *sql.Tx
// to InsertSQL.
func ExampleInsertSQL() {
	ctx := context.Background()
	db, err := sql.Open("pgx", os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer tx.Rollback() // does nothing once Commit has succeeded

	if _, err := tx.ExecContext(ctx, "UPDATE orders SET status = 'paid' WHERE id = $1", "o-42"); err != nil {
		log.Fatal(err)
	}
	err = schema.InsertSQL(ctx, tx, schema.Message{
		ID:            "7d444840-9dc0-11d1-b245-5ffdce74fad2", // for consumers that deduplicate; empty means a new UUID
		AggregateType: "order",
		AggregateID:   "o-42",
		EventType:     "order.paid",
		Payload:       json.RawMessage(`{"order_id":"o-42","method":"card"}`),
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		log.Fatal(err)
	}
}

// An existing table laid out for Debezium's Outbox Event Router works
// unchanged: name it and its columns.
func ExampleOutbox_Insert() {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close(ctx)

	outbox := schema.Outbox{
		Table:   schema.Table{Schema: "public", Name: "outboxevent"},
		Columns: schema.DebeziumColumns,
	}
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		return outbox.Insert(ctx, tx, schema.Message{
			AggregateType: "customer",
			AggregateID:   "c-7",
			EventType:     "customer.renamed",
			Payload:       json.RawMessage(`{"name":"Ada"}`),
		})
	})
	if err != nil {
		log.Fatal(err)
	}
}

// Migrations renders the DDL of the outbox table; each statement may run
// again without harm.
func ExampleMigrations() {
	ms, err := schema.Migrations(schema.DefaultTable, schema.DefaultColumns)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(ms[0].Version, ms[0].Name) // later versions follow in order
	fmt.Println(schema.CreatePublicationSQL("outbox_relay", schema.DefaultTable))
	// Output:
	// 1 0001_outbox
	// CREATE PUBLICATION "outbox_relay" FOR TABLE "public"."outbox" WITH (publish = 'insert')
}

// A consumer drops replays by remembering the greatest position it has
// processed: encoded positions compare in commit order.
func ExamplePosition_String() {
	last, err := schema.ParsePosition("00000000016b374800000002")
	if err != nil {
		log.Fatal(err)
	}
	next := schema.Position{CommitLSN: 0x16B3748, Index: 3}
	fmt.Println(next.String() > last.String(), last.Less(next))
	fmt.Println(last.CommitLSN, last.Index)
	// Output:
	// true true
	// 0/16B3748 2
}
