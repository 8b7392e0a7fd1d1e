package nats_test

import (
	"bytes"
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outbox-relay/outbox-relay/schema"
	"github.com/outbox-relay/outbox-relay/sinks/delivery"
	"github.com/outbox-relay/outbox-relay/sinks/nats"
	"github.com/outbox-relay/outbox-relay/sinks/nats/natstest"
)

// TestDuplicateWindow publishes the same events through two sinks, as a
// relay restarted after a crash does with the events it had not
// confirmed: the stream holds each event once, and the second sink counts
// every one of its messages as a duplicate.
func TestDuplicateWindow(t *testing.T) {
	srv := natstest.Start(t)
	evs := events("dup", 500, 25)
	first, _ := setUp(t, srv, nats.Config{}, nil)
	a := newAcks(t, len(evs))
	publish(first, a, evs)
	a.wait(t)

	second, reg := setUp(t, srv, nats.Config{}, nil)
	b := newAcks(t, len(evs))
	publish(second, b, evs)
	b.wait(t)
	for _, acks := range []*acks{a, b} {
		if f := acks.failed(); len(f) > 0 {
			t.Fatalf("%d events failed: %v", len(f), f)
		}
	}
	msgs := srv.Read(t, nats.DefaultStream)
	if copies := checkOrder(t, msgs, evs); copies != 0 || len(msgs) != len(evs) {
		t.Errorf("the stream holds %d messages with %d copies, want %d without copies", len(msgs), copies, len(evs))
	}
	dups := counter(t, reg, "outbox_relay_nats_duplicates_total")
	if dups != float64(len(evs)) {
		t.Errorf("second sink counted %v duplicates, want %d", dups, len(evs))
	}
	t.Logf("published %d events twice: the stream holds %d messages; %v acknowledged as duplicates", len(evs), len(msgs), dups)
}

// TestOutageUnderPublishing stops the server while events are on their
// way, publishes more, and starts it again while publishing still more:
// every event is stored once, in order, and no done reports an error.
func TestOutageUnderPublishing(t *testing.T) {
	srv := natstest.Start(t)
	s, reg := setUp(t, srv, nats.Config{}, nil)
	evs := events("outage", 3000, 30)
	a := newAcks(t, len(evs))
	publish(s, a, evs[:1000])
	eventually(t, "some events acknowledged", func() bool { return a.count() >= 200 })
	srv.Stop(t)
	publish(s, a, evs[1000:2000])
	eventually(t, "messages sent again", func() bool { return counter(t, reg, "outbox_relay_sink_retries_total") > 0 })
	if f := a.failed(); len(f) > 0 {
		t.Fatalf("during the outage %d events failed: %v", len(f), f)
	}
	srv.Start(t)
	publish(s, a, evs[2000:])
	a.wait(t)
	if f := a.failed(); len(f) > 0 {
		t.Fatalf("%d events failed: %v", len(f), f)
	}
	msgs := srv.Read(t, nats.DefaultStream)
	copies := checkOrder(t, msgs, evs)
	t.Logf("%d events across an outage: %d stored, %d copies, %v messages sent again, %v duplicates dropped", len(evs), len(msgs), copies,
		counter(t, reg, "outbox_relay_sink_retries_total"), counter(t, reg, "outbox_relay_nats_duplicates_total"))
	if copies != 0 {
		t.Errorf("the stream holds %d copies; the duplicate window should have dropped them", copies)
	}
}

// TestServerDownAtStart creates a sink while the server is down: New
// succeeds, the events are held, and they flow in order once the server
// starts.
func TestServerDownAtStart(t *testing.T) {
	srv := natstest.Start(t)
	setUp(t, srv, nats.Config{}, nil) // the streams, which the stop keeps
	srv.Stop(t)
	s, reg := newSink(t, srv, nats.Config{}, nil)
	evs := events("early", 300, 10)
	a := newAcks(t, len(evs))
	publish(s, a, evs)
	eventually(t, "messages sent again", func() bool { return counter(t, reg, "outbox_relay_sink_retries_total") > 0 })
	if n := a.count(); n != 0 {
		t.Fatalf("%d events done with the server down, want them held", n)
	}
	srv.Start(t)
	a.wait(t)
	if f := a.failed(); len(f) > 0 {
		t.Fatalf("%d events failed: %v", len(f), f)
	}
	if copies := checkOrder(t, srv.Read(t, nats.DefaultStream), evs); copies != 0 {
		t.Errorf("the stream holds %d copies", copies)
	}
}

// TestNoBufferWhileDisconnected publishes once the client knows its server
// is gone. Each publish fails at once, and is sent again after a backoff,
// rather than waiting in the client's reconnect buffer for the connection
// (and for the acknowledgement timeout, which is far longer than the
// test); once the server is back, the events are stored once, in order.
func TestNoBufferWhileDisconnected(t *testing.T) {
	srv := natstest.Start(t)
	s, reg := setUp(t, srv, nats.Config{AckTimeout: time.Hour, DuplicateWindow: 2 * time.Hour}, nil)
	evs := events("nobuf", 200, 10)
	a := newAcks(t, len(evs))
	publish(s, a, evs[:100])
	eventually(t, "the first events acknowledged", func() bool { return a.count() == 100 })
	srv.Stop(t)
	eventually(t, "the client notices", func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Millisecond)
		defer cancel()
		return s.Ping(ctx) != nil
	})
	publish(s, a, evs[100:])
	eventually(t, "messages sent again", func() bool { return counter(t, reg, "outbox_relay_sink_retries_total") > 0 })
	srv.Start(t)
	a.wait(t)
	if f := a.failed(); len(f) > 0 {
		t.Fatalf("%d events failed: %v", len(f), f)
	}
	if copies := checkOrder(t, srv.Read(t, nats.DefaultStream), evs); copies != 0 {
		t.Errorf("the stream holds %d copies", copies)
	}
}

// TestLostAcknowledgements publishes to a stream that stores messages but
// does not acknowledge them (no_ack), as when acknowledgements are lost:
// each Send ends at the acknowledgement timeout with the messages failed
// for a passing reason, the message is sent again, and the stream drops
// the copies by their Nats-Msg-Id. Once the stream acknowledges again,
// every event is stored once, in order.
func TestLostAcknowledgements(t *testing.T) {
	srv := natstest.Start(t)
	js := srv.JetStream(t)
	cfg := jetstream.StreamConfig{Name: nats.DefaultStream, Subjects: []string{"outbox.>"}, NoAck: true}
	if _, err := js.CreateStream(testContext(t), cfg); err != nil {
		t.Fatalf("create stream: %v", err)
	}
	s, reg := newSink(t, srv, nats.Config{AckTimeout: 100 * time.Millisecond}, nil)
	evs := events("noack", 20, 2)
	a := newAcks(t, len(evs))
	publish(s, a, evs)
	eventually(t, "messages sent again", func() bool { return counter(t, reg, "outbox_relay_sink_retries_total") >= 6 })
	if n := a.count(); n != 0 {
		t.Fatalf("%d events done without an acknowledgement", n)
	}
	if got := srv.Read(t, nats.DefaultStream); len(got) != 2 {
		t.Errorf("the stream holds %d messages while none is acknowledged, want the 2 aggregates' first, once each", len(got))
	}
	cfg.NoAck = false
	if _, err := js.UpdateStream(testContext(t), cfg); err != nil {
		t.Fatalf("update stream: %v", err)
	}
	a.wait(t)
	if f := a.failed(); len(f) > 0 {
		t.Fatalf("%d events failed: %v", len(f), f)
	}
	if copies := checkOrder(t, srv.Read(t, nats.DefaultStream), evs); copies != 0 {
		t.Errorf("the stream holds %d copies", copies)
	}
	if dups := counter(t, reg, "outbox_relay_nats_duplicates_total"); dups < 2 {
		t.Errorf("%v messages acknowledged as duplicates, want at least the 2 first ones", dups)
	}
}

// TestTooLarge checks both size limits: the sink's own, in Map, and the
// server's max_payload, when sent. The large event fails as poison with
// ReasonSize, and its aggregate's later events flow.
func TestTooLarge(t *testing.T) {
	for _, tt := range []struct {
		name    string
		opts    natstest.Options
		cfg     nats.Config
		payload int
	}{
		{"SinkLimit", natstest.Options{}, nats.Config{MaxMessageBytes: 4 << 10}, 8 << 10},
		{"ServerMaxPayload", natstest.Options{MaxPayload: 16 << 10}, nats.Config{}, 32 << 10},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := natstest.StartWith(t, tt.opts)
			s, _ := setUp(t, srv, tt.cfg, nil)
			evs := events("big", 3, 1)
			evs[1].Payload = []byte(`"` + strings.Repeat("x", tt.payload) + `"`)
			a := newAcks(t, len(evs))
			publish(s, a, evs)
			a.wait(t)
			checkPoison(t, srv, s, a, evs, evs[1], delivery.ReasonSize)
		})
	}
}

// TestSizeAtServerLimit checks that the size the sink computes is the
// client's: with the sink's limit at the server's max_payload, an event of
// exactly the limit is stored, and one a byte larger fails in Map.
func TestSizeAtServerLimit(t *testing.T) {
	const limit = 4 << 10
	srv := natstest.StartWith(t, natstest.Options{MaxPayload: limit})
	cfg := nats.Config{MaxMessageBytes: limit}
	s, _ := setUp(t, srv, cfg, nil)
	evs := events("edge", 3, 1)
	evs[0].Payload = bytes.Repeat([]byte("x"), limit-nats.MessageSize(cfg, evs[0])+len(evs[0].Payload))
	evs[1].Payload = bytes.Repeat([]byte("x"), limit-nats.MessageSize(cfg, evs[1])+len(evs[1].Payload)+1)
	a := newAcks(t, len(evs))
	publish(s, a, evs)
	a.wait(t)
	checkPoison(t, srv, s, a, evs, evs[1], delivery.ReasonSize)
}

// TestStreamMaxMsgSize checks the stream's own limit, which JetStream
// reports in the acknowledgement.
func TestStreamMaxMsgSize(t *testing.T) {
	srv := natstest.Start(t)
	if _, err := srv.JetStream(t).CreateStream(testContext(t), jetstream.StreamConfig{
		Name: nats.DefaultStream, Subjects: []string{"outbox.>"}, MaxMsgSize: 2 << 10,
	}); err != nil {
		t.Fatalf("create stream: %v", err)
	}
	s, _ := setUp(t, srv, nats.Config{}, nil)
	evs := events("big", 3, 1)
	evs[1].Payload = bytes.Repeat([]byte("7"), 4<<10)
	a := newAcks(t, len(evs))
	publish(s, a, evs)
	a.wait(t)
	checkPoison(t, srv, s, a, evs, evs[1], delivery.ReasonSize)
}

// checkPoison checks that bad, of evs (one aggregate's), failed as poison
// with reason, and the others were stored in order.
func checkPoison(t *testing.T, srv *natstest.Server, s *nats.Sink, a *acks, evs []*schema.Event, bad *schema.Event, reason string) {
	t.Helper()
	var good []*schema.Event
	for _, ev := range evs {
		err, _ := a.err(ev.ID)
		if ev != bad {
			good = append(good, ev)
			if err != nil {
				t.Errorf("event %s: done got %v, want nil", ev.ID, err)
			}
			continue
		}
		if got, ok := s.Poison(err); !ok || got != reason {
			t.Errorf("event %s: done got %v, poison %q %v; want poison %q", ev.ID, err, got, ok, reason)
		}
	}
	checkOrder(t, srv.Read(t, nats.DefaultStream), good)
}

// TestHeldWithoutStream publishes to subjects no stream captures: the
// events are held, not failed, the sink says at error level what to do,
// and they flow in order once Setup created the stream.
func TestHeldWithoutStream(t *testing.T) {
	srv := natstest.Start(t)
	logs := &records{}
	s, reg := newSink(t, srv, nats.Config{}, slog.New(logs))
	evs := events("held", 40, 4)
	a := newAcks(t, len(evs))
	publish(s, a, evs)
	eventually(t, "messages sent again", func() bool { return counter(t, reg, "outbox_relay_sink_retries_total") >= 8 })
	if n := a.count(); n != 0 {
		t.Fatalf("%d events done without a stream, want them held", n)
	}
	if !logs.has(slog.LevelError, "no JetStream stream captures") {
		t.Error("no error log says that no stream captures the subjects")
	}
	if err := s.Setup(testContext(t)); err != nil {
		t.Fatalf("Setup: %v", err)
	}
	a.wait(t)
	if f := a.failed(); len(f) > 0 {
		t.Fatalf("%d events failed: %v", len(f), f)
	}
	checkOrder(t, srv.Read(t, nats.DefaultStream), evs)
}

// TestDeadLetterOfLargeEvent checks that a dead letter of an event too
// large to publish goes without its payload, and says so.
func TestDeadLetterOfLargeEvent(t *testing.T) {
	srv := natstest.Start(t)
	s, _ := setUp(t, srv, nats.Config{MaxMessageBytes: 4 << 10}, nil)
	ev := event("big", "1", 0)
	ev.Payload = bytes.Repeat([]byte("x"), 8<<10)
	a := newAcks(t, 1)
	s.Publish(testContext(t), ev, func(err error) {
		reason, _ := s.Poison(err)
		s.DeadLetter(testContext(t), ev, reason, err, 1, a.done(ev))
	})
	a.wait(t)
	if f := a.failed(); len(f) > 0 {
		t.Fatalf("dead letter failed: %v", f)
	}
	letters := srv.ReadDeadLetters(t, nats.DefaultDeadLetterStream)
	if len(letters) != 1 {
		t.Fatalf("%d dead letters, want 1", len(letters))
	}
	m := letters[0]
	got := map[string]string{"key": m.Key, "payload": string(m.Payload)}
	for _, k := range []string{delivery.HeaderID, delivery.HeaderDLQReason, delivery.HeaderDLQPayloadOmitted, delivery.HeaderDLQTopic} {
		got[k], _ = m.Header(k)
	}
	want := map[string]string{
		"key": "1", "payload": "", delivery.HeaderID: ev.ID, delivery.HeaderDLQReason: delivery.ReasonSize,
		delivery.HeaderDLQPayloadOmitted: "true", delivery.HeaderDLQTopic: "outbox.big.1",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("dead letter %s = %q, want %q", k, got[k], v)
		}
	}
	if m.Destination != nats.DefaultDeadLetterSubject || !slices.ContainsFunc(m.Headers, func(h delivery.Header) bool { return h.Key == delivery.HeaderDLQError }) {
		t.Errorf("dead letter on %q with headers %v", m.Destination, m.Headers)
	}
}
