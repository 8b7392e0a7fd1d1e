package relay

import (
	"context"

	"github.com/jackc/pglogrepl"

	"github.com/outbox-relay/outbox-relay/schema"
)

// Sink delivers events downstream. Publish must not wait for delivery: it
// calls done exactly once per event, when the event is durable or has
// failed, and per key in Publish order. Publish is called from one goroutine;
// done may be called from any. Publish may keep the strings and byte slices
// of ev (the stream never reuses them) but not ev itself.
type Sink interface {
	Publish(ctx context.Context, ev *schema.Event, done func(error))
	// Flush blocks until every published event's done has been called, or
	// ctx ends.
	Flush(ctx context.Context) error
}

// DeadLetterer is a Sink that can set aside events it can never deliver.
// The Relay uses it under PolicyDLQ; without it every failure halts.
type DeadLetterer interface {
	// Poison reports whether err, given to an event's done, means the
	// event can never be delivered, with a short reason from a closed set.
	Poison(err error) (reason string, ok bool)
	// DeadLetter publishes ev with why it failed, calling done once like
	// Publish. It must not block: the Relay calls it from a done callback.
	DeadLetter(ctx context.Context, ev *schema.Event, reason string, cause error, attempts int, done func(error))
}

// Halter is a Sink that can stop delivering at once. When the Relay stops on
// a failed event it calls Halt from within that event's done, before any
// later done: the Sink then fails every event it has not yet handed to the
// broker instead of sending it. Without this, later events of the failed
// event's partition could still land, and a consumer that keeps the greatest
// position it processed per partition would skip the failed event when
// PostgreSQL sends it again.
type Halter interface {
	Halt(cause error)
}

// Transactor is a Sink that delivers in transactions: what it acknowledges
// becomes durable and visible to consumers only when CommitTxn returns nil,
// all at once, together with the fence it commits. The Relay uses it under
// DeliveryExactlyOnce. Its methods are called from one goroutine at a time,
// never concurrently with Publish.
type Transactor interface {
	// ReadFence returns the last committed fence (zero if none), first
	// taking the transaction identity over from any other producer.
	ReadFence(ctx context.Context) (pglogrepl.LSN, error)
	// BeginTxn opens a transaction for the events published next.
	BeginTxn() error
	// CommitTxn waits for the open transaction's events and commits them
	// with fence, the end of the last PostgreSQL transaction they hold.
	CommitTxn(ctx context.Context, fence pglogrepl.LSN) error
	// AbortTxn aborts the open transaction, if any.
	AbortTxn(ctx context.Context) error
}
