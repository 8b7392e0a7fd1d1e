package schema_test

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
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

// withoutComments drops SQL line comments: what PostgreSQL executes.
func withoutComments(sql string) string {
	var b strings.Builder
	for line := range strings.Lines(sql) {
		if code, _, found := strings.Cut(line, "--"); found {
			line = code + "\n"
		}
		b.WriteString(line)
	}
	return b.String()
}

func TestMigrationsRender(t *testing.T) {
	tests := []struct {
		name     string
		tbl      schema.Table
		cols     schema.Columns
		wantCols []string // quoted identifiers the DDL must declare
	}{
		{
			name: "default",
			tbl:  schema.DefaultTable,
			cols: schema.DefaultColumns,
			wantCols: []string{`"public"."outbox"`, `"id"`, `"aggregate_type"`, `"aggregate_id"`,
				`"event_type"`, `"payload"`, `"headers"`, `"created_at"`},
		},
		{
			name: "custom names",
			tbl:  oddTable,
			cols: oddColumns,
			wantCols: []string{`"public"."Out""Box's"`, `"EventID"`, `"Aggregate Type"`, `"aggregate""id"`,
				`"Type"`, `"Body"`, `"it's meta"`, `"created_at"`},
		},
		{
			name: "debezium names without headers",
			tbl:  schema.Table{Schema: "app", Name: "outboxevent"},
			cols: schema.DebeziumColumns,
			wantCols: []string{`"app"."outboxevent"`, `"id"`, `"aggregatetype"`, `"aggregateid"`,
				`"type"`, `"payload"`, `"created_at"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ms, err := schema.Migrations(tt.tbl, tt.cols)
			if err != nil {
				t.Fatalf("Migrations(%+v, %+v): %v", tt.tbl, tt.cols, err)
			}
			if len(ms) == 0 {
				t.Fatalf("Migrations(%+v, %+v) returned none", tt.tbl, tt.cols)
			}
			if ms[0].Version != 1 || ms[0].Name != "0001_outbox" {
				t.Errorf("first migration is %d %q, want 1 %q", ms[0].Version, ms[0].Name, "0001_outbox")
			}
			var all strings.Builder
			for i, m := range ms {
				if i > 0 && m.Version <= ms[i-1].Version {
					t.Errorf("migration %q (version %d) follows %q (version %d): versions must ascend",
						m.Name, m.Version, ms[i-1].Name, ms[i-1].Version)
				}
				if !strings.HasPrefix(m.Name, fmt.Sprintf("%04d_", m.Version)) {
					t.Errorf("migration %q has version %d, want the name to start with it", m.Name, m.Version)
				}
				if strings.TrimSpace(m.SQL) == "" {
					t.Errorf("migration %q has no SQL", m.Name)
				}
				code := withoutComments(m.SQL)
				if strings.Contains(code, "{{") || strings.Contains(code, "}}") {
					t.Errorf("migration %q has a placeholder left:\n%s", m.Name, m.SQL)
				}
				all.WriteString(code)
			}
			for _, c := range tt.wantCols {
				if !strings.Contains(all.String(), c) {
					t.Errorf("migrations do not mention %s:\n%s", c, all.String())
				}
			}
			// Every statement is idempotent.
			create := regexp.MustCompile(`(?i)\bCREATE\s+(UNIQUE\s+)?(TABLE|INDEX)\s+`)
			for _, loc := range create.FindAllStringIndex(all.String(), -1) {
				if rest := all.String()[loc[1]:]; !strings.HasPrefix(strings.ToUpper(rest), "IF NOT EXISTS") {
					t.Errorf("statement at %q is not IF NOT EXISTS", all.String()[loc[0]:min(len(all.String()), loc[1]+40)])
				}
			}
		})
	}
}

func TestPublicationSQL(t *testing.T) {
	tests := []struct {
		name string
		got  string
		want string
	}{
		{
			name: "create publication",
			got:  schema.CreatePublicationSQL("outbox_relay", schema.DefaultTable),
			want: `CREATE PUBLICATION "outbox_relay" FOR TABLE "public"."outbox" WITH (publish = 'insert')`,
		},
		{
			name: "create publication with odd names",
			got:  schema.CreatePublicationSQL(`Pub "one"`, schema.Table{Schema: "App", Name: `Out"Box`}),
			want: `CREATE PUBLICATION "Pub ""one""" FOR TABLE "App"."Out""Box" WITH (publish = 'insert')`,
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

func TestMigrationsApply(t *testing.T) {
	tests := []struct {
		name      string
		tbl       schema.Table
		cols      schema.Columns
		wantNames []string // the table's columns, in table order
	}{
		{
			name:      "default",
			tbl:       schema.DefaultTable,
			cols:      schema.DefaultColumns,
			wantNames: []string{"id", "aggregate_type", "aggregate_id", "event_type", "payload", "headers", "created_at"},
		},
		{
			name:      "custom names",
			tbl:       oddTable,
			cols:      oddColumns,
			wantNames: []string{"EventID", "Aggregate Type", `aggregate"id`, "Type", "Body", "it's meta", "created_at"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dsn := pgtest.NewDatabase(t)
			conn := connect(t, dsn)
			migrate(t, conn, tt.tbl, tt.cols)

			if diff := cmp.Diff(tt.wantNames, columnNames(t, conn, tt.tbl)); diff != "" {
				t.Fatalf("columns of %s mismatch (-want +got):\n%s", tt.tbl, diff)
			}
			var state bool
			if err := conn.QueryRow(t.Context(), "SELECT to_regclass($1) IS NOT NULL", tt.tbl.StateTable().Quoted()).Scan(&state); err != nil {
				t.Fatal(err)
			}
			if !state {
				t.Errorf("Migrations did not create the state table %s", tt.tbl.StateTable())
			}

			ob := schema.Outbox{Table: tt.tbl, Columns: tt.cols}
			msg := schema.Message{AggregateType: "order", AggregateID: "o-1", EventType: "created", Payload: []byte(`{}`)}
			if err := ob.Insert(t.Context(), conn, msg); err != nil {
				t.Fatalf("Insert: %v", err)
			}

			// Running them again changes nothing and keeps the rows.
			migrate(t, conn, tt.tbl, tt.cols)
			if got := count(t, conn, tt.tbl); got != 1 {
				t.Errorf("after migrating again, %s holds %d rows, want 1", tt.tbl, got)
			}
			if diff := cmp.Diff(tt.wantNames, columnNames(t, conn, tt.tbl)); diff != "" {
				t.Errorf("after migrating again, columns of %s mismatch (-want +got):\n%s", tt.tbl, diff)
			}
		})
	}
}

func TestPublicationApply(t *testing.T) {
	dsn := pgtest.NewDatabase(t)
	conn := connect(t, dsn)
	migrate(t, conn, oddTable, oddColumns)
	const pub = `Pub "one"`
	q := schema.CreatePublicationSQL(pub, oddTable)
	if _, err := conn.Exec(t.Context(), q); err != nil {
		t.Fatalf("%s: %v", q, err)
	}

	rows, err := conn.Query(t.Context(),
		`SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1`, pub)
	if err != nil {
		t.Fatalf("read publication: %v", err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("read publication: %v", err)
	}
	if diff := cmp.Diff([]string{oddTable.String()}, got); diff != "" {
		t.Errorf("tables of publication %q mismatch (-want +got):\n%s", pub, diff)
	}
	var ins, upd, del, trunc bool
	if err := conn.QueryRow(t.Context(),
		`SELECT pubinsert, pubupdate, pubdelete, pubtruncate FROM pg_publication WHERE pubname = $1`, pub,
	).Scan(&ins, &upd, &del, &trunc); err != nil {
		t.Fatalf("read publication: %v", err)
	}
	if !ins || upd || del || trunc {
		t.Errorf("publication %q publishes insert=%v update=%v delete=%v truncate=%v, want inserts only",
			pub, ins, upd, del, trunc)
	}
}
