package redis_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/outbox-relay/outbox-relay/schema"
	"github.com/outbox-relay/outbox-relay/sinks/delivery"
	"github.com/outbox-relay/outbox-relay/sinks/redis"
	"github.com/outbox-relay/outbox-relay/sinks/redis/redistest"
	"github.com/outbox-relay/outbox-relay/sinks/sinktest"
)

func TestConformance(t *testing.T) {
	srv := redistest.Start(t)
	sinktest.Run(t, sinktest.Broker{
		NewSink: func(t *testing.T) sinktest.Sink {
			return newSink(t, srv, redis.Config{}, nil, nil)
		},
		Read:            func(t *testing.T) []sinktest.Message { return srv.Read(t, "outbox.*") },
		ReadDeadLetters: func(t *testing.T) []sinktest.Message { return srv.ReadDeadLetters(t, redis.DefaultDeadLetterStream) },
		Stop:            func(t *testing.T) { srv.Stop(t) },
		Start:           func(t *testing.T) { srv.Start(t) },
	})
}

// TestEntry checks each field of stored entries, in order, and the
// destination label of the metrics.
func TestEntry(t *testing.T) {
	srv := redistest.Start(t)
	reg := prometheus.NewRegistry()
	s := newSink(t, srv, redis.Config{Stream: "outbox.{aggregate_type}.{aggregate_id}"}, nil, reg)
	replayed := time.Date(2026, 12, 1, 10, 0, 0, 5, time.UTC)
	evs := []*schema.Event{
		{ID: "e1", AggregateType: "Order", AggregateID: "o-1", EventType: "Placed", Payload: []byte(`{"n":1}`),
			Position: schema.Position{CommitLSN: 0x16B3748, Index: 1}},
		{ID: "e2", AggregateType: "Order", AggregateID: "o-1", EventType: "Paid", Payload: []byte(`{"n":2}`),
			Headers: []byte(`{"trace_id": "t-1", "attempt": 2}`), Replayed: replayed},
		{ID: "e3", AggregateType: "Order", AggregateID: "o-2", EventType: "Placed", Payload: []byte(`{"n":3}`),
			Headers: []byte(`null`), Position: schema.Position{CommitLSN: 0x16B3750}},
	}
	d := newDones()
	d.publish(s, evs)
	d.wait(t)
	if f := d.failures(); len(f) > 0 {
		t.Fatal(f)
	}

	fields := func(kv ...string) []redistest.Field {
		var fs []redistest.Field
		for i := 0; i < len(kv); i += 2 {
			fs = append(fs, redistest.Field{Name: kv[i], Value: kv[i+1]})
		}
		return fs
	}
	for _, tc := range []struct {
		key  string
		want [][]redistest.Field
	}{
		{"outbox.Order.o-1", [][]redistest.Field{
			fields("id", "e1", "event_type", "Placed", "aggregate_type", "Order", "aggregate_id", "o-1",
				"position", "00000000016b374800000001", "payload", `{"n":1}`),
			fields("id", "e2", "event_type", "Paid", "aggregate_type", "Order", "aggregate_id", "o-1",
				"position", "000000000000000000000000", "replayed", "true", "replay_started", "2026-12-01T10:00:00.000000005Z",
				"headers", `{"trace_id": "t-1", "attempt": 2}`, "payload", `{"n":2}`),
		}},
		{"outbox.Order.o-2", [][]redistest.Field{
			fields("id", "e3", "event_type", "Placed", "aggregate_type", "Order", "aggregate_id", "o-2",
				"position", "00000000016b375000000000", "payload", `{"n":3}`),
		}},
	} {
		var got [][]redistest.Field
		for _, e := range srv.Entries(t, tc.key) {
			got = append(got, e.Fields)
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("entries of %s (-want +got):\n%s", tc.key, diff)
		}
	}
	if n := testutil.ToFloat64(mustCounter(t, reg, "outbox_relay_events_published_total", "outbox.Order.*")); n != 3 {
		t.Errorf("events published to outbox.Order.* = %v, want 3", n)
	}
}

// mustCounter returns the value of the counter name with topic label dest
// as a collector testutil reads.
func mustCounter(t *testing.T, reg *prometheus.Registry, name, dest string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		var labels []string
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "topic" {
					labels = append(labels, l.GetValue())
					if l.GetValue() == dest {
						return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "x", Help: "x"}, func() float64 { return m.GetCounter().GetValue() })
					}
				}
			}
		}
		t.Fatalf("%s has topics %v, not %q", name, labels, dest)
	}
	t.Fatalf("no metric %s", name)
	return nil
}

// poisonToDLQ returns a done for ev that dead-letters ev when its error is
// poison, as the relay does under its dead-letter policy, and records the
// dead letter's outcome in dl; expect it there.
func poisonToDLQ(s *redis.Sink, ev *schema.Event, d, dl *dones) func(error) {
	done := d.done(ev.ID)
	return func(err error) {
		if reason, ok := s.Poison(err); ok {
			s.DeadLetter(context.Background(), ev, reason, err, 1, dl.done(ev.ID))
		}
		done(err)
	}
}

// TestWrongType checks that an entry for a key holding another type is
// poison, is dead-lettered, and holds back neither the later events of its
// aggregate nor other keys.
func TestWrongType(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client(t)
	ctx := testContext(t)
	if err := c.Set(ctx, "outbox.Order.Broken", "a string", 0).Err(); err != nil {
		t.Fatal(err)
	}
	s := newSink(t, srv, redis.Config{Stream: "outbox.{aggregate_type}.{event_type}"}, nil, nil)
	evs := events("Order", 6, 1)
	evs[0].EventType, evs[3].EventType = "Broken", "Broken"
	d, dl := newDones(), newDones()
	d.expect(len(evs))
	dl.expect(2)
	for _, ev := range evs {
		s.Publish(context.Background(), ev, poisonToDLQ(s, ev, d, dl))
	}
	d.wait(t)
	dl.wait(t)
	for i, ev := range evs {
		err, _ := d.err(ev.ID)
		if ev.EventType != "Broken" {
			if err != nil {
				t.Errorf("event %d: done got %v, want nil", i, err)
			}
			continue
		}
		reason, ok := s.Poison(err)
		if !ok || reason != delivery.ReasonRejected || !strings.Contains(err.Error(), "WRONGTYPE") {
			t.Errorf("event %d: done got %v, poison %q %v; want WRONGTYPE as poison %q", i, err, reason, ok, delivery.ReasonRejected)
		}
	}
	if f := dl.failures(); len(f) > 0 {
		t.Fatalf("dead letters: %v", f)
	}
	var good []*schema.Event
	for _, ev := range evs {
		if ev.EventType != "Broken" {
			good = append(good, ev)
		}
	}
	checkStored(t, srv, "outbox.*", good)

	letters := srv.ReadDeadLetters(t, "")
	if len(letters) != 2 {
		t.Fatalf("%d dead letters, want 2: %+v", len(letters), letters)
	}
	for i, m := range letters {
		ev := evs[3*i]
		id, _ := m.Header(delivery.HeaderID)
		reason, _ := m.Header(delivery.HeaderDLQReason)
		dest, _ := m.Header(delivery.HeaderDLQTopic)
		cause, _ := m.Header(delivery.HeaderDLQError)
		if id != ev.ID || m.Key != ev.AggregateID || reason != delivery.ReasonRejected || dest != "outbox.Order.Broken" ||
			!strings.Contains(cause, "WRONGTYPE") || string(m.Payload) != string(ev.Payload) {
			t.Errorf("dead letter %d = %+v, want event %s with reason %s, stream outbox.Order.Broken, WRONGTYPE and its payload",
				i, m, ev.ID, delivery.ReasonRejected)
		}
	}
}

// TestTooLarge checks that an entry over the limit is poison before it is
// sent, that its dead letter leaves the payload out, and that the next
// event of its aggregate flows.
func TestTooLarge(t *testing.T) {
	srv := redistest.Start(t)
	s := newSink(t, srv, redis.Config{MaxMessageBytes: 4096}, nil, nil)
	evs := events("Big", 2, 1)
	evs[0].Payload = []byte(`"` + strings.Repeat("x", 5000) + `"`)
	d, dl := newDones(), newDones()
	d.expect(len(evs))
	dl.expect(1)
	s.Publish(context.Background(), evs[0], poisonToDLQ(s, evs[0], d, dl))
	err, called := d.err(evs[0].ID)
	if !called {
		t.Fatal("Publish of a too large event returned before its done")
	}
	var pe *delivery.PermanentError
	if !errors.As(err, &pe) || pe.Reason != delivery.ReasonSize {
		t.Fatalf("done got %v, want a PermanentError of reason %q", err, delivery.ReasonSize)
	}
	s.Publish(context.Background(), evs[1], d.done(evs[1].ID))
	d.wait(t)
	dl.wait(t)
	if f := append(d.failures(), dl.failures()...); len(f) != 1 {
		t.Errorf("failures %v, want only the large event's", f)
	}
	checkStored(t, srv, "outbox.*", evs[1:])
	letters := srv.ReadDeadLetters(t, "")
	if len(letters) != 1 {
		t.Fatalf("%d dead letters, want 1", len(letters))
	}
	omitted, _ := letters[0].Header(delivery.HeaderDLQPayloadOmitted)
	if letters[0].Payload != nil || omitted != "true" {
		t.Errorf("dead letter of a too large event: payload %d bytes, %s=%q; want none and true",
			len(letters[0].Payload), delivery.HeaderDLQPayloadOmitted, omitted)
	}
}

// TestMaxLen checks that event streams are trimmed to about MaxLen entries,
// the newest kept, and the dead-letter stream not at all.
func TestMaxLen(t *testing.T) {
	srv := redistest.Start(t)
	const maxLen, n = 300, 1200
	s := newSink(t, srv, redis.Config{MaxLen: maxLen}, nil, nil)
	evs := events("Trim", n, 1) // one aggregate: stored in Publish order
	d := newDones()
	d.publish(s, evs)
	d.wait(t)
	dl := newDones()
	const letters = maxLen + 10
	dl.expect(letters)
	for _, ev := range evs[:letters] {
		s.DeadLetter(context.Background(), ev, delivery.ReasonRejected, errors.New("test"), 1, dl.done(ev.ID))
	}
	dl.wait(t)
	if f := append(d.failures(), dl.failures()...); len(f) > 0 {
		t.Fatal(f)
	}
	// Trimming with ~ removes whole nodes of stream-node-max-entries
	// (100) entries only, so up to 100 more are kept.
	got := srv.Entries(t, "outbox.Trim")
	if len(got) < maxLen || len(got) > maxLen+100 {
		t.Fatalf("outbox.Trim holds %d entries, want %d to %d", len(got), maxLen, maxLen+100)
	}
	for i, e := range got {
		id, _ := e.Get(delivery.HeaderID)
		if want := evs[n-len(got)+i].ID; id != want {
			t.Fatalf("entry %d of the trimmed stream is %s, want %s: the newest entries, in order", i, id, want)
		}
	}
	if got := len(srv.ReadDeadLetters(t, "")); got != letters {
		t.Errorf("the dead-letter stream holds %d entries, want all %d", got, letters)
	}
}

// TestManyKeys publishes many aggregates' events to streams of one
// aggregate type each, and checks every one is stored in order.
func TestManyKeys(t *testing.T) {
	srv := redistest.Start(t)
	s := newSink(t, srv, redis.Config{Delivery: delivery.Config{MaxBatch: 64, Senders: 4}}, nil, nil)
	var evs []*schema.Event
	for i := range 3 {
		evs = append(evs, events(fmt.Sprintf("Type%d", i), 2000, 97)...)
	}
	d := newDones()
	d.publish(s, evs)
	d.wait(t)
	if f := d.failures(); len(f) > 0 {
		t.Fatal(f)
	}
	checkStored(t, srv, "outbox.*", evs)
	if keys := srv.Keys(t, "outbox.*"); len(keys) != 3 {
		t.Errorf("streams %v, want one per aggregate type", keys)
	}
}

// BenchmarkPublish measures events of 200-byte payloads over 100
// aggregates through a sink to a server with appendfsync always, from
// Publish to the last done.
func BenchmarkPublish(b *testing.B) {
	srv := redistest.Start(b)
	s, err := redis.New(redis.Config{URL: srv.URL}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	payload := []byte(`{"note":"` + strings.Repeat("x", 190) + `"}`)
	evs := make([]*schema.Event, b.N)
	for i := range evs {
		evs[i] = &schema.Event{ID: fmt.Sprint(i), AggregateType: "Bench", AggregateID: fmt.Sprint(i % 100),
			EventType: "Changed", Payload: payload}
	}
	b.ResetTimer()
	var wg sync.WaitGroup
	var failed atomic.Int64
	for _, ev := range evs {
		wg.Add(1)
		s.Publish(context.Background(), ev, func(err error) {
			if err != nil {
				failed.Add(1)
			}
			wg.Done()
		})
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d events failed", n)
	}
}
