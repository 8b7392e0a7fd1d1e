package schema

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
)

// Event is one committed outbox row, or one transactional logical decoding
// message carrying an outbox event (see Emit), as the relay read it
// from the replication stream. Byte slices may alias a buffer owned by the stream;
// a Sink that keeps them past Publish must not let the stream reuse it
// (the cdc package never reuses a buffer it handed out).
type Event struct {
	ID            string
	AggregateType string
	AggregateID   string
	EventType     string
	// Payload is the row's payload column, as PostgreSQL printed it (JSON text for jsonb).
	Payload []byte
	// Headers is the row's headers column as JSON text, or nil when the column
	// is NULL or not mapped.
	Headers []byte
	// Position orders the event among all events of the stream.
	Position Position
	// CommitTime is when the event's transaction committed, by the server's clock.
	CommitTime time.Time
	// Sent is when the server sent the row's message on the replication
	// stream, by the server's clock; zero when the event did not come from
	// one.
	Sent time.Time
	// Received is when the relay read the row from the replication stream,
	// by the relay's clock; zero when the event did not come from one.
	Received time.Time
	// Table is the qualified name of the table the row came from; empty for
	// an event from a logical decoding message.
	Table string
	// Replayed is when the replay that read the row from the table, not
	// from the replication stream, started; zero for a streamed row. A
	// replayed event's Position is zero: the table holds no commit LSN.
	Replayed time.Time
	// Prefix is the prefix of the logical decoding message the event came
	// from; empty for a row.
	Prefix string
	// Malformed, when not nil, says why the message the event came from
	// holds no outbox event; it wraps ErrContent. The event then carries
	// the message's whole content as its Payload, and a Sink treats it as
	// poison, like a row it cannot deliver.
	Malformed error
}

// Size approximates the memory an event holds, for in-flight byte limits.
func (e *Event) Size() int {
	return len(e.ID) + len(e.AggregateType) + len(e.AggregateID) + len(e.EventType) +
		len(e.Payload) + len(e.Headers) + 64
}

// Position is where an event stands in commit order: the LSN of its
// transaction's commit record and the row's index within that transaction.
// Replays of the same row after a restart carry the same Position.
type Position struct {
	CommitLSN pglogrepl.LSN
	Index     uint32
}

// PositionLen is the length of an encoded Position.
const PositionLen = 24

// Less reports whether p was committed before q.
func (p Position) Less(q Position) bool {
	if p.CommitLSN != q.CommitLSN {
		return p.CommitLSN < q.CommitLSN
	}
	return p.Index < q.Index
}

// AppendText appends p as 24 lower-case hex digits (16 for the commit LSN, 8
// for the index). Encoded positions compare byte by byte in commit order, so
// a consumer can drop replays by remembering the greatest one it processed.
func (p Position) AppendText(b []byte) []byte {
	var raw [12]byte
	binary.BigEndian.PutUint64(raw[:8], uint64(p.CommitLSN))
	binary.BigEndian.PutUint32(raw[8:], p.Index)
	return hex.AppendEncode(b, raw[:])
}

// String returns the encoded form of p.
func (p Position) String() string { return string(p.AppendText(nil)) }

// ParsePosition decodes the form produced by AppendText.
func ParsePosition(s string) (Position, error) {
	if len(s) != PositionLen {
		return Position{}, fmt.Errorf("parse position %q: want %d hex digits", s, PositionLen)
	}
	var raw [12]byte
	if _, err := hex.Decode(raw[:], []byte(s)); err != nil {
		return Position{}, fmt.Errorf("parse position %q: %w", s, err)
	}
	return Position{
		CommitLSN: pglogrepl.LSN(binary.BigEndian.Uint64(raw[:8])),
		Index:     binary.BigEndian.Uint32(raw[8:]),
	}, nil
}

// ErrNoAggregateID reports an outbox row whose aggregate ID is NULL or empty:
// it has no key, so no partition can keep its order.
var ErrNoAggregateID = errors.New("outbox row has a NULL or empty aggregate id")
