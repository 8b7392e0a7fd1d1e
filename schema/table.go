package schema

import (
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Table is a schema-qualified table name.
type Table struct {
	Schema string
	Name   string
}

// DefaultTable is the outbox table setup creates when none is named.
var DefaultTable = Table{Schema: "public", Name: "outbox"}

// ParseTable reads "schema.name" or "name" (schema public). Names are taken
// as written, without case folding or quotes.
func ParseTable(s string) (Table, error) {
	parts := strings.Split(s, ".")
	switch {
	case len(parts) == 1 && parts[0] != "":
		return Table{Schema: "public", Name: parts[0]}, nil
	case len(parts) == 2 && parts[0] != "" && parts[1] != "":
		return Table{Schema: parts[0], Name: parts[1]}, nil
	}
	return Table{}, fmt.Errorf("table %q: want schema.name or name", s)
}

// String returns "schema.name".
func (t Table) String() string { return t.Schema + "." + t.Name }

// Quoted returns the name quoted for SQL.
func (t Table) Quoted() string { return pgx.Identifier{t.Schema, t.Name}.Sanitize() }

// stateTableName is the name of the relay's state table, in the outbox
// table's schema.
const stateTableName = "outbox_relay_state"

// StateTable returns the relay's state table next to t: same schema, name
// outbox_relay_state. Migrations creates it (migration 0003); the relay's
// role needs SELECT, INSERT and UPDATE on it.
func (t Table) StateTable() Table { return Table{Schema: t.Schema, Name: stateTableName} }

func quoteIdent(s string) string { return pgx.Identifier{s}.Sanitize() }
