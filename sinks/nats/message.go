package nats

import (
	"fmt"
	"strings"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outbox-relay/outbox-relay/schema"
	"github.com/outbox-relay/outbox-relay/sinks/delivery"
)

// headerFrame is the size of what frames a header block on the wire: the
// line "NATS/1.0\r\n" that begins it and the empty line that ends it.
const headerFrame = len("NATS/1.0\r\n") + len("\r\n")

// maxHeaderBytes is the largest header block JetStream stores; a larger one
// is refused for good (the server's JSStreamHeaderExceedsMaximumErr).
const maxHeaderBytes = 1<<16 - 1

// maxDeadLetterError bounds the error text of a dead letter whose headers
// would otherwise not fit.
const maxDeadLetterError = 1 << 10

// headerBytes returns the size of h's header block on the wire, where the
// client writes each value as "key: value\r\n" (trimming the value, which
// only makes it shorter).
func headerBytes(h natsgo.Header) int {
	n := headerFrame
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(": ") + len(v) + len("\r\n")
		}
	}
	return n
}

// checkHeaderName reports why the client would not send a header named k,
// or why the relay does not: JetStream reads the headers that begin with
// Nats- as instructions (a message ID, an expected sequence, a rollup that
// purges the stream), which an event must not give.
func checkHeaderName(k string) error {
	if k == "" {
		return fmt.Errorf("a header has an empty name")
	}
	for i := 0; i < len(k); i++ {
		if c := k[i]; c < '!' || c > '~' || strings.IndexByte(`"()/,:;<=>?@[\]{}`, c) >= 0 {
			return fmt.Errorf("header name %q holds %q, which NATS header names may not hold (they are printable ASCII without space or \"(),/:;<=>?@[\\]{})", k, c)
		}
	}
	if len(k) >= len("nats-") && strings.EqualFold(k[:len("nats-")], "nats-") {
		return fmt.Errorf("header name %q begins with Nats-, which JetStream reads as an instruction to the server", k)
	}
	return nil
}

// msgID returns the Nats-Msg-Id of ev's message: its ID, so that JetStream
// drops the relay's re-sends of a streamed event within the duplicate
// window. A replayed event's also names its replay, so that a replay is
// stored even if the event was published a moment before, while the
// replay's own re-sends are dropped.
func msgID(ev *schema.Event) string {
	if ev.ID == "" || ev.Replayed.IsZero() {
		return ev.ID
	}
	return ev.ID + "/replay/" + ev.Replayed.UTC().Format(time.RFC3339Nano)
}

// Map returns ev's message: on the subject the template gives it, with the
// relay's headers, the event's own, the aggregate ID and the event's ID as
// Nats-Msg-Id, and the event's payload as its data. The destination is the
// subject with the aggregate ID as "*". An event whose subject, headers or
// size NATS would refuse fails with a *delivery.PermanentError.
func (b *broker) Map(ev *schema.Event) (*natsgo.Msg, string, error) {
	subject, err := b.subject.subject(ev)
	if err != nil {
		return nil, "", err
	}
	hs, err := delivery.AppendHeaders(make([]delivery.Header, 0, 8), ev)
	if err != nil {
		return nil, "", err
	}
	h := make(natsgo.Header, len(hs)+2)
	for _, x := range hs {
		if err := checkHeaderName(x.Key); err != nil {
			return nil, "", &delivery.PermanentError{Reason: delivery.ReasonHeaders, Err: fmt.Errorf("event %s: %w; rename the header", ev.ID, err)}
		}
		h[x.Key] = append(h[x.Key], string(x.Value))
	}
	h.Set(delivery.HeaderAggregateID, ev.AggregateID)
	if id := msgID(ev); id != "" {
		h.Set(jetstream.MsgIDHeader, id)
	}
	if hb := headerBytes(h); hb > maxHeaderBytes || hb+len(ev.Payload) > b.maxBytes {
		return nil, "", &delivery.PermanentError{Reason: delivery.ReasonSize, Err: fmt.Errorf(
			"event %s: message of %d bytes (%d of headers) exceeds the limit of %d bytes, or %d of headers; make the event smaller, or raise the servers' max_payload and the sink's maximum message size",
			ev.ID, hb+len(ev.Payload), hb, b.maxBytes, maxHeaderBytes)}
	}
	return &natsgo.Msg{Subject: subject, Header: h, Data: ev.Payload}, b.subject.Label(ev), nil
}

// DeadLetter returns ev's dead letter: on the dead-letter subject, with the
// headers delivery.DeadLetterHeaders gives, the aggregate ID, and the
// event's ID as Nats-Msg-Id (the dead-letter stream drops a second dead
// letter of one event within its duplicate window), and ev's payload
// unless reason is delivery.ReasonSize or the message would exceed the
// maximum size, when HeaderDLQPayloadOmitted says so. Should the headers
// exceed the limits, the event's own headers are left out (the outbox row
// keeps them) and the error text is cut.
func (b *broker) DeadLetter(ev *schema.Event, reason string, cause error, attempts int) (*natsgo.Msg, string, error) {
	dest, _ := b.subject.subject(ev) // "" when the subject is the reason
	h := make(natsgo.Header, 16)
	for _, x := range delivery.DeadLetterHeaders(ev, reason, cause, attempts, dest) {
		h[x.Key] = append(h[x.Key], string(x.Value))
	}
	if ev.AggregateID != "" {
		h.Set(delivery.HeaderAggregateID, ev.AggregateID)
	}
	if ev.ID != "" {
		h.Set(jetstream.MsgIDHeader, ev.ID)
	}
	// Room for HeaderDLQPayloadOmitted, should it be needed.
	limit := min(maxHeaderBytes, b.maxBytes) - len(delivery.HeaderDLQPayloadOmitted+": true\r\n")
	if headerBytes(h) > limit {
		h.Del(delivery.HeaderDLQHeaders)
		if e := h.Get(delivery.HeaderDLQError); len(e) > maxDeadLetterError {
			h.Set(delivery.HeaderDLQError, strings.ToValidUTF8(e[:maxDeadLetterError], ""))
		}
	}
	hb := headerBytes(h)
	if hb > limit {
		return nil, "", fmt.Errorf("dead letter of %d bytes of headers exceeds the limit of %d; raise the sink's maximum message size", hb, limit)
	}
	data := ev.Payload
	if reason == delivery.ReasonSize || hb+len(data) > b.maxBytes {
		data = nil
		h.Set(delivery.HeaderDLQPayloadOmitted, "true")
	}
	return &natsgo.Msg{Subject: b.deadLetterSubject, Header: h, Data: data}, b.deadLetterSubject, nil
}
