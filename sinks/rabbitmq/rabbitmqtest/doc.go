// Package rabbitmqtest runs a private RabbitMQ node for tests, as cdc/pgtest
// runs PostgreSQL, and reads what it holds with a client of its own
// (amqp091 used directly, none of the sink's code).
//
// Start starts a node of the installed rabbitmq-server (Debian's 3.10, from
// /usr/lib/rabbitmq/bin, or $OUTBOX_RELAY_RABBITMQ_BINDIR) for one test, on
// free ports of 127.0.0.1, with its node name, Erlang cookie, database and
// logs under t.TempDir(); it is killed when the test ends. New does the same
// for TestMain or a program (the demo, the benchmark), which then calls
// Close; PID gives the node's Erlang VM, to measure its CPU time.
// Measured on a 2-core machine shared with other tests: a first start takes 4.5 to 9 seconds (the TLS listener
// and a plugin add little), a Start after Stop or Kill 3.5 to 11, a clean
// Stop 1 to 2.5, and Ctl (rabbitmqctl) about a second, the longer times
// under load; so a package shares one node across its tests where it can. The node's configuration is the
// classic Erlang-term file, which spares a second of translation per start.
//
// A test declares a queue with Bind before it publishes, then reads it with
// Read (or ReadDeadLetters for the dead-letter queue): each returns every
// message read from the queue so far, as sinktest.Message, so that the
// conformance suite can poll it.
//
// Invariant: no process of a node outlives the test process. The node's
// Erlang VM and its own epmd (on a port of its own, so that parallel test
// packages share none) are children of the test process that get SIGKILL
// when it dies (Pdeathsig), however it dies; the VM's helpers
// (erl_child_setup, inet_gethost) exit with the VM.
package rabbitmqtest
