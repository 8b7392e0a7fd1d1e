package inbox

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Header names the relay gives every record.
const (
	// HeaderID is the event's ID, a UUID: the default deduplication key.
	HeaderID = "id"
	// HeaderPosition is 24 lower-case hex digits, the commit LSN and the
	// row's index in its transaction; 24 zeros for a replayed row.
	HeaderPosition = "position"
	// HeaderEventType is the event's type.
	HeaderEventType = "event_type"
	// HeaderAggregateType is the type of the aggregate the event is about.
	HeaderAggregateType = "aggregate_type"
)

// Handler applies one event. It runs inside tx, the transaction that also
// records the event in the inbox table, and must do its writes through tx:
// they commit together with the inbox row or not at all. Returning an error
// rolls tx back; the record is retried after a backoff unless the error is
// marked Permanent, and dead-lettered after Config.MaxAttempts failures.
// The handler must not commit or roll back tx itself.
//
// ctx is canceled when the consumer abandons the call (shutdown or
// partitions revoked, after Config.ShutdownTimeout; partitions lost, at
// once); the effects of an abandoned call are rolled back and the record is
// read again by whoever owns its partition next. A Handler is called
// concurrently for different partitions, and under OrderByKey for different
// keys of one partition; never concurrently for one key.
type Handler func(ctx context.Context, tx pgx.Tx, ev Event) error

// Event is one Kafka record as the Handler sees it.
type Event struct {
	// ID is the deduplication key (Config.DedupeKey): by default the
	// record's "id" header.
	ID string
	// Topic, Partition and Offset locate the record.
	Topic     string
	Partition int32
	Offset    int64
	// Key is the record key: the aggregate ID for records of the relay.
	Key []byte
	// Value is the record value: the event's payload.
	Value []byte
	// Headers are the record headers; of a header given more than once,
	// the last.
	Headers map[string]string
	// Position is the "position" header, 24 hex digits comparing in commit
	// order; 24 zeros for a replayed row; empty if absent.
	Position string
	// EventType and AggregateType are the headers of the same name.
	EventType     string
	AggregateType string
	// Timestamp is the record's timestamp.
	Timestamp time.Time
	// Attempt numbers the calls of the handler for this record by this
	// process, from 1. It may exceed Config.MaxAttempts when attempts
	// failed for the database connection, which are not counted.
	Attempt int
	// Record is the record itself. The handler must not modify it.
	Record *kgo.Record
}
