package schema_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"pgregory.net/rapid"

	"github.com/outbox-relay/outbox-relay/schema"
)

func TestColumnsValidate(t *testing.T) {
	tests := []struct {
		name    string
		cols    schema.Columns
		wantErr string // a field name the error must mention; empty means no error
	}{
		{name: "default", cols: schema.DefaultColumns},
		{name: "debezium without headers", cols: schema.DebeziumColumns},
		{name: "zero", cols: schema.Columns{}, wantErr: "id"},
		{name: "no id", cols: with(schema.DefaultColumns, func(c *schema.Columns) { c.ID = "" }), wantErr: "id"},
		{name: "no aggregate type", cols: with(schema.DefaultColumns, func(c *schema.Columns) { c.AggregateType = "" }), wantErr: "aggregate_type"},
		{name: "no aggregate id", cols: with(schema.DefaultColumns, func(c *schema.Columns) { c.AggregateID = "" }), wantErr: "aggregate_id"},
		{name: "no event type", cols: with(schema.DefaultColumns, func(c *schema.Columns) { c.EventType = "" }), wantErr: "event_type"},
		{name: "no payload", cols: with(schema.DefaultColumns, func(c *schema.Columns) { c.Payload = "" }), wantErr: "payload"},
		{name: "blank payload", cols: with(schema.DefaultColumns, func(c *schema.Columns) { c.Payload = " \t" }), wantErr: "payload"},
		{name: "no headers is fine", cols: with(schema.DefaultColumns, func(c *schema.Columns) { c.Headers = "" })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cols.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("%+v.Validate() = %v, want nil", tt.cols, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("%+v.Validate() = nil, want an error about %s", tt.cols, tt.wantErr)
			}
			if !strings.Contains(err.Error(), "for "+tt.wantErr+" ") {
				t.Errorf("%+v.Validate() = %q, want it to name %s", tt.cols, err, tt.wantErr)
			}
		})
	}
}

func TestColumnsValidateDuplicate(t *testing.T) {
	// One column cannot fill two fields: the second would silently win.
	tests := []struct {
		name         string
		cols         schema.Columns
		field, other string
	}{
		{"id is aggregate id", with(schema.DefaultColumns, func(c *schema.Columns) { c.AggregateID = "id" }), "id", "aggregate_id"},
		{"type twice", with(schema.DebeziumColumns, func(c *schema.Columns) { c.AggregateType = "type" }), "aggregate_type", "event_type"},
		{"headers is payload", with(schema.DefaultColumns, func(c *schema.Columns) { c.Headers = "payload" }), "payload", "headers"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cols.Validate()
			if err == nil {
				t.Fatalf("%+v.Validate() = nil, want an error", tt.cols)
			}
			for _, f := range []string{tt.field, tt.other} {
				if !strings.Contains(err.Error(), f) {
					t.Errorf("%+v.Validate() = %q, want it to name %s", tt.cols, err, f)
				}
			}
			names := []string{"id", "aggregate_type", "aggregate_id", "event_type", "payload", "headers",
				"aggregatetype", "aggregateid", "type"}
			if b, err := tt.cols.Bind("public.outbox", names); err == nil {
				t.Errorf("%+v.Bind(%q) = %v, want an error", tt.cols, names, b.Field)
			}
			var r recorder
			if err := (schema.Outbox{Columns: tt.cols}).Insert(t.Context(), &r, numbered(1)...); err == nil {
				t.Errorf("Insert with columns %+v succeeded, want an error", tt.cols)
			}
			if len(r.stmts) != 0 {
				t.Errorf("Insert with columns %+v ran %d statements, want none", tt.cols, len(r.stmts))
			}
		})
	}
}

// with returns a copy of c changed by f.
func with(c schema.Columns, f func(*schema.Columns)) schema.Columns {
	f(&c)
	return c
}

func TestColumnsBind(t *testing.T) {
	tests := []struct {
		name  string
		cols  schema.Columns
		names []string
		want  []schema.Field
	}{
		{
			name:  "default table",
			cols:  schema.DefaultColumns,
			names: []string{"id", "aggregate_type", "aggregate_id", "event_type", "payload", "headers", "created_at"},
			want: []schema.Field{schema.FieldID, schema.FieldAggregateType, schema.FieldAggregateID,
				schema.FieldEventType, schema.FieldPayload, schema.FieldHeaders, schema.FieldNone},
		},
		{
			name:  "shuffled with extra columns",
			cols:  schema.DefaultColumns,
			names: []string{"tenant", "payload", "headers", "id", "seq", "event_type", "aggregate_id", "aggregate_type"},
			want: []schema.Field{schema.FieldNone, schema.FieldPayload, schema.FieldHeaders, schema.FieldID,
				schema.FieldNone, schema.FieldEventType, schema.FieldAggregateID, schema.FieldAggregateType},
		},
		{
			name:  "debezium table",
			cols:  schema.DebeziumColumns,
			names: []string{"id", "aggregatetype", "aggregateid", "type", "payload"},
			want: []schema.Field{schema.FieldID, schema.FieldAggregateType, schema.FieldAggregateID,
				schema.FieldEventType, schema.FieldPayload},
		},
		{
			name:  "headers column unmapped when Headers is empty",
			cols:  schema.DebeziumColumns,
			names: []string{"headers", "payload", "type", "aggregateid", "aggregatetype", "id"},
			want: []schema.Field{schema.FieldNone, schema.FieldPayload, schema.FieldEventType,
				schema.FieldAggregateID, schema.FieldAggregateType, schema.FieldID},
		},
		{
			name: "names match exactly, not case-folded",
			cols: schema.Columns{ID: "EventID", AggregateType: "AggType", AggregateID: "AggID",
				EventType: "Type", Payload: "Body", Headers: "Meta"},
			names: []string{"eventid", "EventID", "AggType", "AggID", "Type", "Body", "Meta"},
			want: []schema.Field{schema.FieldNone, schema.FieldID, schema.FieldAggregateType,
				schema.FieldAggregateID, schema.FieldEventType, schema.FieldPayload, schema.FieldHeaders},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := tt.cols.Bind("public.outbox", tt.names)
			if err != nil {
				t.Fatalf("Bind(%q): %v", tt.names, err)
			}
			if diff := cmp.Diff(tt.want, b.Field); diff != "" {
				t.Errorf("Bind(%q).Field mismatch (-want +got):\n%s", tt.names, diff)
			}
		})
	}
}

func TestColumnsBindMissing(t *testing.T) {
	tests := []struct {
		name        string
		cols        schema.Columns
		names       []string
		wantMissing []string
	}{
		{
			name:        "empty table",
			cols:        schema.DefaultColumns,
			names:       nil,
			wantMissing: []string{"id (for id)", "aggregate_type (for aggregate_type)", "aggregate_id (for aggregate_id)", "event_type (for event_type)", "payload (for payload)", "headers (for headers)"},
		},
		{
			name:        "only headers missing",
			cols:        schema.DefaultColumns,
			names:       []string{"id", "aggregate_type", "aggregate_id", "event_type", "payload", "created_at"},
			wantMissing: []string{"headers (for headers)"},
		},
		{
			name:        "debezium table read with default columns",
			cols:        schema.DefaultColumns,
			names:       []string{"id", "aggregatetype", "aggregateid", "type", "payload"},
			wantMissing: []string{"aggregate_type (for aggregate_type)", "aggregate_id (for aggregate_id)", "event_type (for event_type)", "headers (for headers)"},
		},
		{
			name:        "default table read with debezium columns",
			cols:        schema.DebeziumColumns,
			names:       []string{"id", "aggregate_type", "aggregate_id", "event_type", "payload", "headers", "created_at"},
			wantMissing: []string{"aggregatetype (for aggregate_type)", "aggregateid (for aggregate_id)", "type (for event_type)"},
		},
		{
			name:        "case differs",
			cols:        schema.DefaultColumns,
			names:       []string{"ID", "aggregate_type", "aggregate_id", "event_type", "Payload", "headers"},
			wantMissing: []string{"id (for id)", "payload (for payload)"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := tt.cols.Bind("app.events", tt.names)
			if err == nil {
				t.Fatalf("Bind(%q) = %+v, want error", tt.names, b)
			}
			if b.Field != nil {
				t.Errorf("Bind(%q) returned Field %v with an error, want the zero Binding", tt.names, b.Field)
			}
			msg := err.Error()
			if !strings.Contains(msg, "app.events") {
				t.Errorf("Bind error %q does not name the table app.events", msg)
			}
			// The error lists exactly the missing columns, in field order,
			// then the columns the table has.
			_, rest, ok := strings.Cut(msg, "has no column ")
			missing, listed, ok2 := strings.Cut(rest, "; its columns are ")
			if !ok || !ok2 {
				t.Fatalf("Bind error %q does not read \"has no column ...; its columns are ...\"", msg)
			}
			if diff := cmp.Diff(tt.wantMissing, strings.Split(missing, ", ")); diff != "" {
				t.Errorf("Bind error %q: missing columns mismatch (-want +got):\n%s", msg, diff)
			}
			if want := strings.Join(tt.names, ", ") + ":"; !strings.HasPrefix(listed, want) {
				t.Errorf("Bind error %q does not list the table's columns %q", msg, want)
			}
		})
	}
}

func TestColumnsBindProperty(t *testing.T) {
	// Any order of the default columns, mixed with extra columns, binds
	// each mapped column to its field and every other column to FieldNone.
	mapped := map[string]schema.Field{
		"id": schema.FieldID, "aggregate_type": schema.FieldAggregateType, "aggregate_id": schema.FieldAggregateID,
		"event_type": schema.FieldEventType, "payload": schema.FieldPayload, "headers": schema.FieldHeaders,
	}
	rapid.Check(t, func(t *rapid.T) {
		names := []string{"id", "aggregate_type", "aggregate_id", "event_type", "payload", "headers"}
		extra := rapid.SliceOfDistinct(rapid.StringMatching(`[a-z_]{1,12}`), rapid.ID[string]).Draw(t, "extra")
		for _, e := range extra {
			if _, ok := mapped[e]; !ok {
				names = append(names, e)
			}
		}
		names = rapid.Permutation(names).Draw(t, "names")
		b, err := schema.DefaultColumns.Bind("public.outbox", names)
		if err != nil {
			t.Fatalf("Bind(%q): %v", names, err)
		}
		if len(b.Field) != len(names) {
			t.Fatalf("Bind(%q) bound %d columns, want %d", names, len(b.Field), len(names))
		}
		for i, n := range names {
			if want := mapped[n]; b.Field[i] != want { // FieldNone for extras
				t.Fatalf("Bind(%q).Field[%d] (%s) = %d, want %d", names, i, n, b.Field[i], want)
			}
		}
	})
}
