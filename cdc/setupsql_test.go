package cdc

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/outbox-relay/outbox-relay/cdc/pgtest"
	"github.com/outbox-relay/outbox-relay/schema"
)

// oddTable and oddColumns need quoting everywhere: upper case, spaces,
// double and single quotes.
var (
	oddTable   = schema.Table{Schema: "public", Name: `Out"Box's`}
	oddColumns = schema.Columns{
		ID:            "EventID",
		AggregateType: "Aggregate Type",
		AggregateID:   `aggregate"id`,
		EventType:     "Type",
		Payload:       "Body",
		Headers:       "it's meta",
	}
)

func TestSetupStatements(t *testing.T) {
	tests := []struct {
		name string
		got  string
		want string
	}{
		{
			name: "add table",
			got:  addTableToPublicationSQL(`Pub "one"`, schema.Table{Schema: "app", Name: "events"}),
			want: `ALTER PUBLICATION "Pub ""one""" ADD TABLE "app"."events"`,
		},
		{
			name: "create slot",
			got:  createSlotSQL("outbox_relay"),
			want: `SELECT lsn FROM pg_create_logical_replication_slot('outbox_relay', 'pgoutput')`,
		},
		{
			name: "create slot with a quote",
			got:  createSlotSQL("it's'); DROP TABLE outbox; --"),
			want: `SELECT lsn FROM pg_create_logical_replication_slot('it''s''); DROP TABLE outbox; --', 'pgoutput')`,
		},
		{
			name: "emit function",
			got:  emitFunction(schema.Table{Schema: `App "x"`, Name: "outbox"}),
			want: `"App ""x""".outbox_emit(text, text, text, jsonb, jsonb)`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got  %s\nwant %s", tt.got, tt.want)
			}
		})
	}
}

// TestSetupStatementsApply runs the statements setup builds against
// PostgreSQL: the migrations emitMigration and stateMigration make what
// setup looks for, a second table joins the publication, and the slot is a
// pgoutput one.
func TestSetupStatementsApply(t *testing.T) {
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	run := func(sql string, args ...any) {
		t.Helper()
		if _, err := conn.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	tables := []schema.Table{oddTable, {Schema: "public", Name: "second"}}
	for _, tbl := range tables {
		ms, err := schema.Migrations(tbl, oddColumns)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range ms {
			if m.Version == emitMigration || m.Version == stateMigration {
				continue // run on their own below, as setup does
			}
			run(m.SQL)
		}
	}

	ms, err := schema.Migrations(oddTable, oddColumns)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.Version == emitMigration || m.Version == stateMigration {
			run(m.SQL)
		}
	}
	var fn, st bool
	if err := conn.QueryRow(ctx, "SELECT to_regprocedure($1) IS NOT NULL, to_regclass($2) IS NOT NULL",
		emitFunction(oddTable), oddTable.StateTable().Quoted()).Scan(&fn, &st); err != nil {
		t.Fatal(err)
	}
	if !fn || !st {
		t.Errorf("after migrations %d and %d, function %s exists = %t, state table %s exists = %t; want both",
			emitMigration, stateMigration, emitFunction(oddTable), fn, oddTable.StateTable(), st)
	}

	const pub = `Pub "one"`
	run(schema.CreatePublicationSQL(pub, tables[0]))
	run(addTableToPublicationSQL(pub, tables[1]))
	rows, err := conn.Query(ctx,
		`SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1`, pub)
	if err != nil {
		t.Fatalf("read publication: %v", err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("read publication: %v", err)
	}
	if diff := cmp.Diff([]string{tables[0].String(), tables[1].String()}, got); diff != "" {
		t.Errorf("tables of publication %q mismatch (-want +got):\n%s", pub, diff)
	}

	const slot = "setup_statements_test"
	var lsn pglogrepl.LSN
	if err := conn.QueryRow(ctx, createSlotSQL(slot)).Scan(&lsn); err != nil {
		t.Fatalf("%s: %v", createSlotSQL(slot), err)
	}
	var plugin string
	if err := conn.QueryRow(ctx,
		`SELECT plugin FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&plugin); err != nil {
		t.Fatalf("read slot %s: %v", slot, err)
	}
	if plugin != "pgoutput" {
		t.Errorf("slot %s uses plugin %q, want pgoutput", slot, plugin)
	}
}
