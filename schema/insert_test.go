package schema_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/outbox-relay/outbox-relay/cdc/pgtest"
	"github.com/outbox-relay/outbox-relay/schema"
)

// recorder is an Execer and an SQLExecer that keeps every statement it is
// given, and fails with err when err is set.
type recorder struct {
	stmts []stmt
	err   error
}

type stmt struct {
	sql  string
	args []any
}

func (r *recorder) Exec(_ context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	r.stmts = append(r.stmts, stmt{sql, args})
	return pgconn.NewCommandTag(fmt.Sprintf("INSERT 0 %d", len(args))), r.err
}

func (r *recorder) ExecContext(_ context.Context, sql string, args ...any) (sql.Result, error) {
	r.stmts = append(r.stmts, stmt{sql, args})
	return nil, r.err
}

var (
	_ schema.Execer    = (*recorder)(nil)
	_ schema.SQLExecer = (*recorder)(nil)
	_ schema.Execer    = (pgx.Tx)(nil)
	_ schema.Execer    = (*pgx.Conn)(nil)
	_ schema.SQLExecer = (*sql.Tx)(nil)
	_ schema.SQLExecer = (*sql.DB)(nil)
	_ schema.SQLExecer = (*sql.Conn)(nil)
)

// numbered returns n valid messages whose IDs count up from 1, so that
// their order is visible in the IDs.
func numbered(n int) []schema.Message {
	msgs := make([]schema.Message, n)
	for i := range msgs {
		msgs[i] = schema.Message{
			ID:            seqID(i + 1),
			AggregateType: "order",
			AggregateID:   fmt.Sprintf("order-%d", i%7),
			EventType:     "order.updated",
			Payload:       json.RawMessage(fmt.Sprintf(`{"seq":%d}`, i+1)),
		}
	}
	return msgs
}

// seqID returns the UUID whose last 12 digits are n in decimal.
func seqID(n int) string { return fmt.Sprintf("00000000-0000-4000-8000-%012d", n) }

func TestInsertStatement(t *testing.T) {
	msg := schema.Message{
		ID: seqID(1), AggregateType: "order", AggregateID: "o-1", EventType: "created",
		Payload: json.RawMessage(`{"total": 12}`),
	}
	tests := []struct {
		name     string
		outbox   schema.Outbox
		wantSQL  string
		wantArgs []any
	}{
		{
			name:     "zero outbox writes the default table",
			outbox:   schema.Outbox{},
			wantSQL:  `INSERT INTO "public"."outbox" ("id", "aggregate_type", "aggregate_id", "event_type", "payload", "headers") VALUES ($1, $2, $3, $4, $5, $6)`,
			wantArgs: []any{seqID(1), "order", "o-1", "created", `{"total": 12}`, nil},
		},
		{
			name:     "debezium columns have no headers",
			outbox:   schema.Outbox{Table: schema.Table{Schema: "app", Name: "outboxevent"}, Columns: schema.DebeziumColumns},
			wantSQL:  `INSERT INTO "app"."outboxevent" ("id", "aggregatetype", "aggregateid", "type", "payload") VALUES ($1, $2, $3, $4, $5)`,
			wantArgs: []any{seqID(1), "order", "o-1", "created", `{"total": 12}`},
		},
		{
			name:     "odd names are quoted",
			outbox:   schema.Outbox{Table: oddTable, Columns: oddColumns},
			wantSQL:  `INSERT INTO "public"."Out""Box's" ("EventID", "Aggregate Type", "aggregate""id", "Type", "Body", "it's meta") VALUES ($1, $2, $3, $4, $5, $6)`,
			wantArgs: []any{seqID(1), "order", "o-1", "created", `{"total": 12}`, nil},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var pgxRec, sqlRec recorder
			if err := tt.outbox.Insert(t.Context(), &pgxRec, msg); err != nil {
				t.Fatalf("Insert: %v", err)
			}
			if err := tt.outbox.InsertSQL(t.Context(), &sqlRec, msg); err != nil {
				t.Fatalf("InsertSQL: %v", err)
			}
			want := []stmt{{tt.wantSQL, tt.wantArgs}}
			opt := cmp.AllowUnexported(stmt{})
			if diff := cmp.Diff(want, pgxRec.stmts, opt); diff != "" {
				t.Errorf("Insert statements mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(want, sqlRec.stmts, opt); diff != "" {
				t.Errorf("InsertSQL statements mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

var placeholder = regexp.MustCompile(`\$(\d+)`)

func TestInsertSplitsStatements(t *testing.T) {
	for _, n := range []int{1, 999, 1000, 1001, 2500, 12000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			msgs := numbered(n)
			var r recorder
			if err := schema.Insert(t.Context(), &r, msgs...); err != nil {
				t.Fatalf("Insert(%d messages): %v", n, err)
			}
			var ids []string
			for i, s := range r.stmts {
				if len(s.args) > 65535 {
					t.Errorf("statement %d binds %d parameters, PostgreSQL allows 65535", i, len(s.args))
				}
				if len(s.args)%6 != 0 {
					t.Fatalf("statement %d binds %d parameters, want 6 per row", i, len(s.args))
				}
				ps := placeholder.FindAllStringSubmatch(s.sql, -1)
				if len(ps) != len(s.args) {
					t.Fatalf("statement %d has %d placeholders for %d arguments", i, len(ps), len(s.args))
				}
				for j, p := range ps {
					if p[1] != fmt.Sprint(j+1) {
						t.Fatalf("statement %d: placeholder %d is $%s, want $%d", i, j, p[1], j+1)
					}
				}
				for j := 0; j < len(s.args); j += 6 {
					ids = append(ids, s.args[j].(string))
				}
			}
			want := make([]string, n)
			for i, m := range msgs {
				want[i] = m.ID
			}
			if diff := cmp.Diff(want, ids); diff != "" {
				t.Errorf("rows written out of order or lost (-want +got):\n%s", diff)
			}
		})
	}
}

func TestInsertNoMessages(t *testing.T) {
	var r recorder
	if err := schema.Insert(t.Context(), &r); err != nil {
		t.Fatalf("Insert(): %v", err)
	}
	if err := schema.InsertSQL(t.Context(), &r); err != nil {
		t.Fatalf("InsertSQL(): %v", err)
	}
	if len(r.stmts) != 0 {
		t.Errorf("Insert of no messages ran %d statements, want none", len(r.stmts))
	}
}

func TestInsertGeneratesIDs(t *testing.T) {
	msgs := numbered(50)
	for i := range msgs {
		if i%2 == 0 {
			msgs[i].ID = ""
		}
	}
	var r recorder
	if err := schema.Insert(t.Context(), &r, msgs...); err != nil {
		t.Fatalf("Insert: %v", err)
	}
	seen := map[string]bool{}
	for i, m := range msgs {
		id := r.stmts[0].args[i*6].(string)
		if m.ID != "" {
			if id != m.ID {
				t.Errorf("message %d: written ID %q, want the given %q", i, id, m.ID)
			}
			continue
		}
		u, err := uuid.Parse(id)
		if err != nil {
			t.Errorf("message %d: generated ID %q is not a UUID: %v", i, id, err)
		}
		if u.Version() != 4 {
			t.Errorf("message %d: generated ID %q is UUID version %d, want 4", i, id, u.Version())
		}
		if seen[id] {
			t.Errorf("message %d: generated ID %q twice", i, id)
		}
		seen[id] = true
	}
	if msgs[0].ID != "" {
		t.Errorf("Insert changed the caller's message: ID = %q", msgs[0].ID)
	}
}

var errExec = errors.New("connection lost")

func TestInsertExecError(t *testing.T) {
	r := recorder{err: errExec}
	err := schema.Insert(t.Context(), &r, numbered(3)...)
	if !errors.Is(err, errExec) {
		t.Errorf("Insert = %v, want it to wrap %v", err, errExec)
	}
	err = schema.InsertSQL(t.Context(), &r, numbered(3)...)
	if !errors.Is(err, errExec) {
		t.Errorf("InsertSQL = %v, want it to wrap %v", err, errExec)
	}
	if len(r.stmts) != 2 {
		t.Errorf("ran %d statements, want 1 per call: nothing after a failed statement", len(r.stmts))
	}
}

// badMessages are rejected before anything is written.
var badMessages = []struct {
	name   string
	change func(*schema.Message)
	is     error // the sentinel the error wraps, if any
}{
	{name: "empty aggregate id", change: func(m *schema.Message) { m.AggregateID = "" }, is: schema.ErrNoAggregateID},
	{name: "nil payload", change: func(m *schema.Message) { m.Payload = nil }},
	{name: "truncated payload", change: func(m *schema.Message) { m.Payload = json.RawMessage(`{"a":`) }},
	{name: "text payload", change: func(m *schema.Message) { m.Payload = json.RawMessage(`order created`) }},
	{name: "two values", change: func(m *schema.Message) { m.Payload = json.RawMessage(`{} {}`) }},
}

func TestInsertRejects(t *testing.T) {
	for _, bad := range badMessages {
		t.Run(bad.name, func(t *testing.T) {
			msgs := numbered(3)
			bad.change(&msgs[2])
			var r recorder
			err := schema.Insert(t.Context(), &r, msgs...)
			if err == nil {
				t.Fatalf("Insert succeeded, want an error")
			}
			if bad.is != nil && !errors.Is(err, bad.is) {
				t.Errorf("Insert = %v, want it to wrap %v", err, bad.is)
			}
			if !strings.Contains(err.Error(), "event 2 ") {
				t.Errorf("Insert = %q, want it to name event 2", err)
			}
			if len(r.stmts) != 0 {
				t.Errorf("Insert ran %d statements before rejecting, want none", len(r.stmts))
			}
		})
	}
	t.Run("invalid columns", func(t *testing.T) {
		var r recorder
		ob := schema.Outbox{Columns: schema.Columns{ID: "id", Payload: "payload"}}
		if err := ob.Insert(t.Context(), &r, numbered(1)...); err == nil {
			t.Errorf("Insert with columns %+v succeeded, want an error", ob.Columns)
		}
		if len(r.stmts) != 0 {
			t.Errorf("Insert ran %d statements, want none", len(r.stmts))
		}
	})
}

// TestInsertRejectsBeforeWriting checks that a bad message after the first
// statement's worth of rows writes nothing either, and that the error names
// the message by its index in the call. Through an Execer that commits each
// statement (*pgx.Conn, *pgxpool.Pool, *sql.DB) anything written before the
// error would be published.
func TestInsertRejectsBeforeWriting(t *testing.T) {
	const bad = 1500
	for _, b := range badMessages {
		t.Run(b.name, func(t *testing.T) {
			msgs := numbered(2500)
			b.change(&msgs[bad])
			var r recorder
			err := schema.Insert(t.Context(), &r, msgs...)
			if err == nil {
				t.Fatalf("Insert succeeded, want an error")
			}
			if len(r.stmts) != 0 {
				rows := 0
				for _, s := range r.stmts {
					rows += len(s.args) / 6
				}
				t.Errorf("Insert wrote %d rows in %d statements before rejecting message %d, want none", rows, len(r.stmts), bad)
			}
			if want := fmt.Sprintf("event %d ", bad); !strings.Contains(err.Error(), want) {
				t.Errorf("Insert = %q, want it to name the bad message as %q", err, want)
			}
		})
	}
}

// row is one outbox row read back from PostgreSQL.
type row struct {
	ID, AggregateType, AggregateID, EventType string
	Payload                                   any               // decoded JSON
	Headers                                   map[string]string // nil when NULL
	HeadersType                               string            // jsonb_typeof(headers); "" when NULL
}

// readRows returns tbl's rows in the order they were written (ctid order
// holds that for a table that only ever had rows inserted).
func readRows(t *testing.T, conn *pgx.Conn, ob schema.Outbox) []row {
	t.Helper()
	tbl, c := ob.Table, ob.Columns
	if tbl == (schema.Table{}) {
		tbl = schema.DefaultTable
	}
	if c == (schema.Columns{}) {
		c = schema.DefaultColumns
	}
	q := func(s string) string { return pgx.Identifier{s}.Sanitize() }
	headers := "NULL::jsonb"
	if c.Headers != "" {
		headers = q(c.Headers)
	}
	rows, err := conn.Query(t.Context(), fmt.Sprintf(
		`SELECT %s::text, %s, %s, %s, %s::text, %s::text, coalesce(jsonb_typeof(%s), '') FROM %s ORDER BY ctid`,
		q(c.ID), q(c.AggregateType), q(c.AggregateID), q(c.EventType), q(c.Payload), headers, headers, tbl.Quoted()))
	if err != nil {
		t.Fatalf("read %s: %v", tbl, err)
	}
	got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
		var (
			x       row
			payload string
			headers *string
		)
		if err := r.Scan(&x.ID, &x.AggregateType, &x.AggregateID, &x.EventType, &payload, &headers, &x.HeadersType); err != nil {
			return x, err
		}
		if err := json.Unmarshal([]byte(payload), &x.Payload); err != nil {
			return x, fmt.Errorf("payload %s: %w", payload, err)
		}
		if headers != nil {
			x.Headers = map[string]string{}
			if err := json.Unmarshal([]byte(*headers), &x.Headers); err != nil {
				return x, fmt.Errorf("headers %s: %w", *headers, err)
			}
		}
		return x, nil
	})
	if err != nil {
		t.Fatalf("read %s: %v", tbl, err)
	}
	return got
}

// wantRows returns the rows msgs should have become, taking the IDs of
// messages without one from got after checking they are distinct UUIDs.
func wantRows(t *testing.T, msgs []schema.Message, got []row, hasHeaders bool) []row {
	t.Helper()
	want := make([]row, len(msgs))
	seen := map[string]bool{}
	for i, m := range msgs {
		w := row{ID: m.ID, AggregateType: m.AggregateType, AggregateID: m.AggregateID, EventType: m.EventType}
		if err := json.Unmarshal(m.Payload, &w.Payload); err != nil {
			t.Fatalf("message %d payload %s: %v", i, m.Payload, err)
		}
		if hasHeaders && m.Headers != nil {
			w.Headers, w.HeadersType = m.Headers, "object"
		}
		if w.ID == "" && i < len(got) {
			if _, err := uuid.Parse(got[i].ID); err != nil {
				t.Errorf("row %d: generated ID %q is not a UUID: %v", i, got[i].ID, err)
			}
			w.ID = got[i].ID
		}
		if seen[w.ID] {
			t.Errorf("row %d: ID %q appears twice", i, w.ID)
		}
		seen[w.ID] = true
		want[i] = w
	}
	return want
}

// sample exercises IDs, headers and payload shapes.
func sample() []schema.Message {
	return []schema.Message{
		{
			ID: seqID(1), AggregateType: "order", AggregateID: "o-1", EventType: "order.created",
			Payload: json.RawMessage(`{"total": 12.5, "lines": [{"sku": "a", "qty": 2}], "note": null}`),
			Headers: map[string]string{"trace-id": "abc", "tenant": "t1"},
		},
		{
			AggregateType: "order", AggregateID: "o-1", EventType: "order.paid",
			Payload: json.RawMessage("  {\"b\": 1,\n \"a\": \"ünïcode ✓\"}  "),
		},
		{
			AggregateType: "order", AggregateID: "o-2", EventType: "order.created",
			Payload: json.RawMessage(`[1, "two", false]`),
			Headers: map[string]string{},
		},
		{
			ID: seqID(4), AggregateType: "", AggregateID: "o-3", EventType: "",
			Payload: json.RawMessage(`"just a string"`),
			Headers: map[string]string{"quote": `it's "quoted"`, "empty": ""},
		},
		{
			AggregateType: "customer", AggregateID: "c-9", EventType: "customer.renamed",
			Payload: json.RawMessage(`42`),
		},
	}
}

// writer writes msgs through one kind of database handle, committing them.
type writer struct {
	name  string
	write func(t *testing.T, dsn string, ob schema.Outbox, msgs []schema.Message) error
}

// writers are the handles every integration test writes through;
// pgxpool_test.go adds *pgxpool.Pool and database/sql.
var writers = []writer{
	{"pgx.Tx", func(t *testing.T, dsn string, ob schema.Outbox, msgs []schema.Message) error {
		conn := connect(t, dsn)
		return pgx.BeginFunc(t.Context(), conn, func(tx pgx.Tx) error {
			return ob.Insert(t.Context(), tx, msgs...)
		})
	}},
	{"pgx.Conn", func(t *testing.T, dsn string, ob schema.Outbox, msgs []schema.Message) error {
		return ob.Insert(t.Context(), connect(t, dsn), msgs...)
	}},
}

func TestInsertRoundTrip(t *testing.T) {
	for _, w := range writers {
		t.Run(w.name, func(t *testing.T) {
			dsn, conn := newOutbox(t)
			msgs := sample()
			if err := w.write(t, dsn, schema.Outbox{}, msgs); err != nil {
				t.Fatalf("insert: %v", err)
			}
			got := readRows(t, conn, schema.Outbox{})
			if diff := cmp.Diff(wantRows(t, msgs, got, true), got); diff != "" {
				t.Errorf("rows mismatch (-want +got):\n%s", diff)
			}
			// jsonb equality in PostgreSQL's own terms, too.
			for i, m := range msgs {
				var equal bool
				if err := conn.QueryRow(t.Context(),
					`SELECT payload = $2::jsonb FROM outbox WHERE id = $1::uuid`, got[i].ID, string(m.Payload),
				).Scan(&equal); err != nil {
					t.Fatalf("compare payload %d: %v", i, err)
				}
				if !equal {
					t.Errorf("row %d: stored payload differs from %s", i, m.Payload)
				}
			}
		})
	}
}

func TestInsertMany(t *testing.T) {
	// More rows than one statement holds, in one call: all land, in order.
	const n = 2500
	for _, w := range writers {
		if w.name == "sql.DB" {
			continue
		}
		t.Run(w.name, func(t *testing.T) {
			dsn, conn := newOutbox(t)
			msgs := numbered(n)
			if err := w.write(t, dsn, schema.Outbox{}, msgs); err != nil {
				t.Fatalf("insert %d: %v", n, err)
			}
			got := readRows(t, conn, schema.Outbox{})
			if diff := cmp.Diff(wantRows(t, msgs, got, true), got); diff != "" {
				t.Errorf("rows mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestInsertRollback(t *testing.T) {
	msgs := sample()
	t.Run("pgx.Tx", func(t *testing.T) {
		dsn, conn := newOutbox(t)
		other := connect(t, dsn)
		tx, err := other.Begin(t.Context())
		if err != nil {
			t.Fatalf("begin: %v", err)
		}
		if err := schema.Insert(t.Context(), tx, msgs...); err != nil {
			t.Fatalf("Insert: %v", err)
		}
		if got := count(t, conn, schema.DefaultTable); got != 0 {
			t.Errorf("before commit another session sees %d rows, want 0", got)
		}
		if err := tx.Rollback(t.Context()); err != nil {
			t.Fatalf("rollback: %v", err)
		}
		if got := count(t, conn, schema.DefaultTable); got != 0 {
			t.Errorf("after rollback outbox holds %d rows, want 0", got)
		}

		tx, err = other.Begin(t.Context())
		if err != nil {
			t.Fatalf("begin: %v", err)
		}
		if err := schema.Insert(t.Context(), tx, msgs...); err != nil {
			t.Fatalf("Insert: %v", err)
		}
		if got := count(t, conn, schema.DefaultTable); got != 0 {
			t.Errorf("before commit another session sees %d rows, want 0", got)
		}
		if err := tx.Commit(t.Context()); err != nil {
			t.Fatalf("commit: %v", err)
		}
		if got := count(t, conn, schema.DefaultTable); got != len(msgs) {
			t.Errorf("after commit outbox holds %d rows, want %d", got, len(msgs))
		}
	})
}

func TestInsertRejectsInDatabase(t *testing.T) {
	// Outside a transaction every statement commits on its own: a rejected
	// call must not have written any of its messages.
	tests := []struct {
		name  string
		n     int // messages in the call
		bad   int // index of the bad one
		kinds int // how many of badMessages to try
	}{
		{"one statement", 10, 7, len(badMessages)},
		{"second statement", 2500, 1500, 2},
	}
	for _, tt := range tests {
		for _, b := range badMessages[:tt.kinds] {
			t.Run(tt.name+"/"+b.name, func(t *testing.T) {
				dsn, conn := newOutbox(t)
				msgs := numbered(tt.n)
				b.change(&msgs[tt.bad])
				err := schema.Insert(t.Context(), connect(t, dsn), msgs...)
				if err == nil {
					t.Fatalf("Insert succeeded, want an error")
				}
				if b.is != nil && !errors.Is(err, b.is) {
					t.Errorf("Insert = %v, want it to wrap %v", err, b.is)
				}
				if got := count(t, conn, schema.DefaultTable); got != 0 {
					t.Errorf("after a rejected Insert, outbox holds %d rows, want 0", got)
				}
			})
		}
	}
}

func TestInsertDebeziumTable(t *testing.T) {
	for _, w := range writers {
		t.Run(w.name, func(t *testing.T) {
			dsn := pgtest.NewDatabase(t)
			conn := connect(t, dsn)
			if _, err := conn.Exec(t.Context(), `CREATE TABLE outboxevent (
				id uuid primary key,
				aggregatetype varchar(255) not null,
				aggregateid varchar(255) not null,
				type varchar(255) not null,
				payload jsonb)`); err != nil {
				t.Fatalf("create table: %v", err)
			}
			ob := schema.Outbox{Table: schema.Table{Schema: "public", Name: "outboxevent"}, Columns: schema.DebeziumColumns}
			msgs := sample()
			if err := w.write(t, dsn, ob, msgs); err == nil {
				t.Fatal("insert of events with headers into a table without a headers column succeeded, want an error")
			}
			for i := range msgs {
				msgs[i].Headers = nil
			}
			if err := w.write(t, dsn, ob, msgs); err != nil {
				t.Fatalf("insert: %v", err)
			}
			got := readRows(t, conn, ob)
			if diff := cmp.Diff(wantRows(t, msgs, got, false), got); diff != "" {
				t.Errorf("rows mismatch (-want +got):\n%s", diff)
			}
		})
	}
}
