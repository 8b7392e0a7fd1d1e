package rabbitmq

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pglogrepl"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/outbox-relay/outbox-relay/schema"
	"github.com/outbox-relay/outbox-relay/sinks/delivery"
)

// event returns a valid event, changed by each of change.
func event(change ...func(*schema.Event)) *schema.Event {
	ev := &schema.Event{
		ID:            "e-1",
		AggregateType: "order",
		AggregateID:   "o-42",
		EventType:     "created",
		Payload:       []byte(`{"total":10}`),
		Position:      schema.Position{CommitLSN: pglogrepl.LSN(0x16B3748), Index: 3},
		Table:         "public.outbox",
	}
	for _, c := range change {
		c(ev)
	}
	return ev
}

// newTestMapper returns the mapper of cfg with its defaults.
func newTestMapper(t *testing.T, cfg Config) *mapper {
	t.Helper()
	cfg.URL = "amqp://localhost/"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	m, err := newMapper(cfg.withDefaults())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestMapDestination(t *testing.T) {
	for _, tt := range []struct {
		name                       string
		cfg                        Config
		ev                         *schema.Event
		exchange, key, label, fail string
	}{
		{"defaults", Config{}, event(), "outbox", "order.created", "outbox/order.created", ""},
		{"templates", Config{Exchange: "ev.{aggregate_type}", RoutingKey: "{event_type}:{aggregate_id}"}, event(),
			"ev.order", "created:o-42", "ev.order/created:*", ""},
		{"literal key", Config{RoutingKey: "all"}, event(), "outbox", "all", "outbox/all", ""},
		{"key from event type", Config{RoutingKey: "{event_type}"}, event(), "outbox", "created", "outbox/created", ""},
		// A routing key may be empty or partial: fanout and headers
		// exchanges ignore it, and a topic binding such as order.# takes
		// "order.".
		{"empty key", Config{RoutingKey: "{event_type}"}, event(func(e *schema.Event) { e.EventType = "" }), "outbox", "", "outbox/", ""},
		{"empty exchange", Config{Exchange: "{aggregate_type}"}, event(func(e *schema.Event) { e.AggregateType = "" }), "", "", "",
			`its aggregate_type is empty, and the exchange template "{aggregate_type}" names it`},
		{"exchange part empty", Config{Exchange: "ev.{aggregate_type}"}, event(func(e *schema.Event) { e.AggregateType = "" }), "", "", "",
			`its aggregate_type is empty, and the exchange template "ev.{aggregate_type}" names it`},
		{"long exchange", Config{Exchange: "{aggregate_type}"}, event(func(e *schema.Event) { e.AggregateType = strings.Repeat("a", 256) }), "", "", "",
			"is not a name RabbitMQ accepts (1 to 255 bytes of UTF-8)"},
		{"exchange not UTF-8", Config{Exchange: "x.{event_type}"}, event(func(e *schema.Event) { e.EventType = "\xff" }), "", "", "",
			"is not a name RabbitMQ accepts"},
		{"long routing key", Config{RoutingKey: "{aggregate_id}"}, event(func(e *schema.Event) { e.AggregateID = strings.Repeat("i", 300) }), "", "", "",
			"routing key of 300 bytes"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := newTestMapper(t, tt.cfg)
			msg, label, err := m.Map(tt.ev)
			if tt.fail != "" {
				var pe *delivery.PermanentError
				if !errors.As(err, &pe) || pe.Reason != delivery.ReasonDestination || !strings.Contains(err.Error(), tt.fail) {
					t.Fatalf("Map() error = %v, want a PermanentError of reason %q with %q", err, delivery.ReasonDestination, tt.fail)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if msg.exchange != tt.exchange || msg.key != tt.key || label != tt.label {
				t.Errorf("Map() = exchange %q key %q label %q, want %q %q %q", msg.exchange, msg.key, label, tt.exchange, tt.key, tt.label)
			}
		})
	}
}

func TestMapMessage(t *testing.T) {
	replay := time.Date(2026, 12, 1, 10, 0, 0, 5, time.UTC)
	for _, tt := range []struct {
		name string
		ev   *schema.Event
		want amqp.Table
	}{
		{"no headers", event(), amqp.Table{
			"id": "e-1", "event_type": "created", "aggregate_type": "order",
			"position": "00000000016b374800000003", "aggregate_id": "o-42",
		}},
		{"own headers", event(func(e *schema.Event) {
			e.Headers = []byte(`{"trace_id":"t\"1","n":5,"obj":{"a":[1]},"nul":null,"id":"forged","aggregate_id":"forged"}`)
		}), amqp.Table{
			"id": "e-1", "event_type": "created", "aggregate_type": "order",
			"position": "00000000016b374800000003", "aggregate_id": "o-42",
			"trace_id": `t"1`, "n": "5", "obj": `{"a":[1]}`, "nul": "",
		}},
		{"replayed", event(func(e *schema.Event) { e.Replayed = replay; e.Position = schema.Position{} }), amqp.Table{
			"id": "e-1", "event_type": "created", "aggregate_type": "order",
			"position": "000000000000000000000000", "aggregate_id": "o-42",
			"replayed": "true", "replay_started": "2026-12-01T10:00:00.000000005Z",
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			msg, _, err := newTestMapper(t, Config{}).Map(tt.ev)
			if err != nil {
				t.Fatal(err)
			}
			want := amqp.Publishing{
				Headers:      tt.want,
				ContentType:  "application/json",
				DeliveryMode: amqp.Persistent,
				MessageId:    "e-1",
				Type:         "created",
				AppId:        "outbox-relay",
				Body:         tt.ev.Payload,
			}
			if diff := cmp.Diff(want, msg.pub); diff != "" {
				t.Errorf("Map() publishing (-want +got):\n%s", diff)
			}
			if err := msg.pub.Headers.Validate(); err != nil {
				t.Errorf("headers are not an AMQP table: %v", err)
			}
			if msg.deadLetter || msg.id != "e-1" {
				t.Errorf("Map() deadLetter %v id %q, want false e-1", msg.deadLetter, msg.id)
			}
		})
	}
}

func TestMapRefuses(t *testing.T) {
	for _, tt := range []struct {
		name   string
		cfg    Config
		ev     *schema.Event
		reason string
		want   string
	}{
		{"headers not an object", Config{}, event(func(e *schema.Event) { e.Headers = []byte(`[1]`) }), delivery.ReasonHeaders, "not an object"},
		{"CC header", Config{}, event(func(e *schema.Event) { e.Headers = []byte(`{"CC":"x"}`) }), delivery.ReasonHeaders, "sender-selected distribution"},
		{"BCC header", Config{}, event(func(e *schema.Event) { e.Headers = []byte(`{"BCC":"x"}`) }), delivery.ReasonHeaders, `header "BCC"`},
		{"long header name", Config{}, event(func(e *schema.Event) { e.Headers = []byte(`{"` + strings.Repeat("h", 256) + `":1}`) }),
			delivery.ReasonHeaders, "256 bytes, more than the 255"},
		{"long ID", Config{}, event(func(e *schema.Event) { e.ID = strings.Repeat("i", 256) }), delivery.ReasonRejected, "message_id"},
		{"long event type", Config{RoutingKey: "x"}, event(func(e *schema.Event) { e.EventType = strings.Repeat("t", 256) }), delivery.ReasonRejected, "type property"},
		{"payload too large", Config{MaxMessageBytes: 1024}, event(func(e *schema.Event) { e.Payload = make([]byte, 1000) }), delivery.ReasonSize,
			"more than the maximum of 1024"},
		{"headers too large", Config{MaxMessageBytes: 1024}, event(func(e *schema.Event) { e.Headers = []byte(`{"h":"` + strings.Repeat("x", 1000) + `"}`) }),
			delivery.ReasonSize, "(payload and headers)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := newTestMapper(t, tt.cfg).Map(tt.ev)
			var pe *delivery.PermanentError
			if !errors.As(err, &pe) || pe.Reason != tt.reason || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Map() error = %v, want a PermanentError of reason %q with %q", err, tt.reason, tt.want)
			}
		})
	}
	t.Run("just under the maximum", func(t *testing.T) {
		m := newTestMapper(t, Config{MaxMessageBytes: 1024})
		ev := event()
		msg, _, err := m.Map(ev)
		if err != nil {
			t.Fatal(err)
		}
		size := len(ev.Payload)
		for k, v := range msg.pub.Headers {
			size += len(k) + len(v.(string))
		}
		ev.Payload = append(ev.Payload, make([]byte, 1024-size)...)
		if _, _, err := m.Map(ev); err != nil {
			t.Errorf("Map() of exactly 1024 bytes: %v", err)
		}
	})
}

func TestDeadLetterMessage(t *testing.T) {
	cause := errors.New("returned unroutable")
	for _, tt := range []struct {
		name    string
		cfg     Config
		ev      *schema.Event
		reason  string
		body    string
		ctype   string
		headers map[string]string // some of the headers
		absent  []string
	}{
		{"unroutable", Config{}, event(func(e *schema.Event) { e.Headers = []byte(`{"a":1}`) }), delivery.ReasonUnroutable,
			`{"total":10}`, "application/json", map[string]string{
				"id": "e-1", "aggregate_id": "o-42", "dlq_reason": "unroutable", "dlq_error": "returned unroutable",
				"dlq_attempts": "1", "dlq_topic": "outbox/order.created", "dlq_headers": `{"a":1}`,
				"dlq_table": "public.outbox", "dlq_source_lsn": "0/16B3748",
			}, []string{"dlq_payload_omitted", "a"}},
		{"size", Config{}, event(), delivery.ReasonSize, "", "", map[string]string{"dlq_payload_omitted": "true"}, nil},
		{"payload over the maximum", Config{MaxMessageBytes: 1024}, event(func(e *schema.Event) { e.Payload = make([]byte, 2000) }),
			delivery.ReasonRejected, "", "", map[string]string{"dlq_payload_omitted": "true", "dlq_reason": "rejected"}, nil},
		{"no destination", Config{Exchange: "{aggregate_type}"}, event(func(e *schema.Event) { e.AggregateType = "" }),
			delivery.ReasonDestination, `{"total":10}`, "application/json", map[string]string{"dlq_reason": "destination"}, []string{"dlq_topic"}},
		{"malformed", Config{}, event(func(e *schema.Event) {
			e.Malformed, e.AggregateID, e.Prefix, e.Payload = schema.ErrContent, "", "outbox", []byte("not json")
		}), delivery.ReasonContent, "not json", "application/octet-stream", map[string]string{"dlq_message_prefix": "outbox"}, []string{"aggregate_id"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := newTestMapper(t, tt.cfg)
			msg, dest, err := m.DeadLetter(tt.ev, tt.reason, cause, 1)
			if err != nil {
				t.Fatal(err)
			}
			if dest != m.dlq || msg.exchange != "" || msg.key != m.dlq || !msg.deadLetter {
				t.Errorf("DeadLetter() to %q/%q dest %q deadLetter %v, want the default exchange and %q", msg.exchange, msg.key, dest, msg.deadLetter, m.dlq)
			}
			p := msg.pub
			if string(p.Body) != tt.body || p.ContentType != tt.ctype || p.DeliveryMode != amqp.Persistent || p.MessageId != tt.ev.ID || p.AppId != AppID {
				t.Errorf("DeadLetter() body %q content type %q mode %d id %q app %q", p.Body, p.ContentType, p.DeliveryMode, p.MessageId, p.AppId)
			}
			for k, v := range tt.headers {
				if got, _ := p.Headers[k].(string); got != v {
					t.Errorf("header %s = %q, want %q", k, got, v)
				}
			}
			for _, k := range tt.absent {
				if v, ok := p.Headers[k]; ok {
					t.Errorf("header %s = %v, want none", k, v)
				}
			}
		})
	}
}

func TestParseTemplate(t *testing.T) {
	for _, tt := range []struct {
		name    string
		s       string
		allowed delivery.Fields
		literal bool
		fail    string
	}{
		{"literal", "outbox", exchangePlaceholders, true, ""},
		{"fields", "{aggregate_type}.{event_type}", exchangePlaceholders, false, ""},
		{"aggregate ID in a key", "{aggregate_id}", routingKeyPlaceholders, false, ""},
		{"aggregate ID in an exchange", "{aggregate_id}", exchangePlaceholders, false, "unknown placeholder"},
		{"unknown", "{nope}", routingKeyPlaceholders, false, "{aggregate_type}, {event_type} and {aggregate_id}"},
		{"not closed", "a{event_type", routingKeyPlaceholders, false, "is not closed"},
		{"not UTF-8", "a\xff", routingKeyPlaceholders, false, "not UTF-8"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tmpl, err := parseTemplate(tt.s, tt.allowed)
			if tt.fail != "" {
				if err == nil || !strings.Contains(err.Error(), tt.fail) {
					t.Fatalf("parseTemplate(%q) error = %v, want %q", tt.s, err, tt.fail)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tmpl.Literal() != tt.literal {
				t.Errorf("parseTemplate(%q).Literal() = %v, want %v", tt.s, tmpl.Literal(), tt.literal)
			}
		})
	}
}
