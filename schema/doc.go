// Package schema is what applications import to use the outbox: the
// table's name and column names (Table, Columns), its DDL as versioned SQL
// embedded in the binary (Migrations, including the relay's state table
// next to the outbox table and the SQL function outbox_emit), the
// publication that exposes the table to logical replication, the helpers
// that write outbox rows (Insert) and logical decoding messages (Emit)
// inside the application's own transactions, with the W3C trace context
// (ContextWithTrace), and the Event and Position the relay hands to sinks
// and consumers read. What only the relay uses lives in its own packages.
//
// Invariant: an Event carries exactly what one committed outbox row (or one
// message Emit wrote) held, plus its Position, which orders events the way
// PostgreSQL committed them.
package schema
