package schema

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/google/uuid"
)

// emitStatement writes one transactional logical decoding message. The
// cast picks the text variant of pg_logical_emit_message.
const emitStatement = "SELECT pg_catalog.pg_logical_emit_message(true, $1, $2::text)"

// Emit writes msgs as transactional logical decoding messages with prefix
// DefaultMessagePrefix through db, which should be the caller's
// transaction: the relay publishes them if and only if it commits, in
// order among the transaction's outbox rows. Nothing is stored in any
// table. pgx.Tx, *pgx.Conn and *pgxpool.Pool satisfy Execer; on a
// connection or pool outside a transaction each message commits alone.
//
// Each message becomes one statement. An empty ID gets a new random UUID;
// a set one must be a UUID. Emit checks every message before writing any,
// and fails with an error wrapping ErrNoAggregateID when an aggregate ID is
// empty, and with an error when a payload is not valid JSON or an ID is
// not a UUID. The W3C trace context in ctx is added to the headers as
// Insert adds it.
func Emit(ctx context.Context, db Execer, msgs ...Message) error {
	return Outbox{}.Emit(ctx, db, msgs...)
}

// EmitSQL is Emit for database/sql.
func EmitSQL(ctx context.Context, db SQLExecer, msgs ...Message) error {
	return Outbox{}.EmitSQL(ctx, db, msgs...)
}

// Emit writes msgs as Emit does, with prefix o.MessagePrefix. o's Table and
// Columns play no part: the messages are in no table.
func (o Outbox) Emit(ctx context.Context, db Execer, msgs ...Message) error {
	return o.emit(ctx, msgs, func(prefix string, content []byte) error {
		_, err := db.Exec(ctx, emitStatement, prefix, string(content))
		return err
	})
}

// EmitSQL is Emit for database/sql.
func (o Outbox) EmitSQL(ctx context.Context, db SQLExecer, msgs ...Message) error {
	return o.emit(ctx, msgs, func(prefix string, content []byte) error {
		_, err := db.ExecContext(ctx, emitStatement, prefix, string(content))
		return err
	})
}

func (o Outbox) emit(ctx context.Context, msgs []Message, exec func(prefix string, content []byte) error) error {
	prefix := o.MessagePrefix
	if prefix == "" {
		prefix = DefaultMessagePrefix
	}
	// Headers always have a place in a message's content.
	msgs = Outbox{Trace: o.Trace}.traced(ctx, msgs)
	contents := make([][]byte, len(msgs))
	for i, m := range msgs {
		if m.AggregateID == "" {
			return fmt.Errorf("emit outbox message: event %d (%s): %w", i, m.EventType, ErrNoAggregateID)
		}
		if !json.Valid(m.Payload) {
			return fmt.Errorf("emit outbox message: event %d (%s): payload is not valid JSON", i, m.EventType)
		}
		if m.ID == "" {
			m.ID = uuid.NewString()
		} else if err := uuid.Validate(m.ID); err != nil {
			return fmt.Errorf("emit outbox message: event %d (%s): ID %q is not a UUID; leave it empty for a random one: %w", i, m.EventType, m.ID, err)
		}
		b, err := encodeContent(m)
		if err != nil {
			return fmt.Errorf("emit outbox message: event %d (%s): %w", i, m.EventType, err)
		}
		contents[i] = b
	}
	for i, c := range contents {
		if err := exec(prefix, c); err != nil {
			return fmt.Errorf("emit outbox message %d of %d with prefix %q: %w", i+1, len(contents), prefix, err)
		}
	}
	return nil
}
