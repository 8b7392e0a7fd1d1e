package kafka

import (
	"bytes"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outbox-relay/outbox-relay/schema"
	"github.com/outbox-relay/outbox-relay/sinks/delivery"
)

// Names of the headers every record carries, in this order, before the
// event's own headers. Event headers with these names are dropped, so a
// consumer can trust them.
const (
	// HeaderID holds the event's ID.
	HeaderID = delivery.HeaderID
	// HeaderEventType holds the event's type.
	HeaderEventType = delivery.HeaderEventType
	// HeaderAggregateType holds the event's aggregate type.
	HeaderAggregateType = delivery.HeaderAggregateType
	// HeaderPosition holds the event's schema.Position as 24 lower-case
	// hex digits (schema.Position.AppendText). Positions compare byte by
	// byte in commit order, and a replayed event carries the same one, so
	// a consumer can drop replays by keeping the greatest it processed.
	HeaderPosition = delivery.HeaderPosition
)

// Names of the headers a replayed event's record carries after the four
// above (see schema.Event.Replayed): HeaderReplayed is "true" and
// HeaderReplayStarted the replay's start time in RFC 3339 with nanoseconds,
// UTC. A replayed record's position is 24 zeros: it sorts before every
// streamed one, so it never moves a consumer's greatest position, and
// consumers deduplicate it by HeaderID.
const (
	HeaderReplayed      = delivery.HeaderReplayed
	HeaderReplayStarted = delivery.HeaderReplayStarted
)

const reservedHeaders = 4

func reservedHeader(key string) bool {
	switch key {
	case HeaderID, HeaderEventType, HeaderAggregateType, HeaderPosition, HeaderReplayed, HeaderReplayStarted:
		return true
	}
	return false
}

// replayedValue is HeaderReplayed's value.
var replayedValue = []byte("true")

// mapper turns events into records. It holds no client, so tests and
// benchmarks use it alone. It is safe for concurrent use.
type mapper struct {
	topics   *topicCache
	maxBytes int
}

// record maps ev to the record to produce, and returns its topic. It fails
// with a *RecordError when the event cannot become a legal record; see the
// Reason constants. The value is ev.Payload itself, not a copy (nil makes a
// null value, a tombstone on compacted topics), and header values taken
// from ev.Headers alias it unless they had escapes; the key, the first four
// header values and a replay's start time share one new buffer. The
// timestamp is left zero for Sink.Publish to set to the time it publishes,
// so retention counts from publishing, not from the commit, and a replayed
// backlog is not expired at once.
//
// Headers are HeaderID, HeaderEventType, HeaderAggregateType and
// HeaderPosition, for a replayed event HeaderReplayed and
// HeaderReplayStarted, then each member of the JSON object ev.Headers in the
// order written (names and values alias ev.Headers unless they had escapes,
// so ev.Headers must not change while the record lives): a string's value
// is its unescaped text, null's is empty,
// and any other value's is its JSON text. Members named like the relay's own
// headers are dropped. Nil, empty, or JSON null ev.Headers add no headers.
func (m *mapper) record(ev *schema.Event) (*kgo.Record, *topic, error) {
	r := new(kgo.Record)
	var buf []byte
	t, err := m.fill(r, &buf, ev)
	if err != nil {
		return nil, nil, err
	}
	return r, t, nil
}

// fill is record writing into r, reusing r's header slice, and into *buf,
// reusing it when it is large enough or else replacing it: r and *buf then
// belong to the record until it is done.
func (m *mapper) fill(r *kgo.Record, bufp *[]byte, ev *schema.Event) (*topic, error) {
	if ev.Malformed != nil {
		return nil, &RecordError{Reason: ReasonContent, Err: fmt.Errorf(
			"event %q, a message with prefix %q at position %s: %w; emit the JSON object the README describes (schema.Emit, outbox_emit)", ev.ID, ev.Prefix, ev.Position, ev.Malformed)}
	}
	if ev.AggregateID == "" {
		return nil, &RecordError{Reason: ReasonAggregateID, Err: fmt.Errorf("event %s: %w", ev.ID, schema.ErrNoAggregateID)}
	}
	t, err := m.topics.lookup(ev)
	if err != nil {
		return nil, err
	}

	// One buffer holds the key, the first four header values and a
	// replay's start time; it is large enough up front, so that the parts
	// taken from it stay in it.
	need := len(ev.AggregateID) + len(ev.ID) + len(ev.EventType) + len(ev.AggregateType) + schema.PositionLen
	replayed := !ev.Replayed.IsZero()
	if replayed {
		need += len(time.RFC3339Nano) + 6 // a year of five digits and a zone offset at worst
	}
	if cap(*bufp) < need {
		*bufp = make([]byte, 0, need)
	}
	buf := (*bufp)[:0]
	var key, id, eventType, aggregateType, position []byte
	buf, key = appendPart(buf, ev.AggregateID)
	buf, id = appendPart(buf, ev.ID)
	buf, eventType = appendPart(buf, ev.EventType)
	buf, aggregateType = appendPart(buf, ev.AggregateType)
	position = ev.Position.AppendText(buf)[len(buf):]
	var started []byte
	if replayed {
		buf = buf[:len(buf)+len(position)]
		position = position[:len(position):len(position)]
		started = ev.Replayed.UTC().AppendFormat(buf, time.RFC3339Nano)[len(buf):]
	}

	n := reservedHeaders
	if replayed {
		n += 2
	}
	if len(ev.Headers) > 2 {
		n += bytes.Count(ev.Headers, []byte{':'}) // at least one per member
	}
	headers := r.Headers[:0]
	if cap(headers) < n {
		headers = make([]kgo.RecordHeader, 0, n)
	}
	headers = append(headers,
		kgo.RecordHeader{Key: HeaderID, Value: id},
		kgo.RecordHeader{Key: HeaderEventType, Value: eventType},
		kgo.RecordHeader{Key: HeaderAggregateType, Value: aggregateType},
		kgo.RecordHeader{Key: HeaderPosition, Value: position})
	if replayed {
		headers = append(headers,
			kgo.RecordHeader{Key: HeaderReplayed, Value: replayedValue},
			kgo.RecordHeader{Key: HeaderReplayStarted, Value: started})
	}
	headers, err = appendJSONHeaders(headers, ev.Headers)
	if err != nil {
		return nil, &RecordError{Reason: ReasonHeaders, Err: fmt.Errorf(
			"event %s: %w; write headers as a JSON object such as {\"trace_id\": \"abc\"}, or NULL", ev.ID, err)}
	}

	*r = kgo.Record{Topic: t.name, Key: key, Value: ev.Payload, Headers: headers}
	if size := batchBytes(r); size > m.maxBytes {
		return nil, &RecordError{Reason: ReasonSize, Err: fmt.Errorf(
			"event %s: record of about %d bytes (payload %d) exceeds the %d-byte batch limit; shrink the payload, or raise the limit along with the topic's max.message.bytes",
			ev.ID, size, len(ev.Payload), m.maxBytes)}
	}
	return t, nil
}

// appendPart appends s to buf and also returns s's bytes within buf, capped
// so that appending to them cannot overwrite what follows.
func appendPart(buf []byte, s string) ([]byte, []byte) {
	start := len(buf)
	buf = append(buf, s...)
	return buf, buf[start:len(buf):len(buf)]
}

// appendJSONHeaders appends one header per member of the JSON object obj
// (delivery.EachJSONHeader), except those named like the relay's own.
func appendJSONHeaders(hs []kgo.RecordHeader, obj []byte) ([]kgo.RecordHeader, error) {
	err := delivery.EachJSONHeader(obj, func(key string, val []byte) {
		if !reservedHeader(key) {
			hs = append(hs, kgo.RecordHeader{Key: key, Value: val})
		}
	})
	return hs, err
}

// batchBytes overestimates the size of a record batch holding only r, by at
// most a few bytes per header, so that a record it accepts also fits
// franz-go's own check against the batch limit.
func batchBytes(r *kgo.Record) int {
	const (
		batchOverhead = 72 // 65 as franz-go counts it, and room for flexible versions
		varint        = 5  // the widest 32-bit varint
		recordFixed   = varint + 1 + 2*varint + 2*varint + varint
		// length, attributes, timestamp and offset deltas (timestamp
		// delta counted generously), key and value lengths, header count
	)
	n := batchOverhead + recordFixed + len(r.Key) + len(r.Value)
	for _, h := range r.Headers {
		n += 2*varint + len(h.Key) + len(h.Value)
	}
	return n
}
