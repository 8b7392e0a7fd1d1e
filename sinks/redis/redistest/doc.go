// Package redistest runs a private Redis server for tests, as
// net/http/httptest runs an HTTP server, and reads back what a sink stored
// with a client of its own (go-redis used directly, none of the sink's
// code), so that tests of the redis sink, of the relay's command and of the
// built binary check the sink against an independent reader.
//
// Start runs the redis-server program as a child process, on a free port of
// 127.0.0.1, with its data in t.TempDir(), the append-only file on and
// synced before every reply (appendonly yes, appendfsync always) and no RDB
// snapshots; it returns once the server answers PING. A start takes about
// 30 ms on a 2-core machine (BenchmarkStart: 28 ms), so each test can have a
// server of its own. Stop, Kill and Start stop the server cleanly, kill it,
// and start it again on the same address with the same data.
//
// New starts the same server for a program (the demo, the benchmark) or a
// package's TestMain, in a new temporary directory, and returns an error
// instead of failing a test; Close kills the server and removes the
// directory, and PID gives the server's process ID, to measure its CPU
// time.
//
// The program is $OUTBOX_RELAY_REDIS_SERVER if set, else redis-server from
// PATH (Debian's redis-server package); under -short every Start skips its
// test, and without the program Start fails it: integration tests never
// skip silently.
//
// Invariant: a server never outlives the test that started it: the test's
// cleanup kills it, and on Linux the kernel kills it when the test binary
// dies in any way (Pdeathsig), so no redis-server is ever left behind. The
// same holds for a server from New and the process that called it. On
// Linux the server runs in a process group of its own, out of reach of a
// Ctrl-C meant for its parent.
package redistest
