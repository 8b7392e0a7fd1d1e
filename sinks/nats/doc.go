// Package nats publishes outbox events to NATS JetStream with nats.go; it is
// the only package of the relay binary that imports the NATS client
// (natstest, for tests, embeds the server). A Sink turns each schema.Event
// into a message on a subject named by a template, with the event's
// identity, position and aggregate ID in headers, and builds on package
// delivery for ordering, retries, dead letters and halting.
//
// Invariant: done reports success for an event only once a stream
// acknowledged storing its message (a PubAck), and the messages of one
// aggregate are stored in Publish order: delivery sends an aggregate's next
// message only after the stream acknowledged the one before. A message is
// sent again, with the same Nats-Msg-Id, until it is acknowledged, so a
// message stored whose acknowledgement was lost is dropped as a duplicate
// within the stream's duplicate window.
//
// # Subjects
//
// The default template, "outbox.{aggregate_type}.{aggregate_id}", gives
// every aggregate its own subject. Consumers then pick one aggregate
// (outbox.order.42), one type (outbox.order.*) or everything (outbox.>)
// with subject wildcards; JetStream keeps each subject's messages in order,
// and can limit, purge and compact per subject (max_msgs_per_subject,
// rollups). The stream Setup creates captures "outbox.>".
//
// A dot in a field the template uses splits it into several tokens: the
// aggregate "a.b" of type order is published to outbox.order.a.b, which
// outbox.> captures but outbox.order.* does not match, and which is also
// the subject of aggregate "b" of type "order.a". A field that makes an
// empty token (a dot at either end, two in a row, an empty value) or holds
// white space, a control character, * or > makes a subject NATS refuses:
// the event fails with a *delivery.PermanentError of
// delivery.ReasonDestination, and goes to the relay's poison-row policy.
//
// # Headers
//
// Each message carries delivery's headers (id, event_type, aggregate_type,
// position, replayed and replay_started for a replayed event, then the
// event's own), aggregate_id, and Nats-Msg-Id, the event's ID. NATS headers
// keep no order, and the client trims each value and turns its line breaks
// into spaces. An event header whose name NATS does not accept (printable
// ASCII without space or "(),/:;<=>?@[\]{}), or that begins with Nats-,
// which JetStream reads as an instruction (a rollup purges the stream),
// fails the event with delivery.ReasonHeaders.
//
// # Failures
//
// A message larger than Config.MaxMessageBytes fails in Map, and one larger
// than the server's max_payload or the stream's maximum message size when
// sent, both with delivery.ReasonSize. Every other failure is the servers'
// state, not the message's, and the message is sent again after a backoff
// until it is stored: no connection, a missing acknowledgement, a stream at
// its limits, a cluster electing a leader, and no stream capturing the
// subject, which the Sink logs as an error saying to run Setup.
package nats
