// Package schema owns the shape of the outbox: the table's DDL (versioned SQL
// embedded in the binary), the publication that exposes it to logical
// replication, the mapping from table columns to an Event, and the helpers
// applications use to insert outbox rows inside their own transactions.
//
// Invariant: an Event carries exactly what one committed outbox row held, plus
// its Position, which orders events the way PostgreSQL committed them.
package schema
