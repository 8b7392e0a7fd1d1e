package schema_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/outbox-relay/outbox-relay/schema"
)

type orderPlaced struct {
	OrderID string   `json:"order_id"`
	Total   int      `json:"total_cents"`
	Lines   []string `json:"lines,omitempty"`
	secret  string
}

// money is a json.Marshaler.
type money int

func (m money) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]any{"amount": int(m), "currency": "EUR"})
}

// broken is a json.Marshaler that writes invalid JSON.
type broken struct{}

func (broken) MarshalJSON() ([]byte, error) { return []byte(`{"a":`), nil }

func TestNewMessage(t *testing.T) {
	tests := []struct {
		name    string
		payload any
		want    string // the payload, byte for byte
	}{
		{"struct with tags", orderPlaced{OrderID: "o-1", Total: 1250, secret: "x"}, `{"order_id":"o-1","total_cents":1250}`},
		{"pointer to struct", &orderPlaced{OrderID: "o-2", Lines: []string{"a"}}, `{"order_id":"o-2","total_cents":0,"lines":["a"]}`},
		{"map sorted by key", map[string]int{"b": 2, "a": 1}, `{"a":1,"b":2}`},
		{"json.Marshaler", money(42), `{"amount":42,"currency":"EUR"}`},
		{"string", "hello", `"hello"`},
		{"nil is null", nil, `null`},
		{"raw message kept as written", json.RawMessage(`{ "b": 1,  "a": [true] }`), `{ "b": 1,  "a": [true] }`},
		{"bytes are JSON text, not base64", []byte(`[1, 2]`), `[1, 2]`},
		{"escapes HTML as encoding/json does", map[string]string{"q": "<a&b>"}, `{"q":"\u003ca\u0026b\u003e"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := schema.NewMessage("order", "o-1", "order.placed", tt.payload)
			if err != nil {
				t.Fatalf("NewMessage(%#v): %v", tt.payload, err)
			}
			want := schema.Message{AggregateType: "order", AggregateID: "o-1", EventType: "order.placed",
				Payload: json.RawMessage(tt.want)}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("NewMessage(%#v) mismatch (-want +got):\n%s", tt.payload, diff)
			}
		})
	}
}

func TestNewMessageErrors(t *testing.T) {
	tests := []struct {
		name        string
		aggregateID string
		payload     any
		is          error  // the error must wrap it, if set
		mention     string // the error must contain it
	}{
		{"no aggregate id", "", map[string]int{"a": 1}, schema.ErrNoAggregateID, "order.placed"},
		{"unencodable", "o-1", make(chan int), nil, "encode payload"},
		{"unencodable value inside", "o-1", map[string]any{"f": func() {}}, nil, "encode payload"},
		{"marshaler writes invalid JSON", "o-1", broken{}, nil, "encode payload"},
		{"invalid raw message", "o-1", json.RawMessage(`{"a":`), nil, "not valid JSON"},
		{"nil raw message", "o-1", json.RawMessage(nil), nil, "not valid JSON"},
		{"bytes that are not JSON", "o-1", []byte("plain text"), nil, "not valid JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := schema.NewMessage("order", tt.aggregateID, "order.placed", tt.payload)
			if err == nil {
				t.Fatalf("NewMessage(%#v) = %+v, want an error", tt.payload, m)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("NewMessage(%#v) = %v, want it to wrap %v", tt.payload, err, tt.is)
			}
			if !strings.Contains(err.Error(), tt.mention) {
				t.Errorf("NewMessage(%#v) = %q, want it to mention %q", tt.payload, err, tt.mention)
			}
			if diff := cmp.Diff(schema.Message{}, m); diff != "" {
				t.Errorf("NewMessage(%#v) returned a message with its error (-want +got):\n%s", tt.payload, diff)
			}
		})
	}
}

func TestNewMessageRoundTrip(t *testing.T) {
	// A typed payload lands in the table as the JSON it encodes to.
	for _, w := range writers {
		t.Run(w.name, func(t *testing.T) {
			dsn, conn := newOutbox(t)
			m, err := schema.NewMessage("order", "o-7", "order.placed", orderPlaced{OrderID: "o-7", Total: 990, Lines: []string{"sku-1"}})
			if err != nil {
				t.Fatalf("NewMessage: %v", err)
			}
			if err := w.write(t, dsn, schema.Outbox{}, []schema.Message{m}); err != nil {
				t.Fatalf("insert: %v", err)
			}
			got := readRows(t, conn, schema.Outbox{})
			if diff := cmp.Diff(wantRows(t, []schema.Message{m}, got, true), got); diff != "" {
				t.Errorf("rows mismatch (-want +got):\n%s", diff)
			}
			var back orderPlaced
			if err := json.Unmarshal(m.Payload, &back); err != nil || back.OrderID != "o-7" || back.Total != 990 {
				t.Errorf("payload %s decodes to %+v (%v), want the event back", m.Payload, back, err)
			}
		})
	}
}

// An event type of the application's becomes the payload through
// encoding/json.
func ExampleNewMessage() {
	type orderPlaced struct {
		OrderID    string `json:"order_id"`
		TotalCents int    `json:"total_cents"`
	}
	msg, err := schema.NewMessage("order", "o-42", "order.placed", orderPlaced{OrderID: "o-42", TotalCents: 1250})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(msg.AggregateType, msg.AggregateID, msg.EventType, string(msg.Payload))
	// Output:
	// order o-42 order.placed {"order_id":"o-42","total_cents":1250}
}
