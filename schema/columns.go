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
