package schema

import (
	"bytes"
	"encoding/json"
	"errors"
)

// DefaultMessagePrefix is the prefix of the logical decoding messages that
// carry outbox events, unless the relay is told another (--message-prefix).
// The SQL function outbox_emit always uses it.
const DefaultMessagePrefix = "outbox"

// ErrContent reports a logical decoding message whose content is not an
// outbox event: not a JSON object, a field missing or of the wrong type, or
// an ID that is not a UUID. The Malformed error of such a message's Event
// wraps it.
var ErrContent = errors.New("message content is not an outbox event")

// content is the JSON form of a Message in a logical decoding message: one
// object with the fields of an outbox row, headers left out when there are
// none. The relay reads it back into an Event (package internal/content,
// whose tests check that what Emit writes decodes to the same fields).
type content struct {
	ID            string            `json:"id"`
	AggregateType string            `json:"aggregate_type"`
	AggregateID   string            `json:"aggregate_id"`
	EventType     string            `json:"event_type"`
	Payload       json.RawMessage   `json:"payload"`
	Headers       map[string]string `json:"headers,omitempty"`
}

// encodeContent returns m as message content. m.ID must be set.
func encodeContent(m Message) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	err := enc.Encode(content{
		ID:            m.ID,
		AggregateType: m.AggregateType,
		AggregateID:   m.AggregateID,
		EventType:     m.EventType,
		Payload:       m.Payload,
		Headers:       m.Headers,
	})
	if err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
