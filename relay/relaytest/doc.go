// Package relaytest runs outbox-relay inside a test process, as
// net/http/httptest runs an HTTP server, so that an application's own tests
// can check the events it writes: write them in a transaction, commit, and
// assert the Kafka records that come out. No Docker, no relay binary and no
// Kafka broker are needed.
//
// Start prepares the outbox in the PostgreSQL database the test names (the
// table if missing, a publication and a replication slot of its own),
// starts an in-memory Kafka-protocol broker (franz-go's kfake) and runs the
// relay between them, the same parts the outbox-relay daemon wires:
//
//	func TestPlaceOrder(t *testing.T) {
//		dsn := pgtest.NewDatabase(t) // or your own test database
//		r := relaytest.Start(t, dsn, relaytest.Config{})
//
//		// ... the code under test commits an order and its event ...
//
//		rec := r.Expect(t, 1)[0]
//		// rec.Topic == "outbox.order", rec.Key == the order ID, rec.Headers["event_type"] ...
//	}
//
// The database needs wal_level=logical and a role that may create
// replication slots. relaytest starts no PostgreSQL: bring a DSN, or use
// github.com/outbox-relay/outbox-relay/cdc/pgtest, which runs a private
// server for a package's tests (pgtest.Main in TestMain, pgtest.NewDatabase
// per test). To run the relay's container image against containers
// instead, see the container subpackage.
//
// Invariant: when the test that called Start ends, every goroutine Start
// began has returned, the broker is closed, and the replication slot and
// publication Start made are dropped; the outbox table and its rows stay.
package relaytest
