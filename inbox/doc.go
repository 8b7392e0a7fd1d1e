// Package inbox consumes the relay's Kafka records and applies each event
// once: "outbox → Kafka → inbox" is exactly-once in effect. It owns the
// inbox table, one row per (consumer, event) applied, and the Kafka offsets
// of its consumer group.
//
// Invariant: an event's effects and its inbox row commit in one PostgreSQL
// transaction, and a record's offset is committed to Kafka only after that
// transaction has committed, or after the record was skipped as a
// duplicate, or after its dead letter was acknowledged. So a crash at any
// point loses nothing (the record is read again) and applies nothing twice
// (the inbox row of an applied event makes its redelivery a duplicate).
//
// # Use
//
//	if err := inbox.Setup(ctx, pool, inbox.DefaultTable); err != nil { ... }
//	c, err := inbox.New(inbox.Config{
//		Brokers: []string{"kafka:9092"},
//		Group:   "billing",
//		Topics:  []string{"outbox.order"},
//		DB:      pool,
//	}, func(ctx context.Context, tx pgx.Tx, ev inbox.Event) error {
//		_, err := tx.Exec(ctx, "UPDATE balances SET cents = cents + $2 WHERE id = $1", ev.Key, amount(ev.Value))
//		return err
//	}, logger, registry)
//	if err != nil { ... }
//	return c.Run(ctx) // blocks until ctx ends
//
// # One record
//
// For each record the consumer computes the deduplication key
// (Config.DedupeKey; by default the "id" header), begins a transaction on
// Config.DB and runs
//
//	INSERT INTO <table> (consumer, event_id, topic, "partition", "offset", position)
//	VALUES (...) ON CONFLICT DO NOTHING
//
// If the row existed, the event was applied before (a redelivery, a relay
// replay, a second copy produced by the relay after a crash): the
// transaction is rolled back, the handler is not called, and
// outbox_inbox_duplicates_total counts it. Otherwise the handler runs in
// the same transaction, and on success the transaction commits; only then
// is the offset marked for commit. Offsets are committed to Kafka every
// Config.CommitInterval, when partitions are revoked and when Run returns;
// a record applied but not yet committed is read again after a crash and
// skipped as a duplicate.
//
// # Failures
//
// A handler error rolls the transaction back. An error marked Permanent
// dead-letters the record at once. Any other error (unmarked errors are
// retryable) is retried after an exponential backoff with jitter, from
// Config.BackoffInitial doubling up to Config.BackoffMax, until the record
// has failed Config.MaxAttempts times; then it is dead-lettered.
//
// Database outages are not the record's fault and never dead-letter it: an
// error of the consumer's own statements (BEGIN, the inbox INSERT, COMMIT),
// and a handler or COMMIT error that is a lost or refused connection
// (SQLSTATE class 08, 57P01-57P03, 53300, a network error or timeout, an
// error pgconn deems safe to retry, or a connection found closed), are
// retried with the same backoff without limit and without counting toward
// MaxAttempts, logged at Warn. The check comes before the Permanent mark,
// so an outage never empties a topic into the dead-letter topic. A
// deadline of the handler's own making (context.DeadlineExceeded) and any
// other SQL error (a constraint violation, a serialization failure) count
// as the record's failures. A transaction whose COMMIT
// outcome is unknown is simply tried again: if it had committed, the inbox
// row makes the retry a duplicate. A missing inbox table (SQLSTATE 42P01)
// is fatal: Run returns an error telling to run Setup.
//
// A dead letter goes to Config.DeadLetterTopic with the original key, value
// and headers plus the HeaderDLQ* headers (topic, partition, offset,
// consumer, group, last error, attempts, first and last attempt time, record
// time). Its inbox row is not written, so replaying the dead letter to the
// original topic later (the dlq command of outbox-relay) applies its effect
// once. The produce must be acknowledged before the record counts as
// finished; while the dead-letter topic cannot be written, the produce is
// retried and the record holds back its partition (or key) like a failing
// record.
// Dead letters are at least once: a consumer stopped between the
// acknowledgement and the offset commit dead-letters the record again
// after a restart, and a replay of both copies is applied once.
//
// A handler that panics crashes the process, as anywhere in Go: its
// transaction never commits and its offset is not committed, so the
// record is read again after the restart.
//
// # Order
//
// Under OrderByPartition (the zero value) a partition's records are applied
// one at a time in offset order; a failing record holds back the rest of its
// partition. Under OrderByKey records of different keys run concurrently
// (up to Config.KeyConcurrency per partition) and a failing record holds
// back only its key; one key is never reordered. In both modes the
// committed offset of a partition is the lowest offset not yet finished, so
// offsets never pass an unfinished record. The relay puts all events of one
// aggregate on one partition with the aggregate ID as key, so either mode
// keeps each aggregate's events in commit order.
//
// # Rebalances and stopping
//
// The client uses kgo.BlockRebalanceOnPoll: a rebalance callback never runs
// while fetched records are being handed to the partitions' workers, so no
// record of a revoked partition is handed out after its revocation. When
// partitions are revoked (or Run's ctx ends), their workers start no new
// record and no new attempt, running handler calls get
// Config.ShutdownTimeout to finish before their contexts are canceled, and
// the finished offsets are committed synchronously before the callback
// returns. When partitions are lost (the member was fenced) the calls are
// canceled at once and nothing is committed. Whatever was not committed is
// read again by the partition's next owner, and the inbox table skips what
// was applied. A rebalance therefore loses nothing and applies nothing
// twice.
//
// Run stops in this order when ctx ends: it stops polling, halts every
// partition (no new record, attempt or backoff wait), waits up to
// Config.ShutdownTimeout for running handler calls and then cancels their
// contexts, commits the finished offsets synchronously, and closes the
// client, which leaves the group.
//
// # Retention
//
// The inbox table grows by one row per event. Prune, or Config.Retention
// from Run, deletes a consumer's rows processed longer ago than a window,
// in small batches. The window must exceed the longest time after which a
// duplicate of an event can still arrive: redelivery after a consumer crash
// (Config.CommitInterval plus restart time), the relay's redelivery after
// a crash, and above all a replay of outbox rows (outbox-relay replay, slot
// recovery), which republishes events as old as the replay goes back, and
// a replay of dead letters. It must also exceed the topic's own retention
// whenever the group's committed offsets may go missing (Kafka expires
// them, offsets.retention.minutes, once the group has been empty that
// long; or the Group changes under the same Name): the consumer then reads
// the topic from its start. A row pruned too early lets such a duplicate be
// applied twice. Days, not minutes.
//
// # Metrics
//
// Labelled by consumer name: outbox_inbox_processed_total,
// outbox_inbox_duplicates_total, outbox_inbox_retries_total,
// outbox_inbox_dead_letters_total, outbox_inbox_handler_duration_seconds
// and outbox_inbox_lag{topic,partition} (high watermark minus the next
// offset to commit, per owned partition).
package inbox
