package schema

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"
)

// Message is an event an application writes to the outbox.
type Message struct {
	// ID identifies the event for consumers that deduplicate. Empty means a
	// new random UUID.
	ID            string
	AggregateType string
	// AggregateID is the Kafka key: events of one aggregate keep their order.
	AggregateID string
	EventType   string
	// Payload is the event body as JSON.
	Payload json.RawMessage
	// Headers become Kafka record headers, one per key. Nil writes NULL.
	Headers map[string]string
}

// Execer runs a statement; pgx.Tx, *pgx.Conn and *pgxpool.Pool satisfy it.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// SQLExecer runs a statement; database/sql's *sql.Tx, *sql.Conn and *sql.DB
// satisfy it.
type SQLExecer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// Outbox writes messages into one outbox table. The zero value writes to
// DefaultTable with DefaultColumns.
type Outbox struct {
	Table   Table
	Columns Columns
	// Trace returns the W3C trace context current in ctx. Insert writes a
	// valid one into the headers of each message that has no traceparent
	// header of its own (see HeaderTraceparent), when the table has a
	// headers column. Nil means TraceFromContext.
	Trace func(ctx context.Context) (traceparent, tracestate string)
	// MessagePrefix is the prefix Emit writes logical decoding messages
	// with; it must be the relay's --message-prefix. Empty means
	// DefaultMessagePrefix.
	MessagePrefix string
}

// Insert writes msgs to the default outbox table through db, which should be
// the caller's transaction: the events are published if and only if it
// commits.
func Insert(ctx context.Context, db Execer, msgs ...Message) error {
	return Outbox{}.Insert(ctx, db, msgs...)
}

// InsertSQL is Insert for database/sql.
func InsertSQL(ctx context.Context, db SQLExecer, msgs ...Message) error {
	return Outbox{}.InsertSQL(ctx, db, msgs...)
}

// maxRowsPerStatement keeps one INSERT under PostgreSQL's 65535 parameters.
const maxRowsPerStatement = 1000

// Insert writes msgs into o's table through db, in order, with as few
// statements as the parameter limit allows.
func (o Outbox) Insert(ctx context.Context, db Execer, msgs ...Message) error {
	return o.insert(o.traced(ctx, msgs), func(q string, args []any) error {
		_, err := db.Exec(ctx, q, args...)
		return err
	})
}

// InsertSQL is Insert for database/sql.
func (o Outbox) InsertSQL(ctx context.Context, db SQLExecer, msgs ...Message) error {
	return o.insert(o.traced(ctx, msgs), func(q string, args []any) error {
		_, err := db.ExecContext(ctx, q, args...)
		return err
	})
}

func (o Outbox) insert(msgs []Message, exec func(string, []any) error) error {
	t, c := o.Table, o.Columns
	if t == (Table{}) {
		t = DefaultTable
	}
	if c == (Columns{}) {
		c = DefaultColumns
	}
	if err := c.Validate(); err != nil {
		return fmt.Errorf("insert into outbox %s: %w", t, err)
	}
	// Check every message before writing any, so that a bad one leaves the
	// caller's transaction untouched.
	for i, m := range msgs {
		if m.AggregateID == "" {
			return fmt.Errorf("insert into outbox %s: event %d (%s): %w", t, i, m.EventType, ErrNoAggregateID)
		}
		if !json.Valid(m.Payload) {
			return fmt.Errorf("insert into outbox %s: event %d (%s): payload is not valid JSON", t, i, m.EventType)
		}
		if m.Headers != nil && c.Headers == "" {
			return fmt.Errorf("insert into outbox %s: event %d (%s) has headers, but the column mapping has no headers column", t, i, m.EventType)
		}
	}
	for len(msgs) > 0 {
		n := min(len(msgs), maxRowsPerStatement)
		q, args, err := insertStatement(t, c, msgs[:n])
		if err != nil {
			return fmt.Errorf("insert into outbox %s: %w", t, err)
		}
		if err := exec(q, args); err != nil {
			return fmt.Errorf("insert %d events into outbox %s: %w", n, t, err)
		}
		msgs = msgs[n:]
	}
	return nil
}

func insertStatement(t Table, c Columns, msgs []Message) (string, []any, error) {
	cols := []string{c.ID, c.AggregateType, c.AggregateID, c.EventType, c.Payload}
	if c.Headers != "" {
		cols = append(cols, c.Headers)
	}
	var q strings.Builder
	q.WriteString("INSERT INTO ")
	q.WriteString(t.Quoted())
	q.WriteString(" (")
	for i, col := range cols {
		if i > 0 {
			q.WriteString(", ")
		}
		q.WriteString(quoteIdent(col))
	}
	q.WriteString(") VALUES ")
	args := make([]any, 0, len(msgs)*len(cols))
	for i, m := range msgs {
		id := m.ID
		if id == "" {
			id = uuid.NewString()
		}
		payload := string(m.Payload)
		args = append(args, id, m.AggregateType, m.AggregateID, m.EventType, payload)
		if c.Headers != "" {
			var h any
			if m.Headers != nil {
				b, err := json.Marshal(m.Headers)
				if err != nil {
					return "", nil, fmt.Errorf("event %d (%s): encode headers: %w", i, m.EventType, err)
				}
				h = string(b)
			}
			args = append(args, h)
		}
		if i > 0 {
			q.WriteString(", ")
		}
		q.WriteByte('(')
		for j := range cols {
			if j > 0 {
				q.WriteString(", ")
			}
			fmt.Fprintf(&q, "$%d", len(args)-len(cols)+j+1)
		}
		q.WriteByte(')')
	}
	return q.String(), args, nil
}
