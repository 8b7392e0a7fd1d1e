// Package rabbitmq publishes outbox events to RabbitMQ (AMQP 0-9-1, with
// amqp091-go); besides its test support (rabbitmqtest), it is the only
// package of the relay that imports amqp091.
// A Sink is a delivery.Sink whose Broker turns each schema.Event into a
// persistent message to an exchange named by a template (default "outbox",
// a durable topic exchange) with a routing key from another (default
// "{aggregate_type}.{event_type}"; "{aggregate_id}" is allowed), and
// publishes it.
//
// Invariant: done reports success for an event only once the server
// confirmed its message (basic.ack on a channel in confirm mode) without
// returning it: the message then sits, persistent, in every queue its
// exchange routed it to, and at most one message per aggregate is
// unconfirmed at a time (delivery's invariant), so each aggregate's
// messages enter every queue in Publish order, across reconnections and
// retries.
//
// # Messages
//
// Each message has delivery mode 2 (persistent), message_id the event's
// ID, type its event type, app_id "outbox-relay", content_type
// "application/json", the payload as body, and a header table holding the
// relay's own headers (id, event_type, aggregate_type, position, and for a
// replayed event replayed and replay_started; see delivery.AppendHeaders),
// aggregate_id, and the event's own headers, all as strings (an AMQP table
// keeps no order, and of two event headers with one name the last wins).
// The metrics name a destination "exchange/routing key" with "*" for the
// aggregate ID.
//
// # Durability
//
// A confirmation means durable only where the message is: consumers must
// bind durable queues (classic queues are durable on one node; quorum
// queues, x-queue-type=quorum, are replicated to a majority of the
// cluster before the server confirms, which is what survives the loss of
// a node). A message routed only to transient queues is confirmed and
// lost with them. Declarations reach the disk a moment after they are
// made: a RabbitMQ 3.10 node killed a second or two after a binding was
// declared came back without it (seen in TestRestart), and events then
// come back unroutable; check the bindings after a crash.
//
// # What is poison, what is held
//
// Every publish is mandatory: an event that no bound queue matches comes
// back (basic.return, before its basic.ack) and is sent again until it has
// come back for Config.UnroutableGrace (30s by default), then is poison
// with delivery.ReasonUnroutable, so the relay dead-letters it or halts
// instead of confirming an event nobody received. The grace covers queues
// missing for a moment only: consumers that declare and bind their queues
// as they start, just after the relay; a queue deleted and declared again.
// Consumers must bind their queues before events flow. An event RabbitMQ
// could never take is poison at once: a name it refuses
// (ReasonDestination), headers it cannot carry, including the CC and BCC
// headers it reserves (ReasonHeaders), a message over
// Config.MaxMessageBytes (ReasonSize).
//
// Everything else is an outage, and the message is sent again with backoff
// until it goes through: a refused or lost connection, a server that
// restarts, a nack, a channel the server closed (404, 406, 403), an
// exchange that does not exist (checked with a passive declare before the
// first publish to it on a connection; the Sink logs an error saying to
// run `outbox-relay setup --sink=rabbitmq`), and a dead-letter queue that
// does not exist (its dead letter comes back unroutable).
//
// # Channels and connections
//
// One connection carries every Send, each on a channel of its own in
// confirm mode (idle channels are kept for the next Send): a Send's
// returns and confirmations are then its own alone, so a return is matched
// to its message by exchange, routing key and message ID without being
// mistaken for another Send's, and a channel the server closes fails only
// that Send's messages. A Send finds a lost connection and dials again,
// reopening channels in confirm mode with their notifications. When its
// context ends, Send closes the socket, so that it returns even while the
// server blocks publishers or does not answer. The Sink logs when the
// server blocks publishers (a memory or disk alarm: events are held) and
// when it lets them go on. Dead letters go through the default exchange to
// Config.DeadLetterQueue.
//
// # Keeping each aggregate's order across consumers
//
// RabbitMQ keeps a queue's order, but competing consumers on one queue
// process messages in parallel and can reorder an aggregate's events. Two
// ways keep it:
//
//   - One queue with a single active consumer (argument
//     x-single-active-consumer=true): any number of consumers attach, one
//     receives everything, and another takes over, from the first message
//     not acknowledged, when it goes away. Simple; throughput is one
//     consumer's.
//   - A consistent-hash exchange (plugin rabbitmq_consistent_hash_exchange,
//     enabled with rabbitmq-plugins enable): set Config.ExchangeType to
//     x-consistent-hash, and Setup declares the exchange with hash-header
//     aggregate_id, so that every event of an aggregate goes to the same
//     one of N queues, each bound with its weight as binding key ("1") and
//     each with a single active consumer. Throughput grows with N; moving
//     to another N moves aggregates between queues, so drain the queues
//     first.
//
// # Setup
//
// Sink.Setup declares the exchange (when its template has no placeholder)
// and the dead-letter queue, both durable, and never changes what exists;
// it binds no queue: consumers own their queues and bindings.
package rabbitmq
