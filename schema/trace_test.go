package schema_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"

	"github.com/outbox-relay/outbox-relay/schema"
)

const (
	traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	tracestate  = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
)

func TestContextWithTrace(t *testing.T) {
	tests := []struct {
		name       string
		parent     string
		state      string
		wantParent string
		wantState  string
	}{
		{name: "valid", parent: traceparent, state: tracestate, wantParent: traceparent, wantState: tracestate},
		{name: "no tracestate", parent: traceparent, wantParent: traceparent},
		{name: "not sampled", parent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
			wantParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"},
		{name: "later version, same length", parent: "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
			wantParent: "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		{name: "later version with more fields", parent: "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds",
			wantParent: "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds"},
		{name: "tracestate with a control character is dropped", parent: traceparent, state: "a=1\nb=2", wantParent: traceparent},
		{name: "tracestate beyond ASCII is dropped", parent: traceparent, state: "a=ü", wantParent: traceparent},

		{name: "empty", parent: "", state: tracestate},
		{name: "upper case hex", parent: "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01"},
		{name: "version ff", parent: "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		{name: "zero trace id", parent: "00-00000000000000000000000000000000-00f067aa0ba902b7-01"},
		{name: "zero parent id", parent: "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"},
		{name: "version 00 with more fields", parent: traceparent + "-extra"},
		{name: "later version, more without a dash", parent: "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x"},
		{name: "short trace id", parent: "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01"},
		{name: "long parent id", parent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7a-01"},
		{name: "underscores", parent: "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01"},
		{name: "not hex", parent: "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01"},
		{name: "bad flags", parent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x"},
		{name: "surrounding space", parent: " " + traceparent},
		{name: "a B3 trace id", parent: "4bf92f3577b34da6a3ce929d0e0e4736"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := schema.ContextWithTrace(t.Context(), tt.parent, tt.state)
			parent, state := schema.TraceFromContext(ctx)
			if parent != tt.wantParent || state != tt.wantState {
				t.Errorf("TraceFromContext(ContextWithTrace(ctx, %q, %q)) = %q, %q; want %q, %q",
					tt.parent, tt.state, parent, state, tt.wantParent, tt.wantState)
			}
		})
	}
}

func TestContextWithTraceInvalidKeepsOuter(t *testing.T) {
	// An invalid trace context does not hide a valid one set before it.
	ctx := schema.ContextWithTrace(t.Context(), traceparent, tracestate)
	ctx = schema.ContextWithTrace(ctx, "garbage", "x=1")
	if parent, state := schema.TraceFromContext(ctx); parent != traceparent || state != tracestate {
		t.Errorf("TraceFromContext = %q, %q; want the outer %q, %q", parent, state, traceparent, tracestate)
	}
	if parent, state := schema.TraceFromContext(context.Background()); parent != "" || state != "" {
		t.Errorf("TraceFromContext(Background) = %q, %q; want empty", parent, state)
	}
}

// headersArg returns the headers argument of each row r was given, decoded;
// nil for SQL NULL. Rows have six parameters, headers last.
func headersArg(t *testing.T, r *recorder) []map[string]string {
	t.Helper()
	var out []map[string]string
	for _, s := range r.stmts {
		for i := 5; i < len(s.args); i += 6 {
			if s.args[i] == nil {
				out = append(out, nil)
				continue
			}
			var h map[string]string
			if err := json.Unmarshal([]byte(s.args[i].(string)), &h); err != nil {
				t.Fatalf("headers argument %v: %v", s.args[i], err)
			}
			out = append(out, h)
		}
	}
	return out
}

func TestInsertTrace(t *testing.T) {
	traced := schema.ContextWithTrace(context.Background(), traceparent, tracestate)
	msgs := func() []schema.Message {
		ms := numbered(4)
		ms[1].Headers = map[string]string{"tenant": "acme"}
		ms[2].Headers = map[string]string{"traceparent": "00-11111111111111111111111111111111-2222222222222222-01", "tenant": "acme"}
		ms[3].Headers = map[string]string{"tracestate": "mine=1"}
		return ms
	}
	both := map[string]string{"traceparent": traceparent, "tracestate": tracestate}
	tests := []struct {
		name   string
		ctx    context.Context
		outbox schema.Outbox
		want   []map[string]string
	}{
		{
			name: "from the context",
			ctx:  traced,
			want: []map[string]string{
				both,
				{"traceparent": traceparent, "tracestate": tracestate, "tenant": "acme"},
				{"traceparent": "00-11111111111111111111111111111111-2222222222222222-01", "tenant": "acme"}, // its own wins
				{"traceparent": traceparent, "tracestate": "mine=1"},
			},
		},
		{
			name: "no trace context",
			ctx:  context.Background(),
			want: []map[string]string{nil, {"tenant": "acme"},
				{"traceparent": "00-11111111111111111111111111111111-2222222222222222-01", "tenant": "acme"}, {"tracestate": "mine=1"}},
		},
		{
			name: "Trace hook replaces the context",
			ctx:  traced,
			outbox: schema.Outbox{Trace: func(context.Context) (string, string) {
				return "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", ""
			}},
			want: []map[string]string{
				{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
				{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "tenant": "acme"},
				{"traceparent": "00-11111111111111111111111111111111-2222222222222222-01", "tenant": "acme"},
				{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "tracestate": "mine=1"},
			},
		},
		{
			name:   "invalid from the hook is skipped",
			ctx:    traced,
			outbox: schema.Outbox{Trace: func(context.Context) (string, string) { return "not-a-traceparent", tracestate }},
			want: []map[string]string{nil, {"tenant": "acme"},
				{"traceparent": "00-11111111111111111111111111111111-2222222222222222-01", "tenant": "acme"}, {"tracestate": "mine=1"}},
		},
		{
			name: "invalid tracestate from the hook is dropped",
			ctx:  context.Background(),
			outbox: schema.Outbox{Trace: func(context.Context) (string, string) {
				return traceparent, "a=1\r\nX-Injected: yes"
			}},
			want: []map[string]string{
				{"traceparent": traceparent},
				{"traceparent": traceparent, "tenant": "acme"},
				{"traceparent": "00-11111111111111111111111111111111-2222222222222222-01", "tenant": "acme"},
				{"traceparent": traceparent, "tracestate": "mine=1"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := msgs()
			var pgxRec, sqlRec recorder
			if err := tt.outbox.Insert(tt.ctx, &pgxRec, in...); err != nil {
				t.Fatalf("Insert: %v", err)
			}
			if err := tt.outbox.InsertSQL(tt.ctx, &sqlRec, in...); err != nil {
				t.Fatalf("InsertSQL: %v", err)
			}
			if diff := cmp.Diff(tt.want, headersArg(t, &pgxRec)); diff != "" {
				t.Errorf("Insert headers mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.want, headersArg(t, &sqlRec)); diff != "" {
				t.Errorf("InsertSQL headers mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(msgs(), in); diff != "" {
				t.Errorf("Insert changed the caller's messages (-before +after):\n%s", diff)
			}
		})
	}
}

func TestInsertTraceWithoutHeadersColumn(t *testing.T) {
	// A table without a headers column cannot carry the trace: the insert
	// goes ahead without it rather than failing.
	ctx := schema.ContextWithTrace(t.Context(), traceparent, tracestate)
	ob := schema.Outbox{Table: schema.Table{Schema: "public", Name: "outboxevent"}, Columns: schema.DebeziumColumns}
	var r recorder
	if err := ob.Insert(ctx, &r, numbered(3)...); err != nil {
		t.Fatalf("Insert into a table without headers, trace in context: %v", err)
	}
	for i, s := range r.stmts {
		if len(s.args) != 15 {
			t.Errorf("statement %d binds %d parameters, want 5 per row for 3 rows", i, len(s.args))
		}
	}
}

func TestInsertTraceRoundTrip(t *testing.T) {
	for _, w := range writers {
		t.Run(w.name, func(t *testing.T) {
			dsn, conn := newOutbox(t)
			msgs := numbered(3)
			msgs[1].Headers = map[string]string{"tenant": "acme"}
			ob := schema.Outbox{Trace: func(context.Context) (string, string) { return traceparent, tracestate }}
			if err := w.write(t, dsn, ob, msgs); err != nil {
				t.Fatalf("insert: %v", err)
			}
			got := readRows(t, conn, schema.Outbox{})
			msgs[0].Headers = map[string]string{"traceparent": traceparent, "tracestate": tracestate}
			msgs[1].Headers = map[string]string{"traceparent": traceparent, "tracestate": tracestate, "tenant": "acme"}
			msgs[2].Headers = map[string]string{"traceparent": traceparent, "tracestate": tracestate}
			if diff := cmp.Diff(wantRows(t, msgs, got, true), got); diff != "" {
				t.Errorf("rows mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// An HTTP handler continues the caller's trace in the events it writes:
// Insert adds the traceparent and tracestate headers to each message, and
// the relay carries them to the Kafka records.
func ExampleContextWithTrace() {
	incoming := http.Header{} // the request's headers
	incoming.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")

	ctx := schema.ContextWithTrace(context.Background(), incoming.Get("traceparent"), incoming.Get("tracestate"))
	// ... schema.Insert(ctx, tx, msg) in the request's transaction ...

	parent, _ := schema.TraceFromContext(ctx)
	fmt.Println(parent)
	// Output:
	// 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
}

// With OpenTelemetry, Trace takes the trace context of the span current in
// ctx through the W3C propagator (go.opentelemetry.io/otel/propagation):
//
//	outbox := schema.Outbox{Trace: func(ctx context.Context) (string, string) {
//		c := propagation.MapCarrier{}
//		propagation.TraceContext{}.Inject(ctx, c)
//		return c["traceparent"], c["tracestate"]
//	}}
//
// Any other tracer plugs in the same way; here the trace context is a
// value the application's middleware put in the context.
func ExampleOutbox_trace() {
	type traceKey struct{}
	outbox := schema.Outbox{Trace: func(ctx context.Context) (string, string) {
		h, _ := ctx.Value(traceKey{}).(http.Header)
		return h.Get("traceparent"), h.Get("tracestate")
	}}

	ctx := context.Background()
	conn, err := pgx.Connect(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close(ctx)

	ctx = context.WithValue(ctx, traceKey{}, http.Header{"Traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}})
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		return outbox.Insert(ctx, tx, schema.Message{
			AggregateType: "order",
			AggregateID:   "o-42",
			EventType:     "order.paid",
			Payload:       json.RawMessage(`{"order_id":"o-42"}`),
		})
	})
	if err != nil {
		log.Fatal(err)
	}
}
