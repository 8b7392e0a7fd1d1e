package cdc

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"pgregory.net/rapid"

	"github.com/outbox-relay/outbox-relay/schema"
)

func TestBind(t *testing.T) {
	tests := []struct {
		name  string
		cols  schema.Columns
		names []string
		want  []eventField
	}{
		{
			name:  "default table",
			cols:  schema.DefaultColumns,
			names: []string{"id", "aggregate_type", "aggregate_id", "event_type", "payload", "headers", "created_at"},
			want: []eventField{fieldID, fieldAggregateType, fieldAggregateID,
				fieldEventType, fieldPayload, fieldHeaders, fieldNone},
		},
		{
			name:  "shuffled with extra columns",
			cols:  schema.DefaultColumns,
			names: []string{"tenant", "payload", "headers", "id", "seq", "event_type", "aggregate_id", "aggregate_type"},
			want: []eventField{fieldNone, fieldPayload, fieldHeaders, fieldID,
				fieldNone, fieldEventType, fieldAggregateID, fieldAggregateType},
		},
		{
			name:  "debezium table",
			cols:  schema.DebeziumColumns,
			names: []string{"id", "aggregatetype", "aggregateid", "type", "payload"},
			want: []eventField{fieldID, fieldAggregateType, fieldAggregateID,
				fieldEventType, fieldPayload},
		},
		{
			name:  "headers column unmapped when Headers is empty",
			cols:  schema.DebeziumColumns,
			names: []string{"headers", "payload", "type", "aggregateid", "aggregatetype", "id"},
			want: []eventField{fieldNone, fieldPayload, fieldEventType,
				fieldAggregateID, fieldAggregateType, fieldID},
		},
		{
			name: "names match exactly, not case-folded",
			cols: schema.Columns{ID: "EventID", AggregateType: "AggType", AggregateID: "AggID",
				EventType: "Type", Payload: "Body", Headers: "Meta"},
			names: []string{"eventid", "EventID", "AggType", "AggID", "Type", "Body", "Meta"},
			want: []eventField{fieldNone, fieldID, fieldAggregateType,
				fieldAggregateID, fieldEventType, fieldPayload, fieldHeaders},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := bind(tt.cols, "public.outbox", tt.names)
			if err != nil {
				t.Fatalf("bind(%q): %v", tt.names, err)
			}
			if diff := cmp.Diff(tt.want, b.fields); diff != "" {
				t.Errorf("bind(%q).fields mismatch (-want +got):\n%s", tt.names, diff)
			}
		})
	}
}

func TestBindMissing(t *testing.T) {
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
			b, err := bind(tt.cols, "app.events", tt.names)
			if err == nil {
				t.Fatalf("bind(%q) = %+v, want error", tt.names, b)
			}
			if b.fields != nil {
				t.Errorf("bind(%q) returned fields %v with an error, want the zero binding", tt.names, b.fields)
			}
			msg := err.Error()
			if !strings.Contains(msg, "app.events") {
				t.Errorf("bind error %q does not name the table app.events", msg)
			}
			// The error lists exactly the missing columns, in field order,
			// then the columns the table has.
			_, rest, ok := strings.Cut(msg, "has no column ")
			missing, listed, ok2 := strings.Cut(rest, "; its columns are ")
			if !ok || !ok2 {
				t.Fatalf("bind error %q does not read \"has no column ...; its columns are ...\"", msg)
			}
			if diff := cmp.Diff(tt.wantMissing, strings.Split(missing, ", ")); diff != "" {
				t.Errorf("bind error %q: missing columns mismatch (-want +got):\n%s", msg, diff)
			}
			if want := strings.Join(tt.names, ", ") + ":"; !strings.HasPrefix(listed, want) {
				t.Errorf("bind error %q does not list the table's columns %q", msg, want)
			}
		})
	}
}

func TestBindProperty(t *testing.T) {
	// Any order of the default columns, mixed with extra columns, binds
	// each mapped column to its field and every other column to fieldNone.
	mapped := map[string]eventField{
		"id": fieldID, "aggregate_type": fieldAggregateType, "aggregate_id": fieldAggregateID,
		"event_type": fieldEventType, "payload": fieldPayload, "headers": fieldHeaders,
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
		b, err := bind(schema.DefaultColumns, "public.outbox", names)
		if err != nil {
			t.Fatalf("bind(%q): %v", names, err)
		}
		if len(b.fields) != len(names) {
			t.Fatalf("bind(%q) bound %d columns, want %d", names, len(b.fields), len(names))
		}
		for i, n := range names {
			if want := mapped[n]; b.fields[i] != want { // fieldNone for extras
				t.Fatalf("bind(%q).fields[%d] (%s) = %d, want %d", names, i, n, b.fields[i], want)
			}
		}
	})
}

func TestBindDuplicate(t *testing.T) {
	// One column cannot fill two fields: the second would silently win.
	names := []string{"id", "aggregate_type", "aggregate_id", "event_type", "payload", "headers",
		"aggregatetype", "aggregateid", "type"}
	tests := []struct {
		name string
		cols schema.Columns
	}{
		{"id is aggregate id", with(schema.DefaultColumns, func(c *schema.Columns) { c.AggregateID = "id" })},
		{"type twice", with(schema.DebeziumColumns, func(c *schema.Columns) { c.AggregateType = "type" })},
		{"headers is payload", with(schema.DefaultColumns, func(c *schema.Columns) { c.Headers = "payload" })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if b, err := bind(tt.cols, "public.outbox", names); err == nil {
				t.Errorf("bind(%+v, %q) = %v, want an error", tt.cols, names, b.fields)
			}
		})
	}
}

// with returns a copy of c changed by f.
func with(c schema.Columns, f func(*schema.Columns)) schema.Columns {
	f(&c)
	return c
}
