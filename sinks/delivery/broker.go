package delivery

import (
	"context"

	"github.com/outbox-relay/outbox-relay/schema"
)

// Broker is the part of a sink that knows one broker. M is the broker's
// message type. A Sink calls Map and DeadLetter from the goroutines of its
// callers, and Send from up to Config.Senders goroutines at once, so every
// method must be safe for concurrent use.
type Broker[M any] interface {
	// Map returns the message for ev and its destination: a name with a
	// bounded number of values (a topic, stream, exchange or subject
	// pattern; never one holding an aggregate ID), used as the topic label
	// of the metrics. An error means ev can never become a message: return
	// a *PermanentError. Map is called only for events with an aggregate
	// ID and a well-formed content; the message may alias ev's byte
	// slices, which nobody changes.
	Map(ev *schema.Event) (msg M, dest string, err error)
	// DeadLetter returns the message that sets ev aside in the dead-letter
	// destination, saying why: ev failed with cause, for reason (one of
	// the Reason constants), after attempts attempts. See
	// DeadLetterHeaders for what it should carry.
	DeadLetter(ev *schema.Event, reason string, cause error, attempts int) (msg M, dest string, err error)
	// Send sends msgs, whose keys are distinct, and returns once the
	// outcome of each is known: errs[i] (len(errs) == len(msgs), all nil
	// on entry) is left nil once the broker holds msgs[i] durably and
	// acknowledged it, and set otherwise. Send may reconnect. When ctx
	// ends it returns at once, setting the errors of the messages whose
	// outcome it does not know.
	Send(ctx context.Context, msgs []M, errs []error)
	// Classify reports whether err, from Send, means the message can never
	// be delivered, with a reason from the Reason constants. Otherwise the
	// Sink sends the message again after a backoff.
	Classify(err error) (reason string, permanent bool)
	// Ping checks that the broker answers, within ctx. Its error says what
	// to check (the URL, the credentials, the server).
	Ping(ctx context.Context) error
	// Close releases the broker's connections. The Sink calls it once,
	// after the last Send returned.
	Close() error
}
