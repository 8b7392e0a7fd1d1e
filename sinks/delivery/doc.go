// Package delivery is what the sinks of brokers other than Kafka share: it
// turns a Broker, which only knows how to map an event to a message and send
// a batch of messages, into a relay.Sink that keeps each aggregate's order,
// retries what failed for a passing reason, sets aside what can never be
// delivered, halts, flushes and counts.
//
// Invariant: at most one message per key (the event's aggregate ID) is in
// flight at a time, and a key's next message is sent only once the broker has
// acknowledged it or refused it for good. So whatever the broker does with a
// batch (store part of it, acknowledge out of order, lose the connection in
// the middle), each key's messages are stored in Publish order, and done is
// called once per event, per key in Publish order, and with nil only once
// the broker acknowledged the message as durable.
//
// Errors fall in two classes, told apart by Broker.Classify: permanent ones
// (the message can never be stored: too large, refused by policy,
// unroutable) fail the event with a *PermanentError, which the relay routes
// to its poison-row policy; every other error is an outage, and the message
// is sent again with exponential backoff until the broker takes it, without
// limit. A message a broker stored but did not acknowledge (a lost reply) is
// sent again: delivery is at least once, and consumers deduplicate by the id
// header or the position header.
//
// A Sink owns one goroutine per sender (Config.Senders), started by New and
// stopped by Close, so that a shutdown can drain in-flight events after the
// relay's context ended.
//
// Every sink, Kafka's too, also takes from here what it shares of naming
// messages: the header names, and Template, which names each event's
// topic, subject, stream, exchange or routing key from its fields, and its
// destination in metrics with the aggregate ID as "*"; and TLSFiles, the
// certificate files and checks of a TLS connection.
package delivery
