package cdc

import (
	"fmt"
	"strings"

	"github.com/outbox-relay/outbox-relay/schema"
)

// binding maps the position of each column in the outbox table's row to
// the Event field it fills. The zero value binds nothing; build one with
// bind.
type binding struct {
	// fields holds, for each column of the row in table order, the Event
	// field it fills.
	fields []eventField
}

// eventField identifies an Event field filled from a column.
type eventField uint8

// The Event fields a column can fill.
const (
	fieldNone eventField = iota
	fieldID
	fieldAggregateType
	fieldAggregateID
	fieldEventType
	fieldPayload
	fieldHeaders
)

// mappedColumn is the column c maps to one Event field.
type mappedColumn struct {
	field  eventField
	name   string // the field's name, in errors
	column string
}

// bind matches the table's column names, in table order, against c. It
// returns an error naming every mapped column the table lacks.
func bind(c schema.Columns, table string, names []string) (binding, error) {
	if err := c.Validate(); err != nil {
		return binding{}, err
	}
	// In field order, which the error keeps.
	mapped := []mappedColumn{
		{fieldID, "id", c.ID},
		{fieldAggregateType, "aggregate_type", c.AggregateType},
		{fieldAggregateID, "aggregate_id", c.AggregateID},
		{fieldEventType, "event_type", c.EventType},
		{fieldPayload, "payload", c.Payload},
	}
	if c.Headers != "" {
		mapped = append(mapped, mappedColumn{fieldHeaders, "headers", c.Headers})
	}
	want := make(map[string]eventField, len(mapped))
	for _, m := range mapped {
		want[m.column] = m.field
	}
	b := binding{fields: make([]eventField, len(names))}
	found := make(map[string]bool, len(want))
	for i, n := range names {
		if f, ok := want[n]; ok {
			b.fields[i] = f
			found[n] = true
		}
	}
	var missing []string
	for _, m := range mapped {
		if !found[m.column] {
			missing = append(missing, fmt.Sprintf("%s (for %s)", m.column, m.name))
		}
	}
	if len(missing) > 0 {
		return binding{}, &missingColumns{table: table, missing: missing, columns: names}
	}
	return b, nil
}

// missingColumns reports the mapped columns a table lacks.
type missingColumns struct {
	table   string
	missing []string // each "column (for field)"
	columns []string // the table's, in table order
}

func (e *missingColumns) Error() string {
	return fmt.Sprintf("table %s has no column %s; its columns are %s: set the column mapping to match the table",
		e.table, strings.Join(e.missing, ", "), strings.Join(e.columns, ", "))
}
