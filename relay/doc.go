// Package relay moves outbox events from the replication stream to a Sink in
// commit order, bounds the work in flight, and computes the position that may
// be confirmed to PostgreSQL.
//
// Invariant: the flush position never passes an event the Sink has not
// acknowledged. It is the end LSN of the newest transaction whose events, and
// all earlier transactions' events, are acknowledged; acknowledgements may
// arrive out of order across partitions, the position may not.
//
// When nothing is in flight and no transaction is open, the position follows
// the server's WAL end reported in keepalives, so an idle outbox on a busy
// database does not hold WAL back.
//
// Shutdown order, driven by the stream's owner: stop reading the stream, call
// Drain (flush the sink and wait for every outstanding acknowledgement,
// bounded by a timeout), send Flushed as the final position, close the
// connection. Events still unacknowledged when the timeout ends are not
// confirmed, so PostgreSQL sends them again after a restart.
package relay
