package schema

import (
	"encoding/json"
	"fmt"
)

// NewMessage returns a Message about the aggregate aggregateType/aggregateID
// whose payload is payload encoded as JSON, ready for Insert. Its ID is
// empty, so Insert gives it a new random UUID; set ID for a chosen one.
//
// payload is encoded with encoding/json, so struct tags and json.Marshaler
// apply, and nil becomes JSON null. A json.RawMessage or []byte payload is
// taken as JSON text and kept as it is (encoding/json would write a []byte
// as a base64 string); it must be valid JSON. NewMessage fails with an error
// wrapping ErrNoAggregateID when aggregateID is empty, and when payload does
// not encode to valid JSON.
func NewMessage(aggregateType, aggregateID, eventType string, payload any) (Message, error) {
	if aggregateID == "" {
		return Message{}, fmt.Errorf("new %s message: %w", eventType, ErrNoAggregateID)
	}
	var b []byte
	switch p := payload.(type) {
	case json.RawMessage:
		b = p
	case []byte:
		b = p
	default:
		var err error
		if b, err = json.Marshal(payload); err != nil {
			return Message{}, fmt.Errorf("new %s message: encode payload: %w", eventType, err)
		}
	}
	if !json.Valid(b) {
		return Message{}, fmt.Errorf("new %s message: payload is not valid JSON; pass a value to encode, or JSON text as json.RawMessage", eventType)
	}
	return Message{
		AggregateType: aggregateType,
		AggregateID:   aggregateID,
		EventType:     eventType,
		Payload:       b,
	}, nil
}
