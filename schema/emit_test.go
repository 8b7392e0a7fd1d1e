package schema_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/outbox-relay/outbox-relay/schema"
)

func TestEmitPrefixAndSQL(t *testing.T) {
	msg := schema.Message{AggregateType: "order", AggregateID: "42", EventType: "paid", Payload: []byte(`{}`)}
	tests := []struct {
		name   string
		emit   func(r *recorder) error
		prefix string
	}{
		{"Emit", func(r *recorder) error { return schema.Emit(t.Context(), r, msg) }, "outbox"},
		{"EmitSQL", func(r *recorder) error { return schema.EmitSQL(t.Context(), r, msg) }, "outbox"},
		{"Outbox.Emit with a prefix", func(r *recorder) error {
			return schema.Outbox{MessagePrefix: "billing"}.Emit(t.Context(), r, msg)
		}, "billing"},
		{"Outbox.EmitSQL with a prefix", func(r *recorder) error {
			return schema.Outbox{MessagePrefix: "billing"}.EmitSQL(t.Context(), r, msg)
		}, "billing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r recorder
			if err := tt.emit(&r); err != nil {
				t.Fatal(err)
			}
			if len(r.stmts) != 1 || r.stmts[0].args[0] != tt.prefix {
				t.Fatalf("statements %+v, want one with prefix %q", r.stmts, tt.prefix)
			}
		})
	}
}

func TestEmitRejects(t *testing.T) {
	good := schema.Message{AggregateType: "order", AggregateID: "42", EventType: "paid", Payload: []byte(`{}`)}
	tests := []struct {
		name string
		bad  func(m *schema.Message)
		want string
		is   error
	}{
		{"no aggregate ID", func(m *schema.Message) { m.AggregateID = "" }, "aggregate id", schema.ErrNoAggregateID},
		{"payload not JSON", func(m *schema.Message) { m.Payload = []byte(`{`) }, "payload is not valid JSON", nil},
		{"no payload", func(m *schema.Message) { m.Payload = nil }, "payload is not valid JSON", nil},
		{"ID not a UUID", func(m *schema.Message) { m.ID = "order-42" }, `ID "order-42" is not a UUID`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bad := good
			tt.bad(&bad)
			var r recorder
			// The bad message comes second: nothing is written.
			err := schema.Emit(t.Context(), &r, good, bad)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Emit = %v, want an error saying %q", err, tt.want)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("Emit = %v, want it to wrap %v", err, tt.is)
			}
			if len(r.stmts) != 0 {
				t.Errorf("Emit ran %d statements before failing, want none", len(r.stmts))
			}
		})
	}
}

func TestEmitExecError(t *testing.T) {
	r := recorder{err: errors.New("connection reset")}
	err := schema.Emit(t.Context(), &r, schema.Message{AggregateID: "a", Payload: []byte(`1`)})
	if err == nil || !strings.Contains(err.Error(), `emit outbox message 1 of 1 with prefix "outbox": connection reset`) {
		t.Errorf("Emit = %v, want the statement's error with the message and prefix", err)
	}
}

func TestEmitTrace(t *testing.T) {
	const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	ctx := schema.ContextWithTrace(context.Background(), parent, "")
	var r recorder
	if err := schema.Emit(ctx, &r, schema.Message{AggregateID: "a", Payload: []byte(`1`)}); err != nil {
		t.Fatal(err)
	}
	var content struct{ Headers json.RawMessage }
	if err := json.Unmarshal([]byte(r.stmts[0].args[1].(string)), &content); err != nil {
		t.Fatal(err)
	}
	if want := `{"traceparent":"` + parent + `"}`; string(content.Headers) != want {
		t.Errorf("headers %s, want %s", content.Headers, want)
	}
}
