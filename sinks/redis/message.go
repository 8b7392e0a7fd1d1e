package redis

import (
	"bytes"
	"fmt"
	"time"

	"github.com/outbox-relay/outbox-relay/schema"
	"github.com/outbox-relay/outbox-relay/sinks/delivery"
)

// Names of an entry's fields besides delivery's header names: every event
// entry holds delivery.HeaderID, delivery.HeaderEventType,
// delivery.HeaderAggregateType, delivery.HeaderAggregateID,
// delivery.HeaderPosition, for a replayed event delivery.HeaderReplayed and
// delivery.HeaderReplayStarted, then FieldHeaders and FieldPayload, in this
// order.
const (
	// FieldHeaders holds the row's headers column as JSON text, as
	// PostgreSQL printed it: a JSON object. It is absent when the row has
	// no headers (SQL NULL or JSON null). Members named like the fields
	// above are the row's own, not the relay's; consumers read the fields.
	FieldHeaders = "headers"
	// FieldPayload holds the event's payload, as PostgreSQL printed it
	// (JSON text for jsonb). It is the last field.
	FieldPayload = "payload"
)

// message is one XADD command: the whole command line, ready for the
// pipeline, and what errors name.
type message struct {
	id     string // the event's ID
	stream string
	args   []any
}

// mapper turns events into entries. It holds no client, so tests use it
// alone. It is safe for concurrent use.
type mapper struct {
	tmpl     delivery.Template
	dlq      string
	maxLen   int64
	maxBytes int
}

// newMapper returns the mapper for cfg, which must have its defaults and be
// valid.
func newMapper(cfg Config) (*mapper, error) {
	tmpl, err := parseTemplate(cfg.Stream)
	if err != nil {
		return nil, fmt.Errorf("redis: %w", err)
	}
	return &mapper{tmpl: tmpl, dlq: cfg.DeadLetterStream, maxLen: cfg.MaxLen, maxBytes: cfg.MaxMessageBytes}, nil
}

// entry is an XADD command line being built, and the bytes of its stream
// key, field names and values.
type entry struct {
	args []any
	size int
}

// newEntry starts the XADD of an entry to stream, trimmed to about maxLen
// entries when maxLen is positive, with room for fields fields.
func newEntry(stream string, maxLen int64, fields int) *entry {
	e := &entry{args: make([]any, 0, 6+2*fields), size: len(stream)}
	e.args = append(e.args, "xadd", stream)
	if maxLen > 0 {
		e.args = append(e.args, "maxlen", "~", maxLen)
	}
	e.args = append(e.args, "*")
	return e
}

// add appends a field; value is a string or a []byte.
func (e *entry) add(name string, value any) {
	e.args = append(e.args, name, value)
	e.size += len(name)
	switch v := value.(type) {
	case string:
		e.size += len(v)
	case []byte:
		e.size += len(v)
	}
}

// Map returns the XADD of ev and its destination for the metrics: the
// stream key with the aggregate ID, if the template uses it, as "*" (see
// delivery.Template.Label). ev's strings and byte slices are sent as they
// are, not copied. It fails with a *delivery.PermanentError when the
// headers are not a JSON object (ReasonHeaders), the stream key is empty or
// the dead-letter stream's (ReasonDestination), or the entry is larger than
// Config.MaxMessageBytes (ReasonSize).
func (m *mapper) Map(ev *schema.Event) (message, string, error) {
	if err := m.tmpl.Unfilled(ev, "stream"); err != nil {
		return message{}, "", &delivery.PermanentError{Reason: delivery.ReasonDestination, Err: err}
	}
	key := m.tmpl.Render(ev)
	switch key {
	case "":
		return message{}, "", &delivery.PermanentError{Reason: delivery.ReasonDestination, Err: fmt.Errorf(
			"event %s: stream template %q gives an empty key for aggregate_type %q and event_type %q; fix the event, or change the template",
			ev.ID, m.tmpl.String(), ev.AggregateType, ev.EventType)}
	case m.dlq:
		return message{}, "", &delivery.PermanentError{Reason: delivery.ReasonDestination, Err: fmt.Errorf(
			"event %s: stream template %q gives %q, the dead-letter stream; fix the event, or change the template or the dead-letter stream",
			ev.ID, m.tmpl.String(), key)}
	}
	headers := ev.Headers
	if len(headers) > 0 {
		if err := delivery.EachJSONHeader(headers, func(string, []byte) {}); err != nil {
			return message{}, "", &delivery.PermanentError{Reason: delivery.ReasonHeaders, Err: fmt.Errorf(
				"event %s: %w; write headers as a JSON object such as {\"trace_id\": \"abc\"}, or NULL", ev.ID, err)}
		}
		if bytes.Equal(bytes.TrimSpace(headers), []byte("null")) {
			headers = nil
		}
	}

	e := newEntry(key, m.maxLen, 9)
	e.add(delivery.HeaderID, ev.ID)
	e.add(delivery.HeaderEventType, ev.EventType)
	e.add(delivery.HeaderAggregateType, ev.AggregateType)
	e.add(delivery.HeaderAggregateID, ev.AggregateID)
	e.add(delivery.HeaderPosition, ev.Position.AppendText(make([]byte, 0, schema.PositionLen)))
	if !ev.Replayed.IsZero() {
		e.add(delivery.HeaderReplayed, "true")
		e.add(delivery.HeaderReplayStarted, ev.Replayed.UTC().Format(time.RFC3339Nano))
	}
	if len(headers) > 0 {
		e.add(FieldHeaders, headers)
	}
	e.add(FieldPayload, ev.Payload)
	if e.size > m.maxBytes {
		return message{}, "", &delivery.PermanentError{Reason: delivery.ReasonSize, Err: fmt.Errorf(
			"event %s: entry of %d bytes (payload %d) exceeds the %d-byte limit; shrink the payload, or raise the maximum message size (at most the server's proto-max-bulk-len)",
			ev.ID, e.size, len(ev.Payload), m.maxBytes)}
	}
	return message{id: ev.ID, stream: key, args: e.args}, m.tmpl.Label(ev), nil
}

// DeadLetter returns the XADD that sets ev aside in the dead-letter stream,
// never trimmed: the fields of delivery.DeadLetterHeaders with
// delivery.HeaderAggregateID after delivery.HeaderAggregateType (absent when
// ev has none), then FieldPayload, unless reason is delivery.ReasonSize or
// the entry would exceed Config.MaxMessageBytes; then
// delivery.HeaderDLQPayloadOmitted is "true" and there is no payload.
func (m *mapper) DeadLetter(ev *schema.Event, reason string, cause error, attempts int) (message, string, error) {
	var dest string
	if key := m.tmpl.Render(ev); ev.Malformed == nil && key != "" && key != m.dlq {
		dest = key
	}
	hs := delivery.DeadLetterHeaders(ev, reason, cause, attempts, dest)
	build := func(payload bool) *entry {
		e := newEntry(m.dlq, 0, len(hs)+3)
		for _, h := range hs {
			e.add(h.Key, h.Value)
			if h.Key == delivery.HeaderAggregateType && ev.AggregateID != "" {
				e.add(delivery.HeaderAggregateID, ev.AggregateID)
			}
		}
		if !payload {
			e.add(delivery.HeaderDLQPayloadOmitted, "true")
			return e
		}
		e.add(FieldPayload, ev.Payload)
		return e
	}
	e := build(reason != delivery.ReasonSize)
	if e.size > m.maxBytes {
		// A malformed message's content, say, may be too large: set the
		// event aside without it rather than not at all.
		e = build(false)
	}
	return message{id: ev.ID, stream: m.dlq, args: e.args}, m.dlq, nil
}
