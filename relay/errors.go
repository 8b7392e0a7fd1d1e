package relay

import (
	"errors"
	"fmt"
)

// ErrSinkFailed wraps the error Run returns when the Sink failed an event.
var ErrSinkFailed = errors.New("sink failed an event")

// PoisonError is the failure of an event the Sink can never deliver
// (DeadLetterer.Poison said so) under PolicyHalt: the Relay stops before it,
// nothing after it is confirmed, and PostgreSQL sends it again at every
// start until the policy is PolicyDLQ or the slot is moved past it. Run's
// error wraps it, beside ErrSinkFailed; callers find it with errors.As.
type PoisonError struct {
	// Reason is the DeadLetterer's reason, from its closed set.
	Reason string
	// Err is the Sink's failure of the event.
	Err error
}

func (e *PoisonError) Error() string {
	return fmt.Sprintf("poison event (%s), policy halt: nothing after it is confirmed: %v", e.Reason, e.Err)
}

// Unwrap returns the Sink's failure.
func (e *PoisonError) Unwrap() error { return e.Err }
