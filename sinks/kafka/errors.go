package kafka

import "github.com/outbox-relay/outbox-relay/sinks/delivery"

// Reasons a RecordError gives, those of every sink (sinks/delivery) but
// ReasonTopic. The set is closed, so a reason can label a metric or pick a
// poison-row policy.
const (
	// ReasonAggregateID: the event has no aggregate ID, so it has no key and
	// no partition could keep its order. Err wraps schema.ErrNoAggregateID.
	ReasonAggregateID = delivery.ReasonAggregateID
	// ReasonTopic: the topic template yields a name Kafka does not accept
	// for this event's aggregate or event type.
	ReasonTopic = "topic"
	// ReasonHeaders: the event's headers are not a JSON object.
	ReasonHeaders = delivery.ReasonHeaders
	// ReasonSize: the record (key, payload and headers) cannot fit in a
	// batch of Config.MaxMessageBytes.
	ReasonSize = delivery.ReasonSize
	// ReasonContent: the event came from a logical decoding message whose
	// content is not an outbox event (schema.Event.Malformed). Err wraps
	// schema.ErrContent.
	ReasonContent = delivery.ReasonContent
)

// RecordError reports an event that cannot become a Kafka record. Publish
// passes it to done before returning and produces nothing for the event;
// publishing the same event again fails the same way, so callers route it to
// their poison-row policy (dead-letter topic or halt) rather than retry.
// Find it with errors.As.
type RecordError struct {
	// Reason is one of ReasonAggregateID, ReasonTopic, ReasonHeaders,
	// ReasonSize or ReasonContent.
	Reason string
	// Err says what is wrong with the event, naming it by ID.
	Err error
}

// Error returns the reason and the cause.
func (e *RecordError) Error() string {
	return "event cannot become a kafka record (" + e.Reason + "): " + e.Err.Error()
}

// Unwrap returns Err.
func (e *RecordError) Unwrap() error { return e.Err }
