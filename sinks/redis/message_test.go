package redis

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pglogrepl"

	"github.com/outbox-relay/outbox-relay/schema"
	"github.com/outbox-relay/outbox-relay/sinks/delivery"
)

// testEvent returns an event with every field set but Headers and
// Replayed.
func testEvent() *schema.Event {
	return &schema.Event{
		ID:            "e1",
		AggregateType: "Order",
		AggregateID:   "o-1",
		EventType:     "Placed",
		Payload:       []byte(`{"total":5}`),
		Position:      schema.Position{CommitLSN: pglogrepl.LSN(0x16B3748), Index: 2},
		Table:         "public.outbox",
	}
}

const testPosition = "00000000016b374800000002"

// words returns a command line as text.
func words(args []any) []string {
	out := make([]string, len(args))
	for i, a := range args {
		switch a := a.(type) {
		case []byte:
			out[i] = string(a)
		default:
			out[i] = fmt.Sprint(a)
		}
	}
	return out
}

func newTestMapper(t *testing.T, cfg Config) *mapper {
	t.Helper()
	m, err := newMapper(cfg.withDefaults())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestMap(t *testing.T) {
	replayed := time.Date(2026, 12, 1, 10, 0, 0, 123456789, time.FixedZone("CET", 3600))
	for _, tc := range []struct {
		name string
		cfg  Config
		edit func(ev *schema.Event)
		want []string
		dest string
	}{
		{
			name: "no headers",
			edit: func(*schema.Event) {},
			want: []string{"xadd", "outbox.Order", "*", "id", "e1", "event_type", "Placed", "aggregate_type", "Order",
				"aggregate_id", "o-1", "position", testPosition, "payload", `{"total":5}`},
			dest: "outbox.Order",
		},
		{
			name: "headers kept as written",
			edit: func(ev *schema.Event) { ev.Headers = []byte(`{"trace_id": "t", "id": "forged", "n": 1}`) },
			want: []string{"xadd", "outbox.Order", "*", "id", "e1", "event_type", "Placed", "aggregate_type", "Order",
				"aggregate_id", "o-1", "position", testPosition, "headers", `{"trace_id": "t", "id": "forged", "n": 1}`, "payload", `{"total":5}`},
			dest: "outbox.Order",
		},
		{
			name: "JSON null headers left out",
			edit: func(ev *schema.Event) { ev.Headers = []byte(" null ") },
			want: []string{"xadd", "outbox.Order", "*", "id", "e1", "event_type", "Placed", "aggregate_type", "Order",
				"aggregate_id", "o-1", "position", testPosition, "payload", `{"total":5}`},
			dest: "outbox.Order",
		},
		{
			name: "replayed",
			edit: func(ev *schema.Event) {
				ev.Replayed = replayed
				ev.Position = schema.Position{}
				ev.Headers = []byte(`{}`)
			},
			want: []string{"xadd", "outbox.Order", "*", "id", "e1", "event_type", "Placed", "aggregate_type", "Order",
				"aggregate_id", "o-1", "position", strings.Repeat("0", 24), "replayed", "true", "replay_started", "2026-12-01T09:00:00.123456789Z",
				"headers", "{}", "payload", `{"total":5}`},
			dest: "outbox.Order",
		},
		{
			name: "trimmed, per aggregate",
			cfg:  Config{MaxLen: 1000, Stream: "s:{aggregate_type}:{aggregate_id}"},
			edit: func(ev *schema.Event) { ev.Payload = nil },
			want: []string{"xadd", "s:Order:o-1", "maxlen", "~", "1000", "*", "id", "e1", "event_type", "Placed", "aggregate_type", "Order",
				"aggregate_id", "o-1", "position", testPosition, "payload", ""},
			dest: "s:Order:*",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.URL = "redis://127.0.0.1"
			m := newTestMapper(t, tc.cfg)
			ev := testEvent()
			tc.edit(ev)
			msg, dest, err := m.Map(ev)
			if err != nil {
				t.Fatalf("Map: %v", err)
			}
			if diff := cmp.Diff(tc.want, words(msg.args)); diff != "" {
				t.Errorf("Map command (-want +got):\n%s", diff)
			}
			if dest != tc.dest || msg.id != ev.ID || msg.stream != tc.want[1] {
				t.Errorf("Map: dest %q, id %q, stream %q; want %q, %q, %q", dest, msg.id, msg.stream, tc.dest, ev.ID, tc.want[1])
			}
		})
	}
}

// size returns the bytes Map counts of a command line: the key and every
// name and value after the entry ID.
func size(args []any) int {
	w := words(args)
	n := len(w[1])
	for i, a := range w {
		if a == "*" {
			for _, f := range w[i+1:] {
				n += len(f)
			}
			return n
		}
	}
	return -1
}

func TestMapErrors(t *testing.T) {
	base := Config{URL: "redis://127.0.0.1", MaxMessageBytes: minMessageBytes}
	full := testEvent()
	full.Payload = nil
	msg, _, err := newTestMapper(t, base).Map(full)
	if err != nil {
		t.Fatal(err)
	}
	room := minMessageBytes - size(msg.args) // payload bytes that fit exactly

	for _, tc := range []struct {
		name   string
		cfg    Config
		edit   func(ev *schema.Event)
		reason string // "" means no error
	}{
		{"headers an array", base, func(ev *schema.Event) { ev.Headers = []byte(`["a"]`) }, delivery.ReasonHeaders},
		{"headers a string", base, func(ev *schema.Event) { ev.Headers = []byte(`"a"`) }, delivery.ReasonHeaders},
		{"headers not JSON", base, func(ev *schema.Event) { ev.Headers = []byte(`{"a":`) }, delivery.ReasonHeaders},
		{"empty key", Config{URL: base.URL, Stream: "{aggregate_type}"}, func(ev *schema.Event) { ev.AggregateType = "" }, delivery.ReasonDestination},
		{"empty aggregate type in the key", Config{URL: base.URL, Stream: "outbox:{aggregate_type}"}, func(ev *schema.Event) { ev.AggregateType = "" }, delivery.ReasonDestination},
		{"the dead-letter key", Config{URL: base.URL, Stream: "{aggregate_type}"}, func(ev *schema.Event) { ev.AggregateType = DefaultDeadLetterStream }, delivery.ReasonDestination},
		{"payload at the limit", base, func(ev *schema.Event) { ev.Payload = make([]byte, room) }, ""},
		{"payload one byte over", base, func(ev *schema.Event) { ev.Payload = make([]byte, room+1) }, delivery.ReasonSize},
		{"headers count", base, func(ev *schema.Event) {
			ev.Payload = make([]byte, room)
			ev.Headers = []byte(`{}`)
		}, delivery.ReasonSize},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev := testEvent()
			tc.edit(ev)
			_, _, err := newTestMapper(t, tc.cfg).Map(ev)
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("Map: %v", err)
				}
				return
			}
			var pe *delivery.PermanentError
			if !errors.As(err, &pe) || pe.Reason != tc.reason {
				t.Fatalf("Map = %v, want a PermanentError of reason %q", err, tc.reason)
			}
			if !strings.Contains(err.Error(), ev.ID) {
				t.Errorf("Map = %v, which does not name event %s", err, ev.ID)
			}
		})
	}
}

func TestDeadLetter(t *testing.T) {
	cause := errors.New("WRONGTYPE Operation against a key holding the wrong kind of value")
	for _, tc := range []struct {
		name   string
		cfg    Config
		edit   func(ev *schema.Event)
		reason string
		want   []string // field names and values; "?" matches any value
	}{
		{
			name:   "rejected",
			edit:   func(ev *schema.Event) { ev.Headers = []byte(`{"a":"b"}`) },
			reason: delivery.ReasonRejected,
			want: []string{"id", "e1", "event_type", "Placed", "aggregate_type", "Order", "aggregate_id", "o-1", "position", testPosition,
				"dlq_reason", "rejected", "dlq_error", cause.Error(), "dlq_attempts", "3", "dlq_source_lsn", "0/16B3748", "dlq_time", "?",
				"dlq_table", "public.outbox", "dlq_topic", "outbox.Order", "dlq_headers", `{"a":"b"}`, "payload", `{"total":5}`},
		},
		{
			name:   "too large: no payload",
			reason: delivery.ReasonSize,
			edit:   func(*schema.Event) {},
			want: []string{"id", "e1", "event_type", "Placed", "aggregate_type", "Order", "aggregate_id", "o-1", "position", testPosition,
				"dlq_reason", "size", "dlq_error", cause.Error(), "dlq_attempts", "3", "dlq_source_lsn", "0/16B3748", "dlq_time", "?",
				"dlq_table", "public.outbox", "dlq_topic", "outbox.Order", "dlq_payload_omitted", "true"},
		},
		{
			name:   "payload over the limit left out",
			cfg:    Config{MaxMessageBytes: minMessageBytes},
			reason: delivery.ReasonHeaders,
			edit:   func(ev *schema.Event) { ev.Payload = make([]byte, minMessageBytes) },
			want: []string{"id", "e1", "event_type", "Placed", "aggregate_type", "Order", "aggregate_id", "o-1", "position", testPosition,
				"dlq_reason", "headers", "dlq_error", cause.Error(), "dlq_attempts", "3", "dlq_source_lsn", "0/16B3748", "dlq_time", "?",
				"dlq_table", "public.outbox", "dlq_topic", "outbox.Order", "dlq_payload_omitted", "true"},
		},
		{
			name:   "no aggregate ID",
			reason: delivery.ReasonAggregateID,
			edit:   func(ev *schema.Event) { ev.AggregateID = "" },
			want: []string{"id", "e1", "event_type", "Placed", "aggregate_type", "Order", "position", testPosition,
				"dlq_reason", "aggregate_id", "dlq_error", cause.Error(), "dlq_attempts", "3", "dlq_source_lsn", "0/16B3748", "dlq_time", "?",
				"dlq_table", "public.outbox", "dlq_topic", "outbox.Order", "payload", `{"total":5}`},
		},
		{
			name:   "malformed message: no destination",
			reason: delivery.ReasonContent,
			edit: func(ev *schema.Event) {
				*ev = schema.Event{ID: "m1", Prefix: "outbox", Payload: []byte("not json"), Malformed: schema.ErrContent,
					Position: schema.Position{CommitLSN: 0x10, Index: 1}}
			},
			want: []string{"id", "m1", "event_type", "", "aggregate_type", "", "position", "000000000000001000000001",
				"dlq_reason", "content", "dlq_error", cause.Error(), "dlq_attempts", "3", "dlq_source_lsn", "0/10", "dlq_time", "?",
				"dlq_table", "", "dlq_message_prefix", "outbox", "payload", "not json"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.URL = "redis://127.0.0.1"
			tc.cfg.MaxLen = 10 // never applied to dead letters
			m := newTestMapper(t, tc.cfg)
			ev := testEvent()
			tc.edit(ev)
			msg, dest, err := m.DeadLetter(ev, tc.reason, cause, 3)
			if err != nil {
				t.Fatalf("DeadLetter: %v", err)
			}
			got := words(msg.args)
			if diff := cmp.Diff([]string{"xadd", DefaultDeadLetterStream, "*"}, got[:3]); diff != "" {
				t.Fatalf("DeadLetter command start (-want +got):\n%s", diff)
			}
			got = got[3:]
			for i := 1; i < len(got) && i < len(tc.want); i += 2 {
				if tc.want[i] == "?" {
					if _, err := time.Parse(time.RFC3339Nano, got[i]); err != nil {
						t.Errorf("%s = %q: %v", got[i-1], got[i], err)
					}
					got[i] = "?"
				}
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("DeadLetter fields (-want +got):\n%s", diff)
			}
			if dest != DefaultDeadLetterStream || msg.stream != DefaultDeadLetterStream || msg.id != ev.ID {
				t.Errorf("DeadLetter: dest %q, stream %q, id %q", dest, msg.stream, msg.id)
			}
		})
	}
}

// BenchmarkMap measures Map of an event with headers and a 200-byte
// payload.
func BenchmarkMap(b *testing.B) {
	m, err := newMapper(Config{URL: "redis://127.0.0.1"}.withDefaults())
	if err != nil {
		b.Fatal(err)
	}
	ev := testEvent()
	ev.Headers = []byte(`{"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","tenant":"acme"}`)
	ev.Payload = []byte(`{"note":"` + strings.Repeat("x", 190) + `"}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := m.Map(ev); err != nil {
			b.Fatal(err)
		}
	}
}
