package schema_test

import (
	"strings"
	"testing"

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
