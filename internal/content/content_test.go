package content_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/outbox-relay/outbox-relay/internal/content"
	"github.com/outbox-relay/outbox-relay/schema"
)

const contentID = "0190f1c2-7a3b-7c4d-8e5f-0a1b2c3d4e5f"

func TestDecode(t *testing.T) {
	tests := []struct {
		name    string
		content string
		want    schema.Event
	}{
		{
			name:    "every field",
			content: `{"id":"` + contentID + `","aggregate_type":"order","aggregate_id":"42","event_type":"order.paid","payload":{"amount":4200},"headers":{"traceparent":"00-x"}}`,
			want: schema.Event{ID: contentID, AggregateType: "order", AggregateID: "42", EventType: "order.paid",
				Payload: []byte(`{"amount":4200}`), Headers: []byte(`{"traceparent":"00-x"}`)},
		},
		{
			name:    "as outbox_emit writes it",
			content: `{"id": "` + contentID + `", "headers": null, "payload": {"a": [1, "}"]}, "event_type": "e", "aggregate_id": "42", "aggregate_type": "order"}`,
			want:    schema.Event{ID: contentID, AggregateType: "order", AggregateID: "42", EventType: "e", Payload: []byte(`{"a": [1, "}"]}`)},
		},
		{
			name:    "no headers, spaces, unknown members",
			content: " {\n\t\"version\": 2, \"id\" : \"" + contentID + "\", \"aggregate_type\":\"t\",\"aggregate_id\":\"a\",\"event_type\":\"e\",\"payload\":null,\"extra\":{\"id\":1}}\n",
			want:    schema.Event{ID: contentID, AggregateType: "t", AggregateID: "a", EventType: "e", Payload: []byte("null")},
		},
		{
			name:    "payload scalars",
			content: `{"id":"` + contentID + `","aggregate_type":"t","aggregate_id":"a","event_type":"e","payload":-1.5e3}`,
			want:    schema.Event{ID: contentID, AggregateType: "t", AggregateID: "a", EventType: "e", Payload: []byte("-1.5e3")},
		},
		{
			name:    "escapes are unescaped",
			content: `{"id":"` + contentID + `","aggregate_type":"t\u00e9","aggregate_id":"a\"b","event_type":"e\\f","payload":"\u2713"}`,
			want:    schema.Event{ID: contentID, AggregateType: "té", AggregateID: `a"b`, EventType: `e\f`, Payload: []byte(`"\u2713"`)},
		},
		{
			name:    "upper-case ID in braces becomes canonical",
			content: `{"id":"{0190F1C2-7A3B-7C4D-8E5F-0A1B2C3D4E5F}","aggregate_type":"t","aggregate_id":"a","event_type":"e","payload":{}}`,
			want:    schema.Event{ID: contentID, AggregateType: "t", AggregateID: "a", EventType: "e", Payload: []byte(`{}`)},
		},
		{
			name:    "ID without hyphens",
			content: `{"id":"0190f1c27a3b7c4d8e5f0a1b2c3d4e5f","aggregate_type":"t","aggregate_id":"a","event_type":"e","payload":{}}`,
			want:    schema.Event{ID: contentID, AggregateType: "t", AggregateID: "a", EventType: "e", Payload: []byte(`{}`)},
		},
		{
			// As for a row: the Sink refuses it (aggregate_id, headers).
			name:    "empty aggregate ID and headers not an object",
			content: `{"id":"` + contentID + `","aggregate_type":"","aggregate_id":"","event_type":"","payload":1,"headers":[1]}`,
			want:    schema.Event{ID: contentID, Payload: []byte("1"), Headers: []byte("[1]")},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := schema.Event{Table: "stale", Prefix: "stale", Headers: []byte("stale")}
			if err := content.Decode([]byte(tt.content), &ev); err != nil {
				t.Fatalf("Decode(%s) = %v", tt.content, err)
			}
			if diff := cmp.Diff(tt.want, ev); diff != "" {
				t.Errorf("Decode(%s) mismatch (-want +got):\n%s", tt.content, diff)
			}
		})
	}
}

func TestDecodeMalformed(t *testing.T) {
	const rest = `"aggregate_type":"t","aggregate_id":"a","event_type":"e","payload":{}`
	tests := []struct {
		name    string
		content string
		why     string
		wantAgg string // the aggregate ID still read, for the dead letter's key
	}{
		{"empty", ``, "not valid JSON", ""},
		{"not JSON", `{"id": `, "not valid JSON", ""},
		{"trailing garbage", `{"id":"` + contentID + `",` + rest + `} x`, "not valid JSON", ""},
		{"array", `[1,2]`, "JSON array, not an object", ""},
		{"string", `"outbox"`, "JSON string, not an object", ""},
		{"null", `null`, "JSON null, not an object", ""},
		{"no id", `{` + rest + `}`, "lacks id", "a"},
		{"nothing", `{}`, "lacks id, aggregate_type, aggregate_id, event_type, payload", ""},
		{"id null", `{"id":null,` + rest + `}`, `"id" is a JSON null, want a string`, "a"},
		{"id a number", `{"id":42,` + rest + `}`, `"id" is a JSON number, want a string`, "a"},
		{"id no UUID", `{"id":"order-42",` + rest + `}`, `"id" is "order-42", not a UUID`, "a"},
		{"id empty", `{"id":"",` + rest + `}`, `"id" is "", not a UUID`, "a"},
		{"aggregate ID a number", `{"id":"` + contentID + `","aggregate_type":"t","aggregate_id":42,"event_type":"e","payload":{}}`, `"aggregate_id" is a JSON number, want a string`, ""},
		{"event type an object", `{"id":"` + contentID + `","aggregate_type":"t","aggregate_id":"a","event_type":{},"payload":{}}`, `"event_type" is a JSON object, want a string`, "a"},
		{"no payload", `{"id":"` + contentID + `","aggregate_type":"t","aggregate_id":"a","event_type":"e"}`, "lacks payload", "a"},
		{"member twice", `{"id":"` + contentID + `",` + rest + `,"aggregate_id":"b"}`, `has "aggregate_id" twice`, "a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ev schema.Event
			err := content.Decode([]byte(tt.content), &ev)
			switch {
			case err == nil:
				t.Fatalf("Decode(%s) = nil, want an error", tt.content)
			case !errors.Is(err, schema.ErrContent):
				t.Errorf("Decode(%s) = %v, want it to wrap ErrContent", tt.content, err)
			case !strings.Contains(err.Error(), tt.why):
				t.Errorf("Decode(%s) = %q, want it to say %q", tt.content, err, tt.why)
			}
			if ev.Malformed != err {
				t.Errorf("Malformed = %v, want the error returned", ev.Malformed)
			}
			if string(ev.Payload) != tt.content || ev.Headers != nil {
				t.Errorf("Payload %q Headers %q, want the whole content and no headers", ev.Payload, ev.Headers)
			}
			if ev.AggregateID != tt.wantAgg {
				t.Errorf("AggregateID = %q, want %q", ev.AggregateID, tt.wantAgg)
			}
		})
	}
}

// TestEmitContentDecodes checks that what Emit writes is what the relay
// reads: the same fields, headers included.
func TestEmitContentDecodes(t *testing.T) {
	msgs := []schema.Message{
		{ID: contentID, AggregateType: "order", AggregateID: "42", EventType: "order.paid", Payload: []byte(`{"html":"<b>&</b>","n":1}`),
			Headers: map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "lang": "grüße \"q\""}},
		{AggregateType: "customer", AggregateID: "c-1", EventType: "created", Payload: []byte(`[1, 2]`)},
	}
	var stmts []stmt
	db := execer{exec: func(sql string, args []any) error {
		stmts = append(stmts, stmt{sql, args})
		return nil
	}}
	if err := schema.Emit(t.Context(), db, msgs...); err != nil {
		t.Fatalf("Emit: %v", err)
	}
	if len(stmts) != len(msgs) {
		t.Fatalf("Emit ran %d statements, want one per message (%d)", len(stmts), len(msgs))
	}
	for i, s := range stmts {
		if s.sql != "SELECT pg_catalog.pg_logical_emit_message(true, $1, $2::text)" || len(s.args) != 2 || s.args[0] != schema.DefaultMessagePrefix {
			t.Fatalf("statement %d = %q %v, want pg_logical_emit_message with prefix %q", i, s.sql, s.args, schema.DefaultMessagePrefix)
		}
		var ev schema.Event
		text := s.args[1].(string)
		if err := content.Decode([]byte(text), &ev); err != nil {
			t.Fatalf("Decode(%s) = %v", text, err)
		}
		m := msgs[i]
		if m.ID == "" {
			m.ID = ev.ID // Emit made one
		}
		var compact bytes.Buffer // encoding/json compacts a RawMessage
		if err := json.Compact(&compact, m.Payload); err != nil {
			t.Fatal(err)
		}
		m.Payload = compact.Bytes()
		var headers map[string]string
		if ev.Headers != nil {
			if err := json.Unmarshal(ev.Headers, &headers); err != nil {
				t.Fatalf("headers %s: %v", ev.Headers, err)
			}
		}
		got := schema.Message{ID: ev.ID, AggregateType: ev.AggregateType, AggregateID: ev.AggregateID, EventType: ev.EventType, Payload: ev.Payload, Headers: headers}
		if diff := cmp.Diff(m, got, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("message %d: content %s decodes differently (-emitted +decoded):\n%s", i, text, diff)
		}
	}
}

// execer is a schema.Execer that hands each statement to exec.
type execer struct {
	exec func(sql string, args []any) error
}

func (e execer) Exec(_ context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	return pgconn.CommandTag{}, e.exec(sql, args)
}

type stmt struct {
	sql  string
	args []any
}

func TestDecodeAllocs(t *testing.T) {
	b := []byte(`{"id":"` + contentID + `","aggregate_type":"order","aggregate_id":"42","event_type":"order.paid","payload":{"amount":4200},"headers":{"k":"v"}}`)
	var ev schema.Event
	if n := testing.AllocsPerRun(100, func() {
		if err := content.Decode(b, &ev); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("Decode allocates %v times per message, want 0", n)
	}
}

func BenchmarkDecode(b *testing.B) {
	msg := []byte(`{"id":"` + contentID + `","aggregate_type":"order","aggregate_id":"order-42","event_type":"OrderPlaced","payload":{"order_id":"order-42","total":{"amount":"12.50","currency":"EUR"}},"headers":{"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"}}`)
	var ev schema.Event
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if err := content.Decode(msg, &ev); err != nil {
			b.Fatal(err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"id":"` + contentID + `","aggregate_type":"t","aggregate_id":"a","event_type":"e","payload":{"x":[1,{"y":"}"}]},"headers":null}`))
	f.Add([]byte(`{"id":"\u0030","payload":"\\"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var ev schema.Event
		err := content.Decode(b, &ev)
		if (err == nil) != (ev.Malformed == nil) {
			t.Errorf("Decode(%q) = %v with Malformed %v", b, err, ev.Malformed)
		}
	})
}
