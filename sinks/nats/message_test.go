package nats

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pglogrepl"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/outbox-relay/outbox-relay/schema"
	"github.com/outbox-relay/outbox-relay/sinks/delivery"
)

// testBroker returns a broker that maps as a Sink with cfg would, without
// a connection.
func testBroker(t *testing.T, cfg Config) *broker {
	t.Helper()
	cfg = cfg.withDefaults()
	tmpl, err := parseSubjectTemplate(cfg.Subject)
	if err != nil {
		t.Fatal(err)
	}
	return &broker{cfg: cfg, subject: tmpl, maxBytes: cfg.MaxMessageBytes, deadLetterSubject: cfg.DeadLetterSubject}
}

func testEvent() *schema.Event {
	return &schema.Event{
		ID:            "0a6e1b1c-1",
		AggregateType: "order",
		AggregateID:   "42",
		EventType:     "Created",
		Payload:       []byte(`{"total":10}`),
		Headers:       []byte(`{"trace_id":"abc","n":7,"empty":null,"id":"forged"}`),
		Position:      schema.Position{CommitLSN: pglogrepl.LSN(0x16B3748), Index: 2},
		Table:         "public.outbox",
	}
}

func TestMap(t *testing.T) {
	b := testBroker(t, Config{})
	ev := testEvent()
	msg, dest, err := b.Map(ev)
	if err != nil {
		t.Fatalf("Map: %v", err)
	}
	want := &natsgo.Msg{
		Subject: "outbox.order.42",
		Header: natsgo.Header{
			delivery.HeaderID:            {ev.ID},
			delivery.HeaderEventType:     {"Created"},
			delivery.HeaderAggregateType: {"order"},
			delivery.HeaderPosition:      {ev.Position.String()},
			"trace_id":                   {"abc"},
			"n":                          {"7"},
			"empty":                      {""},
			delivery.HeaderAggregateID:   {"42"},
			jetstream.MsgIDHeader:        {ev.ID},
		},
		Data: ev.Payload,
	}
	if diff := cmp.Diff(want, msg, cmp.AllowUnexported(natsgo.Msg{})); diff != "" {
		t.Errorf("Map (-want +got):\n%s", diff)
	}
	if dest != "outbox.order.*" {
		t.Errorf("Map destination = %q, want outbox.order.*", dest)
	}

	ev.Replayed = time.Date(2026, 12, 1, 10, 0, 0, 5, time.UTC)
	msg, _, err = b.Map(ev)
	if err != nil {
		t.Fatalf("Map of a replayed event: %v", err)
	}
	if got := []string{msg.Header.Get(delivery.HeaderReplayed), msg.Header.Get(delivery.HeaderReplayStarted)}; !cmp.Equal(got, []string{"true", "2026-12-01T10:00:00.000000005Z"}) {
		t.Errorf("replayed headers = %q", got)
	}
	// A replay is not a re-send: JetStream must store it even within the
	// duplicate window of the streamed event, and drop its own re-sends.
	if got, want := msg.Header.Get(jetstream.MsgIDHeader), ev.ID+"/replay/2026-12-01T10:00:00.000000005Z"; got != want {
		t.Errorf("Nats-Msg-Id of a replayed event = %q, want %q", got, want)
	}
}

func TestMapRefuses(t *testing.T) {
	for _, tt := range []struct {
		name    string
		cfg     Config
		change  func(ev *schema.Event)
		reason  string
		wantErr string
	}{
		{"EmptyTokenInID", Config{}, func(ev *schema.Event) { ev.AggregateID = "a..b" }, delivery.ReasonDestination, "empty token"},
		{"WildcardInType", Config{}, func(ev *schema.Event) { ev.AggregateType = "ord*" }, delivery.ReasonDestination, "'*'"},
		{"HeadersNotObject", Config{}, func(ev *schema.Event) { ev.Headers = []byte(`[1]`) }, delivery.ReasonHeaders, "not an object"},
		{"HeaderNameWithSpace", Config{}, func(ev *schema.Event) { ev.Headers = []byte(`{"trace id":"x"}`) }, delivery.ReasonHeaders, `"trace id" holds ' '`},
		{"HeaderNameWithColon", Config{}, func(ev *schema.Event) { ev.Headers = []byte(`{"a:b":"x"}`) }, delivery.ReasonHeaders, `holds ':'`},
		{"HeaderNameNonASCII", Config{}, func(ev *schema.Event) { ev.Headers = []byte(`{"été":"x"}`) }, delivery.ReasonHeaders, "NATS header names"},
		{"HeaderNats", Config{}, func(ev *schema.Event) { ev.Headers = []byte(`{"Nats-Rollup":"all"}`) }, delivery.ReasonHeaders, "begins with Nats-"},
		{"HeaderNatsLowerCase", Config{}, func(ev *schema.Event) { ev.Headers = []byte(`{"nats-msg-id":"x"}`) }, delivery.ReasonHeaders, "begins with Nats-"},
		{"TooLarge", Config{MaxMessageBytes: 1 << 10}, func(ev *schema.Event) { ev.Payload = bytes.Repeat([]byte("x"), 1<<10) }, delivery.ReasonSize, "exceeds the limit of 1024 bytes"},
		{"HeadersTooLarge", Config{MaxMessageBytes: 1 << 20}, func(ev *schema.Event) {
			ev.Headers = []byte(`{"big":"` + strings.Repeat("x", 1<<16) + `"}`)
		}, delivery.ReasonSize, "65535 of headers"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ev := testEvent()
			tt.change(ev)
			msg, _, err := testBroker(t, tt.cfg).Map(ev)
			var pe *delivery.PermanentError
			if !errors.As(err, &pe) || pe.Reason != tt.reason || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Map = %v, %v; want a permanent %s error with %q", msg, err, tt.reason, tt.wantErr)
			}
		})
	}
}

// TestMapSizeLimit checks that an event of exactly the limit passes Map,
// and one a byte larger does not. TestSizeAtServerLimit checks the count
// against the client's.
func TestMapSizeLimit(t *testing.T) {
	b := testBroker(t, Config{MaxMessageBytes: 4 << 10})
	ev := testEvent()
	ev.Payload = bytes.Repeat([]byte("x"), b.maxBytes-MessageSize(Config{MaxMessageBytes: 4 << 10}, ev)+len(ev.Payload))
	if _, _, err := b.Map(ev); err != nil {
		t.Fatalf("Map of an event of exactly the limit: %v", err)
	}
	ev.Payload = append(ev.Payload, 'x')
	if _, _, err := b.Map(ev); err == nil {
		t.Error("Map took an event one byte over the limit")
	}
}

func TestDeadLetter(t *testing.T) {
	for _, tt := range []struct {
		name        string
		cfg         Config
		change      func(ev *schema.Event)
		reason      string
		cause       error
		wantPayload bool
		wantHeaders map[string]string // checked values; "" means absent
	}{
		{
			name: "Rejected", reason: delivery.ReasonRejected, cause: errors.New("refused"), wantPayload: true,
			wantHeaders: map[string]string{
				delivery.HeaderDLQReason: delivery.ReasonRejected, delivery.HeaderDLQError: "refused", delivery.HeaderDLQAttempts: "3",
				delivery.HeaderDLQTopic: "outbox.order.42", delivery.HeaderAggregateID: "42", jetstream.MsgIDHeader: "0a6e1b1c-1",
				delivery.HeaderDLQTable: "public.outbox", delivery.HeaderDLQPayloadOmitted: "",
				delivery.HeaderDLQHeaders: `{"trace_id":"abc","n":7,"empty":null,"id":"forged"}`,
			},
		},
		{
			name: "Size", reason: delivery.ReasonSize, cause: errors.New("too big"),
			wantHeaders: map[string]string{delivery.HeaderDLQPayloadOmitted: "true"},
		},
		{
			name: "PayloadOverLimit", cfg: Config{MaxMessageBytes: 2 << 10}, reason: delivery.ReasonContent, cause: errors.New("not JSON"),
			change:      func(ev *schema.Event) { ev.Payload = bytes.Repeat([]byte("x"), 2<<10) },
			wantHeaders: map[string]string{delivery.HeaderDLQPayloadOmitted: "true", delivery.HeaderDLQReason: delivery.ReasonContent},
		},
		{
			name: "BadSubject", reason: delivery.ReasonDestination, cause: errors.New("bad subject"), wantPayload: true,
			change:      func(ev *schema.Event) { ev.AggregateID = "a b" },
			wantHeaders: map[string]string{delivery.HeaderDLQTopic: "", delivery.HeaderAggregateID: "a b"},
		},
		{
			name: "NoAggregateID", reason: delivery.ReasonAggregateID, cause: schema.ErrNoAggregateID, wantPayload: true,
			change:      func(ev *schema.Event) { ev.AggregateID = "" },
			wantHeaders: map[string]string{delivery.HeaderAggregateID: "", delivery.HeaderDLQTopic: ""},
		},
		{
			name: "HugeHeadersAndError", cfg: Config{MaxMessageBytes: 8 << 10}, reason: delivery.ReasonRejected,
			cause:       errors.New(strings.Repeat("e", 5000)),
			change:      func(ev *schema.Event) { ev.Headers = []byte(`{"big":"` + strings.Repeat("h", 5000) + `"}`) },
			wantPayload: true,
			wantHeaders: map[string]string{delivery.HeaderDLQHeaders: "", delivery.HeaderDLQError: strings.Repeat("e", maxDeadLetterError)},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := testBroker(t, tt.cfg)
			ev := testEvent()
			if tt.change != nil {
				tt.change(ev)
			}
			msg, dest, err := b.DeadLetter(ev, tt.reason, tt.cause, 3)
			if err != nil {
				t.Fatalf("DeadLetter: %v", err)
			}
			if msg.Subject != DefaultDeadLetterSubject || dest != DefaultDeadLetterSubject {
				t.Errorf("DeadLetter subject %q destination %q, want %q", msg.Subject, dest, DefaultDeadLetterSubject)
			}
			if got := msg.Data != nil; got != tt.wantPayload {
				t.Errorf("DeadLetter carries the payload: %v, want %v", got, tt.wantPayload)
			}
			for k, want := range tt.wantHeaders {
				if got := msg.Header.Get(k); got != want {
					t.Errorf("header %s = %.40q, want %.40q", k, got, want)
				}
			}
			if n := headerBytes(msg.Header) + len(msg.Data); n > b.maxBytes {
				t.Errorf("dead letter of %d bytes exceeds the limit of %d", n, b.maxBytes)
			}
		})
	}
}
