// Package content decodes the content of the transactional logical
// decoding messages that carry outbox events (written by schema.Emit or the
// SQL function outbox_emit) into the schema.Event an outbox row of the same
// fields makes, for the cdc package.
//
// Invariant: no content is dropped. Content that is not an outbox event
// decodes to an Event whose Malformed wraps schema.ErrContent and whose
// Payload is the whole content, which a Sink sets aside as poison.
package content

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unsafe"

	"github.com/google/uuid"

	"github.com/outbox-relay/outbox-relay/internal/jsonscan"
	"github.com/outbox-relay/outbox-relay/schema"
)

// The content of a logical decoding message that carries an outbox event is
// one JSON object, as schema.Emit and the SQL function outbox_emit write it, with the fields of an outbox row:
//
//	{"id": "<uuid>", "aggregate_type": "order", "aggregate_id": "42",
//	 "event_type": "order.paid", "payload": <any JSON>, "headers": {"k": "v"}}
//
// id, aggregate_type, aggregate_id and event_type are required JSON strings;
// id must be a UUID. payload is required and may be any JSON value. headers
// is optional; absent or null means none, like a NULL headers column.
// Members of other names are ignored; a member given twice is an error.
const (
	memberID            = "id"
	memberAggregateType = "aggregate_type"
	memberAggregateID   = "aggregate_id"
	memberEventType     = "event_type"
	memberPayload       = "payload"
	memberHeaders       = "headers"
)

// Decode fills ev from b, the content of a logical decoding message, so
// that ev is the Event an outbox row of the same fields makes: the ID in the
// lower-case hyphenated form PostgreSQL prints a uuid in, the strings
// unescaped, Payload the payload's JSON text as written, and Headers the
// headers' JSON text, or nil when absent or null. Whether Headers is a JSON
// object, and whether AggregateID is empty, is left to the Sink, as for a
// row. ev's strings and slices alias b unless they had escapes, so b must
// not change while ev lives. Position, CommitTime, Received, Table and
// Prefix are left zero.
//
// When b is not an outbox event, Decode returns an error wrapping
// schema.ErrContent, and ev holds the fields that could be read, the whole
// of b as its Payload, no Headers, and the error as Malformed: a Sink
// treats such an event as poison. It allocates nothing for content whose
// strings have no escapes and whose ID is in canonical form.
func Decode(b []byte, ev *schema.Event) error {
	*ev = schema.Event{}
	err := decode(b, ev)
	if err != nil {
		err = fmt.Errorf("%w: %w", err, schema.ErrContent)
		ev.Payload, ev.Headers, ev.Malformed = b, nil, err
	}
	return err
}

func decode(b []byte, ev *schema.Event) error {
	if !json.Valid(b) {
		var v any
		err := json.Unmarshal(b, &v)
		if err == nil { // json.Valid and Unmarshal disagree: cannot happen
			err = errors.New("invalid JSON")
		}
		return fmt.Errorf("content is not valid JSON: %w", err)
	}
	// From here b is valid JSON, so the scanner checks no syntax.
	i := jsonscan.SkipSpace(b, 0)
	if b[i] != '{' {
		return fmt.Errorf("content is a JSON %s, not an object", jsonscan.Kind(b[i]))
	}
	const (
		seenID = 1 << iota
		seenAggregateType
		seenAggregateID
		seenEventType
		seenPayload
		seenHeaders
		required = seenID | seenAggregateType | seenAggregateID | seenEventType | seenPayload
	)
	var seen int
	var first error // the first problem; the other fields are still read
	fail := func(err error) {
		if first == nil {
			first = err
		}
	}
	for i++; ; {
		i = jsonscan.SkipSpace(b, i)
		switch b[i] {
		case '}':
			if seen&required != required {
				var missing []string
				for _, f := range []struct {
					bit  int
					name string
				}{{seenID, memberID}, {seenAggregateType, memberAggregateType}, {seenAggregateID, memberAggregateID}, {seenEventType, memberEventType}, {seenPayload, memberPayload}} {
					if seen&f.bit == 0 {
						missing = append(missing, f.name)
					}
				}
				fail(fmt.Errorf("content lacks %s", strings.Join(missing, ", ")))
			}
			return first
		case ',':
			i = jsonscan.SkipSpace(b, i+1)
		}
		keyEnd := jsonscan.StringEnd(b, i)
		rawKey := b[i:keyEnd]
		i = jsonscan.SkipSpace(b, jsonscan.SkipSpace(b, keyEnd)+1) // past ':'
		valEnd := jsonscan.ValueEnd(b, i)
		val := b[i:valEnd]
		i = valEnd

		key, err := jsonscan.Unquote(rawKey)
		if err != nil {
			fail(fmt.Errorf("member name %s: %w", excerpt(rawKey), err))
			continue
		}
		var bit int
		switch string(key) {
		case memberID:
			bit = seenID
		case memberAggregateType:
			bit = seenAggregateType
		case memberAggregateID:
			bit = seenAggregateID
		case memberEventType:
			bit = seenEventType
		case memberPayload:
			bit = seenPayload
		case memberHeaders:
			bit = seenHeaders
		default:
			continue
		}
		if seen&bit != 0 {
			fail(fmt.Errorf("content has %q twice", key))
			continue
		}
		seen |= bit
		switch bit {
		case seenPayload:
			ev.Payload = val
			continue
		case seenHeaders:
			if val[0] != 'n' {
				ev.Headers = val
			}
			continue
		}
		if val[0] != '"' {
			fail(fmt.Errorf("%q is a JSON %s, want a string", key, jsonscan.Kind(val[0])))
			continue
		}
		s, err := jsonscan.Unquote(val)
		if err != nil {
			fail(fmt.Errorf("%q: %w", key, err))
			continue
		}
		switch bit {
		case seenID:
			id, err := canonicalUUID(s)
			if err != nil {
				fail(fmt.Errorf("%q is %s, not a UUID", key, excerpt(val)))
				continue
			}
			ev.ID = id
		case seenAggregateType:
			ev.AggregateType = bytesString(s)
		case seenAggregateID:
			ev.AggregateID = bytesString(s)
		case seenEventType:
			ev.EventType = bytesString(s)
		}
	}
}

// excerpt returns b for an error message, cut to its first 64 bytes: the
// error travels in a dead letter's headers, which must stay small.
func excerpt(b []byte) string {
	const n = 64
	if len(b) <= n {
		return string(b)
	}
	return fmt.Sprintf("%s… (%d bytes)", b[:n], len(b))
}

// canonicalUUID returns the UUID s in lower-case hyphenated form, aliasing s
// when it is in that form already.
func canonicalUUID(s []byte) (string, error) {
	u, err := uuid.ParseBytes(s)
	if err != nil {
		return "", err
	}
	var canon [36]byte
	hexOf(canon[:], u)
	if bytes.Equal(s, canon[:]) {
		return bytesString(s), nil
	}
	return string(canon[:]), nil
}

// hexOf writes u's canonical text into dst, which holds 36 bytes.
func hexOf(dst []byte, u uuid.UUID) {
	const digits = "0123456789abcdef"
	j := 0
	for i, c := range u {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			dst[j] = '-'
			j++
		}
		dst[j], dst[j+1] = digits[c>>4], digits[c&0xf]
		j += 2
	}
}

// bytesString views b as a string without copying; b must not change.
func bytesString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}
