// Package sinktest is a conformance suite for relay sinks, as testing/slogtest
// is for slog handlers: Run checks, against a real broker, what the relay
// relies on from every Sink, and what its users rely on from every broker's
// messages.
//
// A sink's own tests start its broker, then call Run with a Broker that
// builds sinks for it, reads back what it stored with an independent client
// of that broker, and stops and starts it. Every check runs; none is
// skipped.
package sinktest

import (
	"context"
	"testing"

	"github.com/outbox-relay/outbox-relay/relay"
	"github.com/outbox-relay/outbox-relay/sinks/delivery"
)

// Sink is what Run needs of a sink: a relay.Sink that can set events aside
// and halt, and check its broker.
type Sink interface {
	relay.Sink
	relay.DeadLetterer
	relay.Halter
	Ping(ctx context.Context) error
}

// Message is one message as an independent client of the broker read it.
type Message struct {
	// Destination is where the broker stored the message: the topic,
	// subject, stream key or queue, as the sink's destination template
	// rendered it.
	Destination string
	// Key is the event's aggregate ID as the message carries it: the
	// Kafka key, or the aggregate_id header or field.
	Key string
	// Headers are the message's headers: the relay's own (id, event_type,
	// aggregate_type, position, and so on) first, in the sink's order when
	// the broker keeps one, then the event's own. Key's header, if the
	// broker carries the key in one, is left out.
	Headers []delivery.Header
	// Payload is the message's body: the event's payload.
	Payload []byte
}

// Header returns the value of m's first header named key, and whether
// there is one.
func (m Message) Header(key string) (string, bool) {
	for _, h := range m.Headers {
		if h.Key == key {
			return string(h.Value), true
		}
	}
	return "", false
}

// Broker is a running broker under test.
type Broker struct {
	// NewSink returns a new sink publishing to the broker, which the test
	// closes when it ends. Its destination template must put every event
	// of one aggregate type in one Destination, and its dead letters must
	// go where ReadDeadLetters reads.
	NewSink func(t *testing.T) Sink
	// Read returns every event message the broker holds so far (dead
	// letters excluded), in the broker's order within each Destination.
	Read func(t *testing.T) []Message
	// ReadDeadLetters returns every dead letter the broker holds so far,
	// in order.
	ReadDeadLetters func(t *testing.T) []Message
	// Stop stops the broker, keeping what it stored; Start starts it again
	// at the same address. Run calls them in this order only.
	Stop, Start func(t *testing.T)
}
