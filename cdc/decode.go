package cdc

import (
	"encoding/binary"
	"fmt"
	"time"
	"unsafe"

	"github.com/jackc/pglogrepl"

	"github.com/outbox-relay/outbox-relay/schema"
)

// pgoutput message types the stream acts on (protocol version 1). Every
// other type (origin, type, update, delete, truncate) is read past.
const (
	msgBegin    = 'B'
	msgCommit   = 'C'
	msgRelation = 'R'
	msgInsert   = 'I'
	msgMessage  = 'M' // a logical decoding message, sent with the messages option
)

// pgEpochMicros is the origin of PostgreSQL timestamps, 2000-01-01 UTC, in
// microseconds since the Unix epoch.
const pgEpochMicros = 946_684_800_000_000

func pgTime(micros int64) time.Time { return time.UnixMicro(micros + pgEpochMicros).UTC() }

// begin is a decoded Begin message.
type begin struct {
	FinalLSN   pglogrepl.LSN // the LSN of the transaction's commit record
	CommitTime time.Time
	XID        uint32
}

// commit is a decoded Commit message.
type commit struct {
	CommitLSN  pglogrepl.LSN
	EndLSN     pglogrepl.LSN // the LSN just past the commit record: the position to confirm
	CommitTime time.Time
}

// relation is a decoded Relation message.
type relation struct {
	ID        uint32
	Namespace string
	Name      string
	Columns   []string
}

// decodeError reports a pgoutput message the stream cannot read.
type decodeError struct {
	Type byte
	Why  string
}

func (e *decodeError) Error() string {
	return fmt.Sprintf("decode pgoutput message %q: %s", e.Type, e.Why)
}

func short(t byte, what string) error {
	return &decodeError{Type: t, Why: "message too short for " + what}
}

func decodeBegin(b []byte) (begin, error) {
	if len(b) < 1+8+8+4 {
		return begin{}, short(msgBegin, "begin fields")
	}
	return begin{
		FinalLSN:   pglogrepl.LSN(binary.BigEndian.Uint64(b[1:])),
		CommitTime: pgTime(int64(binary.BigEndian.Uint64(b[9:]))),
		XID:        binary.BigEndian.Uint32(b[17:]),
	}, nil
}

func decodeCommit(b []byte) (commit, error) {
	if len(b) < 1+1+8+8+8 {
		return commit{}, short(msgCommit, "commit fields")
	}
	return commit{
		CommitLSN:  pglogrepl.LSN(binary.BigEndian.Uint64(b[2:])),
		EndLSN:     pglogrepl.LSN(binary.BigEndian.Uint64(b[10:])),
		CommitTime: pgTime(int64(binary.BigEndian.Uint64(b[18:]))),
	}, nil
}

// cstring reads a NUL-terminated string at b[off:].
func cstring(b []byte, off int, t byte, what string) (string, int, error) {
	for i := off; i < len(b); i++ {
		if b[i] == 0 {
			return string(b[off:i]), i + 1, nil
		}
	}
	return "", 0, short(t, what)
}

func decodeRelation(b []byte) (relation, error) {
	var r relation
	if len(b) < 5 {
		return r, short(msgRelation, "relation id")
	}
	r.ID = binary.BigEndian.Uint32(b[1:])
	var err error
	off := 5
	if r.Namespace, off, err = cstring(b, off, msgRelation, "namespace"); err != nil {
		return r, err
	}
	if r.Name, off, err = cstring(b, off, msgRelation, "relation name"); err != nil {
		return r, err
	}
	if len(b) < off+1+2 {
		return r, short(msgRelation, "column count")
	}
	n := int(binary.BigEndian.Uint16(b[off+1:]))
	off += 3
	// Each column takes at least 10 bytes; do not trust n further than that.
	if len(b)-off < n*10 {
		return r, short(msgRelation, fmt.Sprintf("%d column names and types", n))
	}
	r.Columns = make([]string, n)
	for i := range n {
		if len(b) < off+1 {
			return r, short(msgRelation, "column flags")
		}
		var name string
		if name, off, err = cstring(b, off+1, msgRelation, "column name"); err != nil {
			return r, err
		}
		if len(b) < off+8 {
			return r, short(msgRelation, "column type")
		}
		off += 8 // type OID and modifier
		r.Columns[i] = name
	}
	return r, nil
}

// message is a decoded logical decoding message (pg_logical_emit_message).
// Prefix and Content alias the decoded bytes.
type message struct {
	// Transactional is set for a message emitted with transactional =>
	// true: it is part of its transaction, sent between its Begin and
	// Commit, and only if it committed. Other messages are sent when
	// decoding reaches them, whatever becomes of their transaction.
	Transactional bool
	LSN           pglogrepl.LSN // where the message's WAL record starts
	Prefix        []byte
	Content       []byte
}

// messageTransactional is the flag bit of a transactional message.
const messageTransactional = 1

// decodeMessage decodes a Message: flags (Int8), LSN (Int64), prefix
// (String), content length (Int32) and content. Protocol version 1 sends
// no transaction ID: that comes only with streamed transactions (version
// 2), which the stream does not ask for. It allocates nothing.
func decodeMessage(b []byte) (message, error) {
	var m message
	if len(b) < 1+1+8 {
		return m, short(msgMessage, "flags and lsn")
	}
	flags := b[1]
	if flags&^messageTransactional != 0 {
		return m, &decodeError{Type: msgMessage, Why: fmt.Sprintf("unknown flags %#x", flags)}
	}
	m.Transactional = flags&messageTransactional != 0
	m.LSN = pglogrepl.LSN(binary.BigEndian.Uint64(b[2:]))
	off := 10
	end := off
	for end < len(b) && b[end] != 0 {
		end++
	}
	if end == len(b) {
		return m, short(msgMessage, "prefix")
	}
	m.Prefix = b[off:end:end]
	off = end + 1
	if len(b) < off+4 {
		return m, short(msgMessage, "content length")
	}
	n := binary.BigEndian.Uint32(b[off:])
	off += 4
	if uint64(len(b)-off) < uint64(n) {
		return m, short(msgMessage, fmt.Sprintf("%d content bytes", n))
	}
	m.Content = b[off : off+int(n) : off+int(n)]
	return m, nil
}

// insertRelation returns the relation ID of an Insert message.
func insertRelation(b []byte) (uint32, error) {
	if len(b) < 6 {
		return 0, short(msgInsert, "relation id")
	}
	return binary.BigEndian.Uint32(b[1:]), nil
}

// decodeInsert fills ev from an Insert message's new tuple, using bind to
// find each column's field. b must not be modified or reused afterwards: the
// event's strings and slices point into it.
func decodeInsert(b []byte, bind binding, ev *schema.Event) error {
	if len(b) < 1+4+1+2 {
		return short(msgInsert, "tuple header")
	}
	if b[5] != 'N' {
		return &decodeError{Type: msgInsert, Why: fmt.Sprintf("tuple marker %q, want 'N'", b[5])}
	}
	n := int(binary.BigEndian.Uint16(b[6:]))
	if n != len(bind.fields) {
		return &decodeError{Type: msgInsert, Why: fmt.Sprintf("tuple has %d columns, relation has %d", n, len(bind.fields))}
	}
	*ev = schema.Event{}
	off := 8
	for i := range n {
		if len(b) < off+1 {
			return short(msgInsert, "column kind")
		}
		kind := b[off]
		off++
		var val []byte
		switch kind {
		case 'n':
			val = nil
		case 't', 'b':
			if len(b) < off+4 {
				return short(msgInsert, "column length")
			}
			l := int(binary.BigEndian.Uint32(b[off:]))
			off += 4
			if l < 0 || len(b) < off+l {
				return short(msgInsert, "column value")
			}
			val = b[off : off+l : off+l]
			off += l
		case 'u':
			return &decodeError{Type: msgInsert, Why: fmt.Sprintf("column %d is an unchanged TOAST value, which an insert cannot carry", i)}
		default:
			return &decodeError{Type: msgInsert, Why: fmt.Sprintf("column %d has unknown kind %q", i, kind)}
		}
		switch bind.fields[i] {
		case fieldID:
			ev.ID = bytesString(val)
		case fieldAggregateType:
			ev.AggregateType = bytesString(val)
		case fieldAggregateID:
			ev.AggregateID = bytesString(val)
		case fieldEventType:
			ev.EventType = bytesString(val)
		case fieldPayload:
			ev.Payload = val
		case fieldHeaders:
			ev.Headers = val
		}
	}
	return nil
}

// bytesString views b as a string without copying. The stream hands each
// message's bytes to exactly one event and never writes to them again, so
// the string stays immutable.
func bytesString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}
