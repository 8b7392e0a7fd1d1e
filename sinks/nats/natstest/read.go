package natstest

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outbox-relay/outbox-relay/sinks/delivery"
	"github.com/outbox-relay/outbox-relay/sinks/sinktest"
)

// readTimeout bounds a read of a whole stream.
const readTimeout = 30 * time.Second

// fetchBatch is how many messages one fetch asks for.
const fetchBatch = 1000

// eventOrder is the order of the relay's own headers on an event, which
// NATS does not keep: delivery.AppendHeaders's.
var eventOrder = []string{
	delivery.HeaderID, delivery.HeaderEventType, delivery.HeaderAggregateType, delivery.HeaderPosition,
	delivery.HeaderReplayed, delivery.HeaderReplayStarted,
}

// letterOrder is the order of the headers of a dead letter:
// delivery.DeadLetterHeaders's.
var letterOrder = []string{
	delivery.HeaderID, delivery.HeaderEventType, delivery.HeaderAggregateType, delivery.HeaderPosition,
	delivery.HeaderDLQReason, delivery.HeaderDLQError, delivery.HeaderDLQAttempts, delivery.HeaderDLQSourceLSN,
	delivery.HeaderDLQTime, delivery.HeaderDLQTable, delivery.HeaderDLQTopic, delivery.HeaderDLQMessagePrefix,
	delivery.HeaderDLQHeaders, delivery.HeaderDLQPayloadOmitted,
}

// Read returns every message stream holds, in stream order (so in order
// within each subject), as the relay's events: Destination is the subject,
// Key the aggregate_id header, and Headers the relay's own in
// delivery.AppendHeaders's order, then the others, which NATS keeps in no
// order, by name. Nats-Msg-Id, which holds the id header's value, and
// aggregate_id are left out. The sink's default stream is "OUTBOX".
func (s *Server) Read(t testing.TB, stream string) []sinktest.Message {
	t.Helper()
	return s.read(t, stream, eventOrder)
}

// ReadDeadLetters returns every message stream holds as Read does, with
// the headers of dead letters first in delivery.DeadLetterHeaders's order.
// The sink's default dead-letter stream is "OUTBOX_RELAY_DLQ".
func (s *Server) ReadDeadLetters(t testing.TB, stream string) []sinktest.Message {
	t.Helper()
	return s.read(t, stream, letterOrder)
}

// read reads stream with an ordered consumer, from its first message to
// the last it held when read began.
func (s *Server) read(t testing.TB, stream string, order []string) []sinktest.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	// A connection of its own, closed at once: callers poll Read.
	nc, err := s.dial()
	if err != nil {
		t.Fatalf("natstest: connect to %s: %v", s.URL, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("natstest: jetstream: %v", err)
	}
	st, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("natstest: stream %q: %v", stream, err)
	}
	state := st.CachedInfo().State
	if state.Msgs == 0 {
		return nil
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatalf("natstest: ordered consumer of stream %q: %v", stream, err)
	}
	var out []sinktest.Message
	for seq := uint64(0); seq < state.LastSeq; {
		batch, err := cons.FetchNoWait(fetchBatch)
		if err != nil {
			t.Fatalf("natstest: fetch from stream %q after sequence %d: %v", stream, seq, err)
		}
		n := 0
		for m := range batch.Messages() {
			meta, err := m.Metadata()
			if err != nil {
				t.Fatalf("natstest: metadata of a message of stream %q: %v", stream, err)
			}
			n++
			seq = meta.Sequence.Stream
			if seq > state.LastSeq {
				break // stored after the read began
			}
			out = append(out, convert(m, order))
		}
		if n == 0 && ctx.Err() != nil {
			t.Fatalf("natstest: read stream %q: no message after sequence %d of %d in %s (last error: %v)", stream, seq, state.LastSeq, readTimeout, batch.Error())
		}
	}
	return out
}

// convert returns m as a sinktest.Message, with the headers in order
// first.
func convert(m jetstream.Msg, order []string) sinktest.Message {
	h := m.Headers()
	msg := sinktest.Message{Destination: m.Subject(), Key: h.Get(delivery.HeaderAggregateID), Payload: m.Data()}
	rest := make([]string, 0, len(h))
	for k := range h {
		if !slices.Contains(order, k) && k != delivery.HeaderAggregateID && k != jetstream.MsgIDHeader {
			rest = append(rest, k)
		}
	}
	slices.Sort(rest)
	for _, k := range append(slices.Clone(order), rest...) {
		for _, v := range h.Values(k) {
			msg.Headers = append(msg.Headers, delivery.Header{Key: k, Value: []byte(v)})
		}
	}
	return msg
}
