package kafka

import (
	"errors"
	"math"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pglogrepl"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/outbox-relay/outbox-relay/internal/content"
	"github.com/outbox-relay/outbox-relay/schema"
)

func newTestMapper(tb testing.TB, template string, maxBytes int) *mapper {
	tb.Helper()
	tmpl, err := parseTopicTemplate(template)
	if err != nil {
		tb.Fatalf("parseTopicTemplate(%q): %v", template, err)
	}
	m, err := newMetrics(prometheus.NewRegistry(), func() int { return 0 })
	if err != nil {
		tb.Fatal(err)
	}
	return &mapper{topics: newTopicCache(tmpl, m), maxBytes: maxBytes}
}

// header and record are what a test compares of a kgo.Record; a nil value
// shows as Null.
type header struct {
	Key, Value string
	Null       bool
}

type record struct {
	Topic, Key, Value string
	NullValue         bool
	Headers           []header
}

func recordOf(r *kgo.Record) record {
	out := record{Topic: r.Topic, Key: string(r.Key), Value: string(r.Value), NullValue: r.Value == nil}
	for _, h := range r.Headers {
		out.Headers = append(out.Headers, header{Key: h.Key, Value: string(h.Value), Null: h.Value == nil})
	}
	return out
}

func testEvent() *schema.Event {
	return &schema.Event{
		ID:            "0190f1e2-7c1a-7d2b-9e3f-4a5b6c7d8e9f",
		AggregateType: "order",
		AggregateID:   "order-42",
		EventType:     "OrderPlaced",
		Payload:       []byte(`{"total": 1250, "currency": "EUR"}`),
		Position:      schema.Position{CommitLSN: pglogrepl.LSN(0x16B3748), Index: 2},
		CommitTime:    time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC),
		Table:         "public.outbox",
	}
}

// fixed returns the four headers every record of testEvent starts with.
func fixed(ev *schema.Event) []header {
	return []header{
		{Key: "id", Value: ev.ID},
		{Key: "event_type", Value: ev.EventType},
		{Key: "aggregate_type", Value: ev.AggregateType},
		{Key: "position", Value: ev.Position.String()},
	}
}

func TestRecord(t *testing.T) {
	base := testEvent()
	tests := []struct {
		name     string
		template string
		edit     func(ev *schema.Event)
		want     func(ev *schema.Event) record
	}{
		{
			name:     "default template, no headers",
			template: DefaultTopic,
			want: func(ev *schema.Event) record {
				return record{Topic: "outbox.order", Key: "order-42", Value: string(ev.Payload), Headers: fixed(ev)}
			},
		},
		{
			name:     "both placeholders",
			template: "{aggregate_type}.{event_type}.v1",
			want: func(ev *schema.Event) record {
				return record{Topic: "order.OrderPlaced.v1", Key: "order-42", Value: string(ev.Payload), Headers: fixed(ev)}
			},
		},
		{
			name:     "literal template",
			template: "events",
			want: func(ev *schema.Event) record {
				return record{Topic: "events", Key: "order-42", Value: string(ev.Payload), Headers: fixed(ev)}
			},
		},
		{
			name:     "nil payload is a null value",
			template: DefaultTopic,
			edit:     func(ev *schema.Event) { ev.Payload = nil },
			want: func(ev *schema.Event) record {
				return record{Topic: "outbox.order", Key: "order-42", NullValue: true, Headers: fixed(ev)}
			},
		},
		{
			name:     "header values of every JSON kind",
			template: DefaultTopic,
			edit: func(ev *schema.Event) {
				ev.Headers = []byte(`{"trace_id": "4bf92f35", "attempt": 3, "ratio": -1.5e3, "retry": true, "off": false,
					"gone": null, "tags": ["a", "b"], "ctx": {"k": "v}", "n": [1, {"x": null}]}, "empty": ""}`)
			},
			want: func(ev *schema.Event) record {
				return record{Topic: "outbox.order", Key: "order-42", Value: string(ev.Payload), Headers: append(fixed(ev),
					header{Key: "trace_id", Value: "4bf92f35"},
					header{Key: "attempt", Value: "3"},
					header{Key: "ratio", Value: "-1.5e3"},
					header{Key: "retry", Value: "true"},
					header{Key: "off", Value: "false"},
					header{Key: "gone", Value: ""},
					header{Key: "tags", Value: `["a", "b"]`},
					header{Key: "ctx", Value: `{"k": "v}", "n": [1, {"x": null}]}`},
					header{Key: "empty", Value: ""},
				)}
			},
		},
		{
			name:     "escaped strings are unescaped",
			template: DefaultTopic,
			edit: func(ev *schema.Event) {
				ev.Headers = []byte(`{"quote\"d": "a\"b\\c\u00e9\n", "uni": "☃ \ud83d\ude00", "slash": "a\/b"}`)
			},
			want: func(ev *schema.Event) record {
				return record{Topic: "outbox.order", Key: "order-42", Value: string(ev.Payload), Headers: append(fixed(ev),
					header{Key: `quote"d`, Value: "a\"b\\c\u00e9\n"},
					header{Key: "uni", Value: "☃ 😀"},
					header{Key: "slash", Value: "a/b"},
				)}
			},
		},
		{
			name:     "reserved names are dropped",
			template: DefaultTopic,
			edit: func(ev *schema.Event) {
				ev.Headers = []byte(`{"id": "forged", "event_type": 1, "keep": "me", "aggregate_type": null, "position": "0", "\u0069d": "escaped forgery", "ID": "other case"}`)
			},
			want: func(ev *schema.Event) record {
				return record{Topic: "outbox.order", Key: "order-42", Value: string(ev.Payload), Headers: append(fixed(ev),
					header{Key: "keep", Value: "me"},
					header{Key: "ID", Value: "other case"},
				)}
			},
		},
		{
			name:     "JSON null headers",
			template: DefaultTopic,
			edit:     func(ev *schema.Event) { ev.Headers = []byte(" null ") },
			want: func(ev *schema.Event) record {
				return record{Topic: "outbox.order", Key: "order-42", Value: string(ev.Payload), Headers: fixed(ev)}
			},
		},
		{
			name:     "empty object, odd whitespace",
			template: DefaultTopic,
			edit:     func(ev *schema.Event) { ev.Headers = []byte("\n\t{ }\r\n") },
			want: func(ev *schema.Event) record {
				return record{Topic: "outbox.order", Key: "order-42", Value: string(ev.Payload), Headers: fixed(ev)}
			},
		},
		{
			name:     "duplicate names are kept in order",
			template: DefaultTopic,
			edit:     func(ev *schema.Event) { ev.Headers = []byte(`{"a":"1","b":2,"a":"3"}`) },
			want: func(ev *schema.Event) record {
				return record{Topic: "outbox.order", Key: "order-42", Value: string(ev.Payload), Headers: append(fixed(ev),
					header{Key: "a", Value: "1"}, header{Key: "b", Value: "2"}, header{Key: "a", Value: "3"})}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := *base
			ev.Payload = append([]byte(nil), base.Payload...)
			if tt.edit != nil {
				tt.edit(&ev)
			}
			m := newTestMapper(t, tt.template, DefaultMaxMessageBytes)
			r, top, err := m.record(&ev)
			if err != nil {
				t.Fatalf("record(%+v) error: %v", ev, err)
			}
			if got, want := recordOf(r), tt.want(&ev); !cmp.Equal(got, want) {
				t.Errorf("record(%+v) = %+v, want %+v\ndiff (-got +want):\n%s", ev, got, want, cmp.Diff(got, want))
			}
			if top.name != r.Topic {
				t.Errorf("record(%+v) topic = %q, record.Topic = %q", ev, top.name, r.Topic)
			}
			if len(ev.Payload) > 0 && &r.Value[0] != &ev.Payload[0] {
				t.Errorf("record(%+v).Value is a copy of the payload, want the payload itself", ev)
			}
		})
	}
}

func TestRecordPosition(t *testing.T) {
	ev := testEvent()
	ev.Position = schema.Position{CommitLSN: pglogrepl.LSN(0x16B3748), Index: 2}
	r, _, err := newTestMapper(t, DefaultTopic, DefaultMaxMessageBytes).record(ev)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(r.Headers[3].Value), "00000000016b374800000002"; r.Headers[3].Key != "position" || got != want {
		t.Errorf("record(%+v) header 3 = %s=%q, want position=%q", ev, r.Headers[3].Key, got, want)
	}
}

// TestRecordReplayed checks the headers of an event read from the table: the
// replay headers after the four fixed ones, a zero position, and an event
// header of a reserved replay name dropped.
func TestRecordReplayed(t *testing.T) {
	ev := testEvent()
	ev.Position = schema.Position{}
	ev.Replayed = time.Date(2026, 11, 26, 13, 4, 5, 600, time.FixedZone("CET", 3600))
	ev.Headers = []byte(`{"replayed": "false", "trace": "t1"}`)
	r, _, err := newTestMapper(t, DefaultTopic, DefaultMaxMessageBytes).record(ev)
	if err != nil {
		t.Fatal(err)
	}
	want := append(fixed(ev),
		header{Key: "replayed", Value: "true"},
		header{Key: "replay_started", Value: "2026-11-26T12:04:05.0000006Z"},
		header{Key: "trace", Value: "t1"})
	if got := recordOf(r).Headers; !cmp.Equal(got, want) {
		t.Errorf("record(%+v) headers = %+v, want %+v", ev, got, want)
	}
	if got := string(r.Headers[3].Value); got != "000000000000000000000000" {
		t.Errorf("replayed record position = %q, want 24 zeros", got)
	}
	if string(r.Key) != ev.AggregateID {
		t.Errorf("replayed record key = %q, want %q", r.Key, ev.AggregateID)
	}
}

func TestTopicNamer(t *testing.T) {
	name, err := TopicNamer("")
	if err != nil {
		t.Fatal(err)
	}
	ev := testEvent()
	if got, err := name(ev); err != nil || got != "outbox.order" {
		t.Errorf("TopicNamer(\"\")(%+v) = %q, %v, want outbox.order", ev, got, err)
	}
	ev.AggregateType = "no spaces"
	var re *RecordError
	if _, err := name(ev); !errors.As(err, &re) || re.Reason != ReasonTopic {
		t.Errorf("TopicNamer(\"\")(%+v) error = %v, want a RecordError with reason %q", ev, err, ReasonTopic)
	}
}

func TestRecordRejects(t *testing.T) {
	tests := []struct {
		name     string
		template string
		maxBytes int
		edit     func(ev *schema.Event)
		reason   string
		is       error // the error must wrap it, if set
		mention  string
	}{
		{name: "no aggregate id", edit: func(ev *schema.Event) { ev.AggregateID = "" }, reason: ReasonAggregateID, is: schema.ErrNoAggregateID},
		{name: "slash in aggregate type", edit: func(ev *schema.Event) { ev.AggregateType = "orders/eu" }, reason: ReasonTopic, mention: `"outbox.orders/eu"`},
		{name: "space in event type", template: "{event_type}", edit: func(ev *schema.Event) { ev.EventType = "Order Placed" }, reason: ReasonTopic},
		{name: "empty topic", template: "{aggregate_type}", edit: func(ev *schema.Event) { ev.AggregateType = "" }, reason: ReasonTopic},
		{name: "empty aggregate type", edit: func(ev *schema.Event) { ev.AggregateType = "" }, reason: ReasonTopic, mention: `its aggregate_type is empty, and the topic template "outbox.{aggregate_type}" names it`},
		{name: "empty event type", template: "outbox.{aggregate_type}.{event_type}", edit: func(ev *schema.Event) { ev.EventType = "" }, reason: ReasonTopic, mention: "its event_type is empty"},
		{name: "dot-dot topic", template: "{aggregate_type}", edit: func(ev *schema.Event) { ev.AggregateType = ".." }, reason: ReasonTopic},
		{name: "topic too long", edit: func(ev *schema.Event) { ev.AggregateType = strings.Repeat("a", 243) }, reason: ReasonTopic},
		{name: "headers array", edit: func(ev *schema.Event) { ev.Headers = []byte(`[{"a":"b"}]`) }, reason: ReasonHeaders, mention: "array"},
		{name: "headers string", edit: func(ev *schema.Event) { ev.Headers = []byte(`"a"`) }, reason: ReasonHeaders, mention: "string"},
		{name: "headers number", edit: func(ev *schema.Event) { ev.Headers = []byte(`12`) }, reason: ReasonHeaders, mention: "number"},
		{name: "headers invalid JSON", edit: func(ev *schema.Event) { ev.Headers = []byte(`{"a": "b",}`) }, reason: ReasonHeaders, mention: "not valid JSON"},
		{name: "headers truncated", edit: func(ev *schema.Event) { ev.Headers = []byte(`{"a": "b"`) }, reason: ReasonHeaders},
		{name: "headers blank", edit: func(ev *schema.Event) { ev.Headers = []byte(` `) }, reason: ReasonHeaders},
		{name: "too large", maxBytes: 1024, edit: func(ev *schema.Event) { ev.Payload = make([]byte, 1024) }, reason: ReasonSize},
		{name: "malformed message", edit: func(ev *schema.Event) {
			_ = content.Decode([]byte(`{"id":"`+ev.ID+`","payload":1}`), ev)
			ev.Prefix = "outbox"
		}, reason: ReasonContent, is: schema.ErrContent, mention: `prefix "outbox"`},
		{name: "message without aggregate id", edit: func(ev *schema.Event) {
			if err := content.Decode([]byte(`{"id":"`+ev.ID+`","aggregate_type":"t","aggregate_id":"","event_type":"e","payload":1}`), ev); err != nil {
				panic(err)
			}
			ev.Prefix = "outbox"
		}, reason: ReasonAggregateID, is: schema.ErrNoAggregateID},
		{name: "message headers not an object", edit: func(ev *schema.Event) {
			if err := content.Decode([]byte(`{"id":"`+ev.ID+`","aggregate_type":"t","aggregate_id":"a","event_type":"e","payload":1,"headers":[1]}`), ev); err != nil {
				panic(err)
			}
		}, reason: ReasonHeaders, mention: "array"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := testEvent()
			tt.edit(ev)
			template := tt.template
			if template == "" {
				template = DefaultTopic
			}
			maxBytes := tt.maxBytes
			if maxBytes == 0 {
				maxBytes = DefaultMaxMessageBytes
			}
			r, _, err := newTestMapper(t, template, maxBytes).record(ev)
			var rerr *RecordError
			if !errors.As(err, &rerr) {
				t.Fatalf("record(%+v) = %+v, %v; want a *RecordError", ev, r, err)
			}
			if rerr.Reason != tt.reason {
				t.Errorf("record(%+v) reason = %q, want %q (%v)", ev, rerr.Reason, tt.reason, err)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("record(%+v) = %v, want it to wrap %v", ev, err, tt.is)
			}
			if !strings.Contains(err.Error(), ev.ID) || !strings.Contains(err.Error(), tt.mention) {
				t.Errorf("record(%+v) error %q does not name the event or %s", ev, err, tt.mention)
			}
			if r != nil {
				t.Errorf("record(%+v) = %+v, want no record with the error", ev, r)
			}
		})
	}
}

// TestRecordSizeLimit checks that a record record accepts also fits
// franz-go's own batch limit: it must never fail there with
// MESSAGE_TOO_LARGE instead of a RecordError.
func TestRecordSizeLimit(t *testing.T) {
	const maxBytes = 2048
	m := newTestMapper(t, DefaultTopic, maxBytes)
	ev := testEvent()
	ev.Headers = []byte(`{"a": "b", "c": 1}`)
	largest := -1
	for n := 0; n <= maxBytes; n++ {
		ev.Payload = make([]byte, n)
		if _, _, err := m.record(ev); err == nil {
			largest = n
		}
	}
	// The exact size, as kgo counts a v2 batch: 65 bytes of overhead and
	// the record. The estimate may exceed it by a few bytes, never fall
	// short of it.
	ev.Payload = make([]byte, largest)
	r, _, err := m.record(ev)
	if err != nil {
		t.Fatal(err)
	}
	exact := 65 + exactRecordLen(r)
	if exact > maxBytes || maxBytes-exact > 128 {
		t.Errorf("largest accepted payload = %d bytes, batch = %d bytes; want a batch at most %d bytes and within 128 of it",
			largest, exact, maxBytes)
	}
}

// exactRecordLen is the wire length of r in a v2 batch with zero deltas.
func exactRecordLen(r *kgo.Record) int {
	varintLen := func(v int) int {
		u := uint32(v<<1) ^ uint32(v>>31)
		n := 1
		for u >= 0x80 {
			u >>= 7
			n++
		}
		return n
	}
	body := 1 + 1 + 1 + varintLen(len(r.Key)) + len(r.Key) + varintLen(len(r.Value)) + len(r.Value) + varintLen(len(r.Headers))
	for _, h := range r.Headers {
		body += varintLen(len(h.Key)) + len(h.Key) + varintLen(len(h.Value)) + len(h.Value)
	}
	return varintLen(body) + body
}

func TestParseTopicTemplate(t *testing.T) {
	tests := []struct {
		template string
		ok       bool
		mention  string
	}{
		{template: "outbox.{aggregate_type}", ok: true},
		{template: "{aggregate_type}", ok: true},
		{template: "{event_type}", ok: true},
		{template: "{aggregate_type}{event_type}", ok: true},
		{template: "Events_v1-{aggregate_type}.{event_type}", ok: true},
		{template: "orders", ok: true},
		{template: ".{aggregate_type}", ok: true},
		{template: strings.Repeat("x", 249), ok: true},
		{template: strings.Repeat("x", 249) + "{event_type}", ok: true},
		{template: strings.Repeat("x", 250), mention: "249"},
		{template: "{aggregate}", mention: "{aggregate_type} and {event_type}"},
		{template: "outbox.{Aggregate_Type}", mention: "{aggregate_type} and {event_type}"},
		{template: "{}", mention: "{aggregate_type} and {event_type}"},
		{template: "outbox.{aggregate_type", mention: "not closed"},
		{template: "outbox}", mention: "a-z A-Z 0-9 . _ -"},
		{template: "outbox/{aggregate_type}", mention: "a-z A-Z 0-9 . _ -"},
		{template: "outbox {aggregate_type}", mention: "a-z A-Z 0-9 . _ -"},
		{template: "outbox.ä", mention: "a-z A-Z 0-9 . _ -"},
		{template: ".", mention: "legal"},
		{template: "..", mention: "legal"},
		{template: "", mention: "empty"},
	}
	for _, tt := range tests {
		t.Run(tt.template, func(t *testing.T) {
			_, err := parseTopicTemplate(tt.template)
			if tt.ok {
				if err != nil {
					t.Errorf("parseTopicTemplate(%q) = %v, want nil", tt.template, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.mention) {
				t.Errorf("parseTopicTemplate(%q) = %v, want an error that mentions %q", tt.template, err, tt.mention)
			}
		})
	}
}

func TestLegalTopic(t *testing.T) {
	for c := 0; c < 256; c++ {
		name := string([]byte{byte(c)})
		want := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
		if got := legalTopic(name); got != want {
			t.Errorf("legalTopic(%q) = %v, want %v", name, got, want)
		}
	}
	tests := map[string]bool{
		"":                        false,
		".":                       false,
		"..":                      false,
		"...":                     true,
		"a.":                      true,
		strings.Repeat("a", 249):  true,
		strings.Repeat("a", 250):  false,
		"outbox.order":            true,
		"outbox.order\x00":        false,
		"__consumer_offsets-like": true,
	}
	for name, want := range tests {
		if got := legalTopic(name); got != want {
			t.Errorf("legalTopic(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{Brokers: []string{"localhost:9092"}}
	tests := []struct {
		name    string
		edit    func(c *Config)
		mention string // empty: valid
	}{
		{name: "zero fields but brokers", edit: func(*Config) {}},
		{name: "everything set", edit: func(c *Config) {
			*c = Config{Brokers: []string{"a:9092", "b:9092"}, Topic: "x.{event_type}", ClientID: "me",
				AllowAutoTopicCreation: true, Linger: time.Minute, MaxMessageBytes: 512}
		}},
		{name: "no brokers", edit: func(c *Config) { c.Brokers = nil }, mention: "host:port"},
		{name: "empty broker", edit: func(c *Config) { c.Brokers = []string{""} }, mention: "host:port"},
		{name: "comma-joined brokers", edit: func(c *Config) { c.Brokers = []string{"a:9092,b:9092"} }, mention: "its own"},
		{name: "broker with a scheme", edit: func(c *Config) { c.Brokers = []string{"kafka://a:9092"} }, mention: `"kafka://a:9092": give host:port without a scheme`},
		{name: "broker with two colons", edit: func(c *Config) { c.Brokers = []string{"a:9092", "bad:port:x"} }, mention: `"bad:port:x": address bad:port:x: too many colons in address; write it as host:port`},
		{name: "broker port not a number", edit: func(c *Config) { c.Brokers = []string{"a:http"} }, mention: `port "http" is not a number`},
		{name: "broker port out of range", edit: func(c *Config) { c.Brokers = []string{"a:70000"} }, mention: `port "70000"`},
		{name: "broker without port", edit: func(c *Config) {
			c.Brokers = []string{"a", "[::1]:9092", "[::1]", "::1", "2001:db8::1", "fe80::1%eth0"}
		}},
		{name: "unknown placeholder", edit: func(c *Config) { c.Topic = "outbox.{table}" }, mention: "{aggregate_type} and {event_type}"},
		{name: "illegal topic text", edit: func(c *Config) { c.Topic = "outbox:{aggregate_type}" }, mention: "a-z A-Z 0-9 . _ -"},
		{name: "negative linger", edit: func(c *Config) { c.Linger = -time.Millisecond }, mention: "linger"},
		{name: "long linger", edit: func(c *Config) { c.Linger = time.Minute + 1 }, mention: "linger"},
		{name: "tiny batches", edit: func(c *Config) { c.MaxMessageBytes = 511 }, mention: "max message bytes"},
		{name: "huge batches", edit: func(c *Config) { c.MaxMessageBytes = 100<<20 + 1 }, mention: "max message bytes"},
		{name: "negative batches", edit: func(c *Config) { c.MaxMessageBytes = -1 }, mention: "max message bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.edit(&c)
			err := c.Validate()
			if tt.mention == "" {
				if err != nil {
					t.Errorf("%+v.Validate() = %v, want nil", c, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.mention) {
				t.Errorf("%+v.Validate() = %v, want an error that mentions %q", c, err, tt.mention)
			}
		})
	}
	// Every problem is reported at once.
	err := Config{Topic: "{x}", Linger: -1}.Validate()
	for _, mention := range []string{"no brokers", "{x}", "linger"} {
		if err == nil || !strings.Contains(err.Error(), mention) {
			t.Errorf("Validate() = %v, want it to mention %q", err, mention)
		}
	}
}

type opt struct{ opt, want any }

// TestConfigOpts pins the producer settings the Sink's guarantees rest on.
func TestConfigOpts(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want []opt
	}{
		{
			name: "defaults",
			cfg:  Config{Brokers: []string{"127.0.0.1:1"}},
			want: []opt{
				{kgo.RequiredAcks, kgo.AllISRAcks()},
				{kgo.DisableIdempotentWrite, false},
				{kgo.AllowIdempotentProduceCancellation, false},
				{kgo.ProducerLinger, time.Duration(0)},
				{kgo.ClientID, "outbox-relay"},
				{kgo.AllowAutoTopicCreation, false},
				{kgo.RecordRetries, int64(math.MaxInt64)},
				{kgo.RecordDeliveryTimeout, time.Duration(0)},
				{kgo.ManualFlushing, false},
			},
		},
		{
			name: "set",
			cfg:  Config{Brokers: []string{"127.0.0.1:1"}, ClientID: "relay-7", Linger: 5 * time.Millisecond, AllowAutoTopicCreation: true},
			want: []opt{
				{kgo.ProducerLinger, 5 * time.Millisecond},
				{kgo.ClientID, "relay-7"},
				{kgo.AllowAutoTopicCreation, true},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cl, err := kgo.NewClient(tt.cfg.withDefaults().opts()...)
			if err != nil {
				t.Fatalf("NewClient(%+v opts): %v", tt.cfg, err)
			}
			defer cl.Close()
			for _, o := range tt.want {
				name := runtime.FuncForPC(reflect.ValueOf(o.opt).Pointer()).Name()
				if got := cl.OptValue(o.opt); !cmp.Equal(got, o.want, cmp.Comparer(func(a, b kgo.Acks) bool { return a == b })) {
					t.Errorf("%+v: OptValue(%s) = %#v, want %#v", tt.cfg, name, got, o.want)
				}
			}
		})
	}
}

func BenchmarkRecord(b *testing.B) {
	payload := []byte(`{"order_id":"order-42","customer":{"id":"c-9","tier":"gold"},"lines":[{"sku":"A-1","qty":2,"price":1250},{"sku":"B-7","qty":1,"price":400}],"currency":"EUR"}`)
	for _, bb := range []struct {
		name    string
		headers []byte
	}{
		{name: "no headers"},
		{name: "3 headers", headers: []byte(`{"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "tenant": "acme", "attempt": 1}`)},
	} {
		b.Run(bb.name, func(b *testing.B) {
			m := newTestMapper(b, DefaultTopic, DefaultMaxMessageBytes)
			ev := testEvent()
			ev.Payload = payload
			ev.Headers = bb.headers
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := m.record(ev); err != nil {
					b.Fatal(err)
				}
			}
		})
		// What Publish does: the record and its buffer come from a
		// pooled flight and are reused.
		b.Run(bb.name+" reused", func(b *testing.B) {
			m := newTestMapper(b, DefaultTopic, DefaultMaxMessageBytes)
			ev := testEvent()
			ev.Payload = payload
			ev.Headers = bb.headers
			var (
				r   kgo.Record
				buf []byte
			)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := m.fill(&r, &buf, ev); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
