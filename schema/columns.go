package schema

import (
	"fmt"
	"strings"
)

// Columns names the outbox table's columns. Headers may be empty when the
// table has no headers column; every other field is required.
type Columns struct {
	ID            string
	AggregateType string
	AggregateID   string
	EventType     string
	Payload       string
	Headers       string
}

// DefaultColumns are the column names of the table created by setup.
var DefaultColumns = Columns{
	ID:            "id",
	AggregateType: "aggregate_type",
	AggregateID:   "aggregate_id",
	EventType:     "event_type",
	Payload:       "payload",
	Headers:       "headers",
}

// DebeziumColumns are the column names Debezium's Outbox Event Router reads
// by default, so that an existing table works unchanged.
var DebeziumColumns = Columns{
	ID:            "id",
	AggregateType: "aggregatetype",
	AggregateID:   "aggregateid",
	EventType:     "type",
	Payload:       "payload",
}

// Validate reports an empty required column name, or one column mapped to
// two fields.
func (c Columns) Validate() error {
	fields := c.required()
	if c.Headers != "" {
		fields = append(fields, columnField{"headers", c.Headers})
	}
	seen := make(map[string]string, len(fields))
	for _, f := range fields {
		if strings.TrimSpace(f.name) == "" {
			return fmt.Errorf("column for %s is empty; name the table column that holds it", f.field)
		}
		if other, ok := seen[f.name]; ok {
			return fmt.Errorf("column %q is mapped to both %s and %s; map each field to its own column", f.name, other, f.field)
		}
		seen[f.name] = f.field
	}
	return nil
}

type columnField struct{ field, name string }

func (c Columns) required() []columnField {
	return []columnField{
		{"id", c.ID},
		{"aggregate_type", c.AggregateType},
		{"aggregate_id", c.AggregateID},
		{"event_type", c.EventType},
		{"payload", c.Payload},
	}
}

// Binding maps the position of each column in a table's row to an Event
// field. The zero value binds nothing; build one with Columns.Bind.
type Binding struct {
	// Field holds, for each column of the row in table order, which Event
	// field it fills.
	Field []Field
}

// Field identifies an Event field filled from a column.
type Field uint8

// The Event fields a column can fill.
const (
	FieldNone Field = iota
	FieldID
	FieldAggregateType
	FieldAggregateID
	FieldEventType
	FieldPayload
	FieldHeaders
)

// Bind matches the table's column names, in table order, against c. It
// returns an error naming every mapped column the table lacks.
func (c Columns) Bind(table string, names []string) (Binding, error) {
	if err := c.Validate(); err != nil {
		return Binding{}, err
	}
	want := map[string]Field{
		c.ID:            FieldID,
		c.AggregateType: FieldAggregateType,
		c.AggregateID:   FieldAggregateID,
		c.EventType:     FieldEventType,
		c.Payload:       FieldPayload,
	}
	if c.Headers != "" {
		want[c.Headers] = FieldHeaders
	}
	b := Binding{Field: make([]Field, len(names))}
	found := make(map[string]bool, len(want))
	for i, n := range names {
		if f, ok := want[n]; ok {
			b.Field[i] = f
			found[n] = true
		}
	}
	var missing []string
	for _, f := range c.required() {
		if !found[f.name] {
			missing = append(missing, fmt.Sprintf("%s (for %s)", f.name, f.field))
		}
	}
	if c.Headers != "" && !found[c.Headers] {
		missing = append(missing, c.Headers+" (for headers)")
	}
	if len(missing) > 0 {
		return Binding{}, fmt.Errorf("table %s has no column %s; its columns are %s: set the column mapping to match the table",
			table, strings.Join(missing, ", "), strings.Join(names, ", "))
	}
	return b, nil
}
