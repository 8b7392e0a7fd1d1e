// Package replayquery reads outbox rows back from the outbox table, for
// `outbox-relay replay` and for the recovery of a lost slot: the queries
// that select and count a range of rows, and the scan that turns a row into
// the schema.Event the replication stream would have carried.
//
// Invariant: rows come in replay order, by the created-at column and then
// by id, and a range's bounds select the same rows in SelectSQL and
// CountSQL.
package replayquery

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/outbox-relay/outbox-relay/schema"
)

// DefaultCreatedAt is the column Query orders rows by when none is named:
// the one setup creates, filled by now(), the start time of the inserting
// transaction.
const DefaultCreatedAt = "created_at"

// ErrNoEvent reports an event ID the outbox table does not hold.
var ErrNoEvent = errors.New("no outbox row has this event id")

// Bound is one end of a replay range: a time, or one row's place in replay
// order.
type Bound struct {
	// CreatedAt is the time, compared with the created-at column.
	CreatedAt time.Time
	// ID, when set, makes the bound the row with this ID (whose created-at
	// value is CreatedAt) instead of a time: LookupBound finds it.
	ID string
}

// IsZero reports whether b bounds nothing.
func (b Bound) IsZero() bool { return b.CreatedAt.IsZero() && b.ID == "" }

// Query selects rows of an outbox table to publish again, in replay order:
// by the created-at column, then by id. Rows of one transaction have equal
// created-at values (now() is the transaction's start time), and nothing in
// the table records their insertion order: among them the id decides, which
// for random UUIDs is arbitrary. Rows of different transactions come in the
// order the transactions started, which is their commit order only when
// they did not overlap.
type Query struct {
	Table   schema.Table
	Columns schema.Columns
	// CreatedAt names the timestamp column. Zero means DefaultCreatedAt.
	CreatedAt string
	// Since selects rows at or after it: a time (created at or after), or a
	// row (that row and those after it). Zero means from the first row.
	Since Bound
	// Until selects rows before it: a time (created before it), or a row
	// (up to and including it). Zero means to the last row.
	Until Bound
	// AggregateType, when set, selects only rows of that aggregate type.
	AggregateType string
	// Skip, when set, returns an SQL predicate true of the rows not to
	// select, given the placeholder ("$3") that carries SkipArg.
	Skip    func(placeholder string) string
	SkipArg any
}

func (q Query) createdAt() string {
	if q.CreatedAt == "" {
		return DefaultCreatedAt
	}
	return q.CreatedAt
}

// where returns the WHERE clause selecting q's rows, and its arguments.
func (q Query) where() (string, []any) {
	var conds []string
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	at, id := quoteIdent(q.createdAt()), quoteIdent(q.Columns.ID)
	switch {
	case q.Since.ID != "":
		conds = append(conds, fmt.Sprintf("(%s, %s) >= (%s, %s)", at, id, arg(q.Since.CreatedAt), arg(q.Since.ID)))
	case !q.Since.CreatedAt.IsZero():
		conds = append(conds, fmt.Sprintf("%s >= %s", at, arg(q.Since.CreatedAt)))
	}
	switch {
	case q.Until.ID != "":
		conds = append(conds, fmt.Sprintf("(%s, %s) <= (%s, %s)", at, id, arg(q.Until.CreatedAt), arg(q.Until.ID)))
	case !q.Until.CreatedAt.IsZero():
		conds = append(conds, fmt.Sprintf("%s < %s", at, arg(q.Until.CreatedAt)))
	}
	if q.AggregateType != "" {
		conds = append(conds, fmt.Sprintf("%s = %s", quoteIdent(q.Columns.AggregateType), arg(q.AggregateType)))
	}
	if q.Skip != nil {
		conds = append(conds, "NOT ("+q.Skip(arg(q.SkipArg))+")")
	}
	if len(conds) == 0 {
		return "", nil
	}
	return " WHERE " + strings.Join(conds, " AND "), args
}

// SelectSQL returns the query of q's rows in replay order, with the
// columns Scan reads, and its arguments.
func (q Query) SelectSQL() (string, []any) {
	c := q.Columns
	text := func(col string) string { return "coalesce(" + quoteIdent(col) + "::text, '')" }
	headers := "NULL::text"
	if c.Headers != "" {
		headers = quoteIdent(c.Headers) + "::text"
	}
	where, args := q.where()
	return fmt.Sprintf("SELECT %s, %s, %s, %s, %s::text, %s, %s FROM %s%s ORDER BY %s, %s",
		text(c.ID), text(c.AggregateType), text(c.AggregateID), text(c.EventType), quoteIdent(c.Payload), headers,
		quoteIdent(q.createdAt()), q.Table.Quoted(), where, quoteIdent(q.createdAt()), quoteIdent(c.ID)), args
}

// CountSQL returns the query counting q's rows, and its arguments.
func (q Query) CountSQL() (string, []any) {
	where, args := q.where()
	return "SELECT count(*) FROM " + q.Table.Quoted() + where, args
}

// Scan reads one row of SelectSQL's query into ev, which it resets, and
// returns the row's created-at value. The event's text is as the
// replication stream carries it (PostgreSQL's output of each column);
// Position stays zero, as the table holds no commit LSN.
func (q Query) Scan(rows pgx.Rows, ev *schema.Event) (time.Time, error) {
	*ev = schema.Event{Table: q.Table.String()}
	var at time.Time
	if err := rows.Scan(&ev.ID, &ev.AggregateType, &ev.AggregateID, &ev.EventType, &ev.Payload, &ev.Headers, &at); err != nil {
		return time.Time{}, fmt.Errorf("read row of %s: %w", q.Table, err)
	}
	return at, nil
}

// LookupBound returns the bound of the row whose ID is id, or an error
// wrapping ErrNoEvent when the table has none (or id cannot be an ID of the
// column's type).
func (q Query) LookupBound(ctx context.Context, db interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}, id string) (Bound, error) {
	sql := fmt.Sprintf("SELECT %s, %s::text FROM %s WHERE %s = $1",
		quoteIdent(q.createdAt()), quoteIdent(q.Columns.ID), q.Table.Quoted(), quoteIdent(q.Columns.ID))
	var b Bound
	err := db.QueryRow(ctx, sql, id).Scan(&b.CreatedAt, &b.ID)
	var pgErr *pgconn.PgError
	switch {
	case errors.Is(err, pgx.ErrNoRows),
		errors.As(err, &pgErr) && pgErr.Code == "22P02": // invalid_text_representation: not a UUID
		return Bound{}, fmt.Errorf("event %q in %s: %w", id, q.Table, ErrNoEvent)
	case err != nil:
		return Bound{}, fmt.Errorf("look up event %q in %s: %w", id, q.Table, err)
	}
	return b, nil
}

func quoteIdent(s string) string { return pgx.Identifier{s}.Sanitize() }
