package delivery

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unsafe"

	"github.com/outbox-relay/outbox-relay/internal/jsonscan"
	"github.com/outbox-relay/outbox-relay/schema"
)

// Names of the headers every message carries, in this order, before the
// event's own headers; they are the Kafka sink's too. Event headers with
// these names are dropped, so a consumer can trust them.
const (
	// HeaderID holds the event's ID.
	HeaderID = "id"
	// HeaderEventType holds the event's type.
	HeaderEventType = "event_type"
	// HeaderAggregateType holds the event's aggregate type.
	HeaderAggregateType = "aggregate_type"
	// HeaderPosition holds the event's schema.Position as 24 lower-case
	// hex digits; positions compare byte by byte in commit order.
	HeaderPosition = "position"
	// HeaderReplayed is "true" on an event read from the table by a
	// replay, and HeaderReplayStarted the replay's start time in RFC 3339
	// with nanoseconds, UTC.
	HeaderReplayed      = "replayed"
	HeaderReplayStarted = "replay_started"
	// HeaderAggregateID holds the event's aggregate ID in the messages of
	// brokers that have no message key (Kafka's records carry it as the
	// key); AppendHeaders does not add it.
	HeaderAggregateID = "aggregate_id"
)

// Headers a dead letter carries besides HeaderID, HeaderEventType,
// HeaderAggregateType and HeaderPosition.
const (
	// HeaderDLQReason is the poison reason: one of the Reason constants.
	HeaderDLQReason = "dlq_reason"
	// HeaderDLQError is the error text.
	HeaderDLQError = "dlq_error"
	// HeaderDLQAttempts counts the relay's attempts to publish the event.
	HeaderDLQAttempts = "dlq_attempts"
	// HeaderDLQSourceLSN is the commit LSN of the event's transaction, as
	// PostgreSQL prints it (0/16B3748).
	HeaderDLQSourceLSN = "dlq_source_lsn"
	// HeaderDLQTime is when the event was dead-lettered, RFC 3339, UTC.
	HeaderDLQTime = "dlq_time"
	// HeaderDLQTable is the outbox table the row came from; empty for an
	// event from a logical decoding message.
	HeaderDLQTable = "dlq_table"
	// HeaderDLQMessagePrefix is the prefix of the logical decoding message
	// the event came from; absent for a row.
	HeaderDLQMessagePrefix = "dlq_message_prefix"
	// HeaderDLQHeaders is the row's headers column as it was, JSON text.
	HeaderDLQHeaders = "dlq_headers"
	// HeaderDLQTopic is where the event was going: the topic, subject,
	// exchange and routing key, or stream, as the sink names it; absent
	// when the destination could not be named.
	HeaderDLQTopic = "dlq_topic"
	// HeaderDLQPayloadOmitted is "true" when the payload was too large to
	// carry; the payload must then be read from the outbox table.
	HeaderDLQPayloadOmitted = "dlq_payload_omitted"
)

// Reserved reports whether key names one of the headers the relay sets on
// every message, which an event's own headers may not override.
func Reserved(key string) bool {
	switch key {
	case HeaderID, HeaderEventType, HeaderAggregateType, HeaderPosition, HeaderReplayed, HeaderReplayStarted, HeaderAggregateID:
		return true
	}
	return false
}

// Header is one message header. Value may alias the event it came from.
type Header struct {
	Key   string
	Value []byte
}

// AppendHeaders appends ev's headers to hs: HeaderID, HeaderEventType,
// HeaderAggregateType and HeaderPosition, for a replayed event
// HeaderReplayed and HeaderReplayStarted, then one per member of the JSON
// object ev.Headers in the order written (see EachJSONHeader), except
// members named like the relay's own headers (Reserved). It fails
// with a *PermanentError of ReasonHeaders when ev.Headers is not a JSON
// object.
func AppendHeaders(hs []Header, ev *schema.Event) ([]Header, error) {
	hs = append(hs,
		Header{HeaderID, []byte(ev.ID)},
		Header{HeaderEventType, []byte(ev.EventType)},
		Header{HeaderAggregateType, []byte(ev.AggregateType)},
		Header{HeaderPosition, ev.Position.AppendText(nil)})
	if !ev.Replayed.IsZero() {
		hs = append(hs,
			Header{HeaderReplayed, []byte("true")},
			Header{HeaderReplayStarted, ev.Replayed.UTC().AppendFormat(nil, time.RFC3339Nano)})
	}
	err := EachJSONHeader(ev.Headers, func(k string, v []byte) {
		if !Reserved(k) {
			hs = append(hs, Header{k, v})
		}
	})
	if err != nil {
		return hs, &PermanentError{Reason: ReasonHeaders, Err: fmt.Errorf(
			"event %s: %w; write headers as a JSON object such as {\"trace_id\": \"abc\"}, or NULL", ev.ID, err)}
	}
	return hs, nil
}

// DeadLetterHeaders returns the headers of ev's dead letter: HeaderID,
// HeaderEventType, HeaderAggregateType and HeaderPosition, then why it was
// set aside (reason, cause, attempts) and where it came from and was going
// (dest, empty if unknown). The event's own headers are kept as JSON text in
// HeaderDLQHeaders. The sink adds HeaderDLQPayloadOmitted when it drops the
// payload.
func DeadLetterHeaders(ev *schema.Event, reason string, cause error, attempts int, dest string) []Header {
	hs := make([]Header, 0, 14)
	add := func(k, v string) { hs = append(hs, Header{k, []byte(v)}) }
	add(HeaderID, ev.ID)
	add(HeaderEventType, ev.EventType)
	add(HeaderAggregateType, ev.AggregateType)
	add(HeaderPosition, ev.Position.String())
	add(HeaderDLQReason, reason)
	add(HeaderDLQError, cause.Error())
	add(HeaderDLQAttempts, strconv.Itoa(attempts))
	add(HeaderDLQSourceLSN, ev.Position.CommitLSN.String())
	add(HeaderDLQTime, time.Now().UTC().Format(time.RFC3339Nano))
	add(HeaderDLQTable, ev.Table)
	if dest != "" {
		add(HeaderDLQTopic, dest)
	}
	if ev.Prefix != "" {
		add(HeaderDLQMessagePrefix, ev.Prefix)
	}
	if ev.Headers != nil {
		add(HeaderDLQHeaders, string(ev.Headers))
	}
	return hs
}

// emptyValue is the value of a header whose JSON value is null.
var emptyValue = []byte{}

// EachJSONHeader calls fn once per member of the JSON object obj, in the
// order written: a string's value is its unescaped text, null's is empty,
// and any other
// value's is its JSON text. Names and values alias obj unless they had
// escapes, so obj must not change while they are used. Nil, empty, or JSON
// null obj call nothing. It fails when obj is not a JSON object; fn may
// then have been called for the members before the fault.
func EachJSONHeader(obj []byte, fn func(key string, value []byte)) error {
	if len(obj) == 0 {
		return nil
	}
	if !json.Valid(obj) {
		var syntax any
		err := json.Unmarshal(obj, &syntax)
		if err == nil { // json.Valid and Unmarshal disagree: cannot happen
			err = errors.New("invalid JSON")
		}
		return fmt.Errorf("headers are not valid JSON: %w", err)
	}
	// From here obj is valid JSON, so the scanner checks no syntax.
	i := jsonscan.SkipSpace(obj, 0)
	switch obj[i] {
	case 'n':
		return nil
	case '{':
	default:
		return fmt.Errorf("headers are a JSON %s, not an object", jsonscan.Kind(obj[i]))
	}
	for i++; ; {
		i = jsonscan.SkipSpace(obj, i)
		switch obj[i] {
		case '}':
			return nil
		case ',':
			i = jsonscan.SkipSpace(obj, i+1)
		}
		keyEnd := jsonscan.StringEnd(obj, i)
		rawKey := obj[i:keyEnd]
		i = jsonscan.SkipSpace(obj, keyEnd) + 1 // past ':'
		i = jsonscan.SkipSpace(obj, i)
		valEnd := jsonscan.ValueEnd(obj, i)
		rawVal := obj[i:valEnd]
		i = valEnd

		key, err := jsonscan.Unquote(rawKey)
		if err != nil {
			return fmt.Errorf("header name %s: %w", rawKey, err)
		}
		// The name aliases obj, which nobody changes: no copy per header.
		name := unsafe.String(unsafe.SliceData(key), len(key))
		var val []byte
		switch rawVal[0] {
		case '"':
			if val, err = jsonscan.Unquote(rawVal); err != nil {
				return fmt.Errorf("header %q: %w", key, err)
			}
		case 'n':
			val = emptyValue
		default:
			val = rawVal
		}
		fn(name, val)
	}
}
