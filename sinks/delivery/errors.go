package delivery

import "errors"

// Reasons a PermanentError gives. The set is closed, so that a reason can
// label a metric and a dead letter.
const (
	// ReasonAggregateID: the event has no aggregate ID, so it has no key
	// that could keep its order. Err wraps schema.ErrNoAggregateID.
	ReasonAggregateID = "aggregate_id"
	// ReasonContent: the event came from a logical decoding message whose
	// content is not an outbox event (schema.Event.Malformed).
	ReasonContent = "content"
	// ReasonHeaders: the event's headers are not a JSON object.
	ReasonHeaders = "headers"
	// ReasonDestination: the destination template yields a name the broker
	// does not accept for this event.
	ReasonDestination = "destination"
	// ReasonSize: the message is larger than the broker accepts.
	ReasonSize = "size"
	// ReasonUnroutable: the broker accepted the message but could deliver
	// it nowhere (no queue bound, no stream for its subject).
	ReasonUnroutable = "unroutable"
	// ReasonRejected: the broker refused the message for good for another
	// reason (a policy, a type clash).
	ReasonRejected = "rejected"
)

// Reasons lists every reason, for metrics that start each series at zero.
var Reasons = []string{ReasonAggregateID, ReasonContent, ReasonHeaders, ReasonDestination, ReasonSize, ReasonUnroutable, ReasonRejected}

// PermanentError reports an event the broker can never take: sending it
// again fails the same way, so the relay hands it to its poison-row policy
// (dead letter or halt) instead of retrying. Find it with errors.As.
type PermanentError struct {
	// Reason is one of the Reason constants.
	Reason string
	// Err says what is wrong, naming the event by ID.
	Err error
}

// Error returns the reason and the cause.
func (e *PermanentError) Error() string {
	return "event cannot be delivered (" + e.Reason + "): " + e.Err.Error()
}

// Unwrap returns Err.
func (e *PermanentError) Unwrap() error { return e.Err }

// ErrHalted wraps the error done gets for an event the Sink did not send
// because Halt was called.
var ErrHalted = errors.New("sink halted")

// ErrClosed wraps the error done gets for an event the Sink did not deliver
// because it was closed.
var ErrClosed = errors.New("sink closed")
