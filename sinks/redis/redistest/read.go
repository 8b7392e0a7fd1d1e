package redistest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/outbox-relay/outbox-relay/sinks/delivery"
	"github.com/outbox-relay/outbox-relay/sinks/sinktest"
)

// The redis sink's field names this package reads by name; the others
// become headers under their own names.
const (
	fieldAggregateID = "aggregate_id"
	fieldHeaders     = "headers"
	fieldPayload     = "payload"
)

// DefaultDeadLetterStream is the redis sink's default dead-letter stream,
// which ReadDeadLetters reads when given no stream.
const DefaultDeadLetterStream = "outbox-relay-dlq"

// readTimeout bounds each reader's work.
const readTimeout = 30 * time.Second

// pageSize is how many entries one XRANGE returns.
const pageSize = 10_000

// Entry is one stream entry as XRANGE returns it.
type Entry struct {
	// ID is the entry's ID, such as 1700000000000-0.
	ID string
	// Fields are the entry's fields, in the order XADD gave them.
	Fields []Field
}

// Field is one field of an Entry.
type Field struct {
	Name, Value string
}

// Get returns the value of e's first field named name, and whether there
// is one.
func (e Entry) Get(name string) (string, bool) {
	for _, f := range e.Fields {
		if f.Name == name {
			return f.Value, true
		}
	}
	return "", false
}

// Keys returns the keys of the streams that match pattern, a glob as SCAN
// takes it (outbox.*), in byte order; keys of other types are left out.
func (s *Server) Keys(t testing.TB, pattern string) []string {
	t.Helper()
	c, ctx, done := s.reader()
	defer done()
	keys, err := streamKeys(ctx, c, pattern)
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	return keys
}

// Entries returns every entry of the stream key, in ID order; none when
// there is no such key.
func (s *Server) Entries(t testing.TB, key string) []Entry {
	t.Helper()
	c, ctx, done := s.reader()
	defer done()
	es, err := entries(ctx, c, key)
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	return es
}

// Read returns every entry of the streams whose keys match pattern (a glob
// as SCAN takes it, such as outbox.*), stream by stream in byte order of
// their keys, each in ID order, as the conformance suite's messages:
// Destination is the stream key, Key the aggregate_id field, Payload the
// payload field, and Headers the other fields in the order stored (id,
// event_type, aggregate_type, position, and for a replayed event replayed
// and replay_started), then the members of the JSON object in the headers
// field, in the order written, as delivery.AppendHeaders gives them: a
// string's value is its text, null's is empty, any other value's is its
// JSON text, and members named like the relay's own fields are left out.
// It fails t when a headers field is not a JSON object.
func (s *Server) Read(t testing.TB, pattern string) []sinktest.Message {
	t.Helper()
	c, ctx, done := s.reader()
	defer done()
	keys, err := streamKeys(ctx, c, pattern)
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	var msgs []sinktest.Message
	for _, key := range keys {
		es, err := entries(ctx, c, key)
		if err != nil {
			t.Fatalf("redistest: %v", err)
		}
		for _, e := range es {
			m, err := Message(key, e)
			if err != nil {
				t.Fatalf("redistest: %v", err)
			}
			msgs = append(msgs, m)
		}
	}
	return msgs
}

// ReadDeadLetters returns every entry of the dead-letter stream, in order,
// converted as Read converts them: Key is the aggregate_id field (empty
// when the event had none), Payload the payload field (nil when omitted),
// and Headers every other field as stored (id, event_type,
// aggregate_type, position, dlq_reason and the other dlq_ fields). Empty
// stream means DefaultDeadLetterStream.
func (s *Server) ReadDeadLetters(t testing.TB, stream string) []sinktest.Message {
	t.Helper()
	if stream == "" {
		stream = DefaultDeadLetterStream
	}
	c, ctx, done := s.reader()
	defer done()
	es, err := entries(ctx, c, stream)
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	msgs := make([]sinktest.Message, 0, len(es))
	for _, e := range es {
		m, err := Message(stream, e)
		if err != nil {
			t.Fatalf("redistest: %v", err)
		}
		msgs = append(msgs, m)
	}
	return msgs
}

// Message converts e, an entry of the stream key, as Read does.
func Message(key string, e Entry) (sinktest.Message, error) {
	m := sinktest.Message{Destination: key}
	var own []delivery.Header
	for _, f := range e.Fields {
		switch f.Name {
		case fieldAggregateID:
			m.Key = f.Value
		case fieldPayload:
			m.Payload = []byte(f.Value)
		case fieldHeaders:
			hs, err := parseHeaders(f.Value)
			if err != nil {
				return sinktest.Message{}, fmt.Errorf("entry %s of stream %q: headers field %q: %w", e.ID, key, f.Value, err)
			}
			own = hs
		default:
			m.Headers = append(m.Headers, delivery.Header{Key: f.Name, Value: []byte(f.Value)})
		}
	}
	m.Headers = append(m.Headers, own...)
	return m, nil
}

// parseHeaders returns the members of the JSON object obj in order, with
// encoding/json: a string's value is its text, null's is empty, any other
// value's is its JSON text. Members named like the relay's own fields are
// left out. JSON null has none.
func parseHeaders(obj string) ([]delivery.Header, error) {
	dec := json.NewDecoder(strings.NewReader(obj))
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if tok == nil {
		return nil, nil
	}
	if tok != json.Delim('{') {
		return nil, fmt.Errorf("not a JSON object but %v", tok)
	}
	var hs []delivery.Header
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		name, _ := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, fmt.Errorf("member %q: %w", name, err)
		}
		if delivery.Reserved(name) {
			continue
		}
		var value []byte
		switch raw[0] {
		case '"':
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				return nil, fmt.Errorf("member %q: %w", name, err)
			}
			value = []byte(s)
		case 'n':
			value = []byte{}
		default:
			value = []byte(raw)
		}
		hs = append(hs, delivery.Header{Key: name, Value: value})
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("text after the JSON object")
	}
	return hs, nil
}

// reader returns a client for one read, with its context; done closes it.
func (s *Server) reader() (*goredis.Client, context.Context, func()) {
	c := goredis.NewClient(s.options())
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	return c, ctx, func() {
		cancel()
		_ = c.Close()
	}
}

// streamKeys returns the keys of the streams that match pattern, sorted.
func streamKeys(ctx context.Context, c *goredis.Client, pattern string) ([]string, error) {
	var keys []string
	var cursor uint64
	for {
		page, next, err := c.ScanType(ctx, cursor, pattern, 1000, "stream").Result()
		if err != nil {
			return nil, fmt.Errorf("scan for streams matching %q: %w", pattern, err)
		}
		keys = append(keys, page...)
		if cursor = next; cursor == 0 {
			break
		}
	}
	slices.Sort(keys)
	return slices.Compact(keys), nil // SCAN may return a key twice
}

// entries returns every entry of the stream key, in ID order, with XRANGE
// in pages; go-redis's XRange gives the fields as a map, which loses their
// order, so the reply is read as it is.
func entries(ctx context.Context, c *goredis.Client, key string) ([]Entry, error) {
	var es []Entry
	start := "-"
	for {
		reply, err := c.Do(ctx, "XRANGE", key, start, "+", "COUNT", pageSize).Slice()
		if err != nil {
			return nil, fmt.Errorf("read stream %q: %w", key, err)
		}
		for _, item := range reply {
			e, err := entry(item)
			if err != nil {
				return nil, fmt.Errorf("read stream %q: %w", key, err)
			}
			es = append(es, e)
		}
		if len(reply) < pageSize {
			return es, nil
		}
		start = "(" + es[len(es)-1].ID
	}
}

// entry converts one element of an XRANGE reply: the ID and a flat list
// of names and values.
func entry(item any) (Entry, error) {
	pair, ok := item.([]any)
	if !ok || len(pair) != 2 {
		return Entry{}, fmt.Errorf("entry %v is not an ID and its fields", item)
	}
	id, ok := pair[0].(string)
	if !ok {
		return Entry{}, fmt.Errorf("entry ID %v is not a string", pair[0])
	}
	flat, _ := pair[1].([]any)
	if len(flat)%2 != 0 {
		return Entry{}, fmt.Errorf("entry %s has an odd number of names and values", id)
	}
	e := Entry{ID: id, Fields: make([]Field, 0, len(flat)/2)}
	for i := 0; i < len(flat); i += 2 {
		name, ok1 := flat[i].(string)
		value, ok2 := flat[i+1].(string)
		if !ok1 || !ok2 {
			return Entry{}, fmt.Errorf("entry %s: field %v = %v is not text", id, flat[i], flat[i+1])
		}
		e.Fields = append(e.Fields, Field{Name: name, Value: value})
	}
	return e, nil
}
