// Package pgtest runs a private PostgreSQL server for tests, as
// net/http/httptest runs an HTTP server. Start creates a throwaway cluster in
// a temporary directory, listening on a free port of 127.0.0.1 and set up for
// logical replication; Stop removes every trace of it.
//
// A package whose tests need PostgreSQL runs them all against one cluster:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
//
//	func TestStream(t *testing.T) {
//		dsn := pgtest.NewDatabase(t) // an empty database, dropped when t ends
//		...
//	}
//
// When OUTBOX_RELAY_TEST_PG_DSN names a server, Main uses it instead of
// starting one. That server needs wal_level=logical and a role that may create
// databases and replication slots. Without it, -short skips every test that
// calls Server or NewDatabase, and a cluster that cannot start fails the whole
// package: integration tests never skip silently.
//
// The server binaries come from OUTBOX_RELAY_PG_BINDIR if it is set, else from
// the newest /usr/lib/postgresql/*/bin, else from pg_config --bindir, else from
// PATH. initdb and postgres refuse to run as root; when the tests run as root,
// pgtest runs them as the postgres user.
//
// Invariant: a local cluster never outlives the process that started it.
// Besides Stop, a watchdog process stops the server and removes its directory
// as soon as the test binary exits, however it exits: a panic, a -timeout,
// SIGINT, SIGTERM or SIGKILL.
package pgtest
