package schema

import (
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strings"
)

//go:embed sql/*.sql
var sqlFiles embed.FS

// Migration is one versioned step of the outbox table's DDL.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// Migrations returns the DDL that creates the outbox table t with columns c,
// the relay's state table next to it (Table.StateTable) and the function
// outbox_emit in t's schema, oldest first. Every statement is idempotent
// (IF NOT EXISTS, CREATE OR REPLACE of the same definition), so running
// them against an existing outbox changes nothing.
func Migrations(t Table, c Columns) ([]Migration, error) {
	names, err := fs.Glob(sqlFiles, "sql/*.sql")
	if err != nil {
		return nil, fmt.Errorf("list embedded sql: %w", err)
	}
	sort.Strings(names)
	headers := c.Headers
	if headers == "" {
		headers = "headers"
	}
	r := strings.NewReplacer(
		"{{table}}", t.Quoted(),
		"{{schema}}", quoteIdent(t.Schema),
		"{{state_table}}", t.StateTable().Quoted(),
		"{{id}}", quoteIdent(c.ID),
		"{{aggregate_type}}", quoteIdent(c.AggregateType),
		"{{aggregate_id}}", quoteIdent(c.AggregateID),
		"{{event_type}}", quoteIdent(c.EventType),
		"{{payload}}", quoteIdent(c.Payload),
		"{{headers}}", quoteIdent(headers),
		"{{created_at}}", quoteIdent("created_at"),
	)
	var ms []Migration
	for _, n := range names {
		b, err := sqlFiles.ReadFile(n)
		if err != nil {
			return nil, fmt.Errorf("read embedded %s: %w", n, err)
		}
		base := strings.TrimSuffix(strings.TrimPrefix(n, "sql/"), ".sql")
		var v int
		if _, err := fmt.Sscanf(base, "%04d_", &v); err != nil {
			return nil, fmt.Errorf("embedded %s: name must start with a 4-digit version: %w", n, err)
		}
		ms = append(ms, Migration{Version: v, Name: base, SQL: r.Replace(string(b))})
	}
	return ms, nil
}

// CreatePublicationSQL returns the statement that publishes inserts into t
// under the publication name pub. Updates, deletes and truncates are not
// published: the relay reads inserts only. Whoever runs Migrations with
// their own tool runs this too, before the application writes a row:
// pgoutput looks the publication up as of each change it decodes, so rows
// written before it existed cannot be relayed.
func CreatePublicationSQL(pub string, t Table) string {
	return fmt.Sprintf("CREATE PUBLICATION %s FOR TABLE %s WITH (publish = 'insert')", quoteIdent(pub), t.Quoted())
}
