// Package cdc reads the outbox table's committed inserts from PostgreSQL
// logical replication (the pgoutput plugin, protocol version 1) and owns the
// replication slot and publication they flow through.
//
// A Stream connects in replication mode, starts streaming from the slot's
// confirmed position, decodes Relation, Begin, Insert and Commit messages
// (every other message is read past), answers keepalives, and sends standby
// status updates carrying its Handler's flush position at a steady cadence.
//
// Invariant: the position a Stream confirms is only ever one its Handler
// reported as flushed; the slot never moves past an event the Handler has
// not acknowledged.
package cdc
