package main

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/outbox-relay/outbox-relay/inbox"
)

// schemaSQL is the service's own tables: a balance per account, and a log
// of every effect applied, in the order applied.
const schemaSQL = `
CREATE TABLE IF NOT EXISTS balances (
    account text   PRIMARY KEY,
    amount  bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS effects (
    seq      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account  text   NOT NULL,
    event_id uuid   NOT NULL,
    position text   COLLATE "C" NOT NULL
)`

// setup creates the inbox table and the service's tables when missing.
func setup(ctx context.Context, db *pgxpool.Pool) error {
	if err := inbox.Setup(ctx, db, inbox.DefaultTable); err != nil {
		return err
	}
	if _, err := db.Exec(ctx, schemaSQL); err != nil {
		return fmt.Errorf("create the balance tables: %w", err)
	}
	return nil
}

// deposit is the payload of an account event.
type deposit struct {
	Delta int64 `json:"delta"`
}

// apply is the inbox handler: it runs in the transaction that records the
// event in the inbox, so its writes commit with that record or not at all.
func apply(ctx context.Context, tx pgx.Tx, ev inbox.Event) error {
	var d deposit
	if err := json.Unmarshal(ev.Value, &d); err != nil {
		return inbox.Permanent(fmt.Errorf("decode event %s: %w", ev.ID, err))
	}
	account := string(ev.Key)
	if _, err := tx.Exec(ctx, `INSERT INTO balances (account, amount) VALUES ($1, $2)
		ON CONFLICT (account) DO UPDATE SET amount = balances.amount + EXCLUDED.amount`, account, d.Delta); err != nil {
		return fmt.Errorf("update the balance of %s: %w", account, err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO effects (account, event_id, position) VALUES ($1, $2, $3)`,
		account, ev.ID, ev.Position); err != nil {
		return fmt.Errorf("log the effect of event %s: %w", ev.ID, err)
	}
	return nil
}
