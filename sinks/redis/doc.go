// Package redis publishes outbox events to Redis streams with go-redis; it is
// the only package of the relay that imports go-redis, and redistest the only
// other one. A Sink turns each schema.Event into one stream entry, added with
// XADD to a stream whose key a template names (outbox.{aggregate_type} by
// default), and builds on sinks/delivery for ordering, retries, dead letters,
// halting and metrics.
//
// Invariant: done reports success for an event only once Redis returned the
// ID of its entry, and each aggregate's entries are added to its stream in
// Publish order: delivery keeps one entry per aggregate in flight, and sends
// the next only after Redis acknowledged or refused the last. An entry whose
// reply was lost is added again: delivery is at least once, and consumers
// deduplicate by the id field or the position field.
//
// # Entries
//
// An event's entry is
//
//	XADD <stream> [MAXLEN ~ <Config.MaxLen>] * id <id> event_type <type>
//	    aggregate_type <type> aggregate_id <id> position <24 hex digits>
//	    [replayed true replay_started <RFC 3339 time>]
//	    [headers <the row's headers, JSON text>] payload <payload>
//
// with the fields in this order (the names are delivery's Header constants,
// FieldHeaders and FieldPayload). The entry ID is Redis's, so entries of a
// stream are in the order Redis added them. headers is the row's headers
// column as PostgreSQL printed it; it must be a JSON object, or the event is
// poison (delivery.ReasonHeaders), and it is absent when the row has none.
// Dead letters go to Config.DeadLetterStream, one at a time in the order
// they were set aside, with the fields of delivery.DeadLetterHeaders
// (aggregate_id after aggregate_type, absent when the event has none), then
// payload; when the event was too large (ReasonSize), or its dead letter
// would be, dlq_payload_omitted is "true" and there is no payload.
//
// An entry larger than Config.MaxMessageBytes is poison
// (delivery.ReasonSize), refused before it is sent; so is an entry to a key
// that holds another type (WRONGTYPE, delivery.ReasonRejected), which fails
// the same way until someone deletes or renames the key. Every other error
// is retried with backoff, forever: a lost connection, a timeout, and the
// replies of a server that will take the entry once it recovers or is
// reconfigured (LOADING, BUSY, OOM, READONLY, MASTERDOWN, TRYAGAIN,
// CLUSTERDOWN, NOREPLICAS, MISCONF, NOAUTH, WRONGPASS, NOPERM, MOVED, ASK,
// ERR); the sink's warnings say what to do about each.
//
// MaxLen trims each event stream as entries are added, to about MaxLen
// entries (whole macro nodes, so a few more): Redis drops the oldest entries
// whether or not every consumer group has read them, so a consumer that
// falls further behind than MaxLen misses events. The dead-letter stream is
// never trimmed.
//
// # Durability
//
// Redis acknowledges an XADD once the entry is in memory and, with the
// append-only file on, written to it; what reaches the disk before the
// acknowledgement depends on the server's settings, which Setup reads and
// logs, with a warning when an acknowledged entry could be lost:
//
//   - appendonly yes, appendfsync always: Redis syncs the file (one fsync
//     per event loop, so per pipeline, not per entry) before it replies. An
//     acknowledged entry survives a crash of Redis and of its machine. This
//     is the setting to use.
//   - appendonly yes, appendfsync everysec (Redis's default when the file is
//     on): Redis writes the file before it replies but syncs it once a
//     second in the background. A crash of Redis alone loses nothing it
//     wrote; a crash of the machine (power, kernel) loses up to the last
//     second of entries, two when the disk is slow, when Redis also
//     postpones the writes, so that a crash of Redis alone can then lose
//     them too.
//   - appendonly yes, appendfsync no: the operating system syncs when it
//     pleases, about every 30 seconds on Linux; a machine crash loses that.
//   - appendonly no (RDB snapshots only): a crash of Redis or of its machine
//     loses every entry since the last snapshot; with save "" too, any
//     restart loses everything.
//
// Replication is asynchronous: an entry the primary acknowledged can be lost
// when a replica that did not get it is promoted. WAIT <replicas> <timeout>
// after the writes would block until that many replicas have them (in
// memory, not necessarily on disk), narrowing that window; the sink does not
// issue WAIT. min-replicas-to-write on the primary makes it refuse writes
// (NOREPLICAS, retried) while too few replicas are connected.
//
// # Servers
//
// A standalone server, or the primary of a replicated one (at a fixed
// address, or behind a proxy that follows failovers), from Redis 5 (XADD).
// Redis Cluster is not supported: stream keys of other slots would be
// refused with MOVED, so Setup fails on a server in cluster mode, and an
// XADD refused with MOVED or ASK is retried with an error saying so. An ACL
// user needs +xadd and +ping on the stream keys and the dead-letter stream
// (for example ~outbox.* ~outbox-relay-dlq), +select when the URL names a
// database other than 0, and +config|get to let the sink read the
// persistence settings (optional).
//
// go-redis logs some events of its own (a failed dial) to standard error;
// ClientLogger sends them to a slog.Logger instead.
package redis
