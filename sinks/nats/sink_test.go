package nats_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/outbox-relay/outbox-relay/relay"
	"github.com/outbox-relay/outbox-relay/schema"
	"github.com/outbox-relay/outbox-relay/sinks/delivery"
	"github.com/outbox-relay/outbox-relay/sinks/nats"
	"github.com/outbox-relay/outbox-relay/sinks/nats/natstest"
	"github.com/outbox-relay/outbox-relay/sinks/sinktest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	_ sinktest.Sink = (*nats.Sink)(nil)
	_ relay.Sink    = (*nats.Sink)(nil)
)

// testTimeout bounds every wait on the server, so a bug fails a test
// instead of hanging it.
const testTimeout = 60 * time.Second

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// newSink returns a Sink on srv, closed when the test ends, with its
// registry.
func newSink(t *testing.T, srv *natstest.Server, cfg nats.Config, logger *slog.Logger) (*nats.Sink, *prometheus.Registry) {
	t.Helper()
	if cfg.URL == "" {
		cfg.URL = srv.URL
	}
	// Quick retries keep the tests short.
	cfg.Delivery.RetryMin, cfg.Delivery.RetryMax = 20*time.Millisecond, 200*time.Millisecond
	if cfg.ReconnectWait == 0 {
		cfg.ReconnectWait = 200 * time.Millisecond
	}
	reg := prometheus.NewRegistry()
	s, err := nats.New(cfg, logger, reg)
	if err != nil {
		t.Fatalf("New(%v): %v", cfg, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s, reg
}

// setUp returns a Sink on srv after its Setup.
func setUp(t *testing.T, srv *natstest.Server, cfg nats.Config, logger *slog.Logger) (*nats.Sink, *prometheus.Registry) {
	t.Helper()
	s, reg := newSink(t, srv, cfg, logger)
	if err := s.Setup(testContext(t)); err != nil {
		t.Fatalf("Setup: %v", err)
	}
	return s, reg
}

// TestConformance runs the suite every sink passes. Its template puts
// each aggregate type on one subject, as the suite asks.
func TestConformance(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: the suite's outage takes about 8s")
	}
	srv := natstest.Start(t)
	cfg := nats.Config{Subject: "outbox.{aggregate_type}"}
	sinktest.Run(t, sinktest.Broker{
		NewSink: func(t *testing.T) sinktest.Sink {
			s, _ := setUp(t, srv, cfg, nil)
			return s
		},
		Read:            func(t *testing.T) []sinktest.Message { return srv.Read(t, nats.DefaultStream) },
		ReadDeadLetters: func(t *testing.T) []sinktest.Message { return srv.ReadDeadLetters(t, nats.DefaultDeadLetterStream) },
		Stop:            func(t *testing.T) { srv.Stop(t) },
		Start:           func(t *testing.T) { srv.Start(t) },
	})
}

// event returns the seq-th event of aggregate id of type typ.
func event(typ, id string, seq int) *schema.Event {
	return &schema.Event{
		ID:            fmt.Sprintf("%s-%s-%05d", typ, id, seq),
		AggregateType: typ,
		AggregateID:   id,
		EventType:     "Changed",
		Payload:       []byte(`{"seq":` + strconv.Itoa(seq) + `}`),
		Headers:       []byte(`{"trace_id":"t-` + strconv.Itoa(seq) + `"}`),
		Position:      schema.Position{CommitLSN: pglogrepl.LSN(0x1000000 + seq), Index: uint32(seq % 3)},
	}
}

// events returns n events of type typ over keys aggregates, interleaved.
func events(typ string, n, keys int) []*schema.Event {
	out := make([]*schema.Event, n)
	for i := range out {
		out[i] = event(typ, "agg"+strconv.Itoa(i%keys), i)
	}
	return out
}

// acks records done calls.
type acks struct {
	t    *testing.T
	mu   sync.Mutex
	errs map[string]error // by event ID
	all  chan struct{}    // closed once want events are done
	want int
}

func newAcks(t *testing.T, want int) *acks {
	return &acks{t: t, errs: make(map[string]error), all: make(chan struct{}), want: want}
}

func (a *acks) done(ev *schema.Event) func(error) {
	return func(err error) {
		a.mu.Lock()
		defer a.mu.Unlock()
		if _, ok := a.errs[ev.ID]; ok {
			a.t.Errorf("done called twice for event %s", ev.ID)
			return
		}
		a.errs[ev.ID] = err
		if len(a.errs) == a.want {
			close(a.all)
		}
	}
}

func (a *acks) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.errs)
}

func (a *acks) err(id string) (error, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	err, ok := a.errs[id]
	return err, ok
}

// failed returns the done errors, by event ID.
func (a *acks) failed() map[string]error {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]error)
	for id, err := range a.errs {
		if err != nil {
			out[id] = err
		}
	}
	return out
}

// wait waits for every done, failing t after testTimeout.
func (a *acks) wait(t *testing.T) {
	t.Helper()
	select {
	case <-a.all:
	case <-time.After(testTimeout):
		t.Fatalf("%d of %d events done after %s", a.count(), a.want, testTimeout)
	}
}

// publish publishes evs through s, recording their done calls in a.
func publish(s *nats.Sink, a *acks, evs []*schema.Event) {
	for _, ev := range evs {
		s.Publish(context.Background(), ev, a.done(ev))
	}
}

// eventually polls cond until it holds, failing t after testTimeout.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(testTimeout); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("%s: not after %s", what, testTimeout)
		}
	}
}

// checkOrder checks that msgs hold each of evs once, each aggregate's in
// their order, on the subject outbox.<type>.<aggregate>, and returns how
// many copies of each ID it saw beyond the first.
func checkOrder(t *testing.T, msgs []sinktest.Message, evs []*schema.Event) (copies int) {
	t.Helper()
	want := make(map[string][]string) // by subject, the IDs in order
	for _, ev := range evs {
		subject := "outbox." + ev.AggregateType + "." + ev.AggregateID
		want[subject] = append(want[subject], ev.ID)
	}
	got := make(map[string][]string)
	seen := make(map[string]bool)
	for _, m := range msgs {
		id, _ := m.Header(delivery.HeaderID)
		if seen[id] {
			copies++
			continue
		}
		seen[id] = true
		if _, mine := want[m.Destination]; mine {
			got[m.Destination] = append(got[m.Destination], id)
			if m.Key != strings.TrimPrefix(m.Destination, "outbox."+evs[0].AggregateType+".") {
				t.Errorf("message %s on %s has key %q", id, m.Destination, m.Key)
			}
		}
	}
	for subject, ids := range want {
		if !slices.Equal(got[subject], ids) {
			t.Errorf("subject %s holds %d events %v..., want %d in publish order", subject, len(got[subject]), head(got[subject]), len(ids))
		}
	}
	return copies
}

func head(ids []string) []string { return ids[:min(len(ids), 5)] }

// counter returns the value of the counter name in reg, summed over its
// series whose labels include each of labels (as name="value").
func counter(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var have []string
			for _, lp := range m.GetLabel() {
				have = append(have, lp.GetName()+`="`+lp.GetValue()+`"`)
			}
			if !slices.ContainsFunc(labels, func(l string) bool { return !slices.Contains(have, l) }) {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// records is a slog.Handler that keeps what it is given.
type records struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (r *records) Enabled(context.Context, slog.Level) bool { return true }
func (r *records) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *records) WithGroup(string) slog.Handler            { return r }
func (r *records) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, rec)
	return nil
}

// has reports whether a record of level holds msg in its message.
func (r *records) has(level slog.Level, msg string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rec := range r.recs {
		if rec.Level == level && strings.Contains(rec.Message, msg) {
			return true
		}
	}
	return false
}

// TestOrderPerSubject publishes 1,500 events over 50 aggregates with the
// default template, and reads each aggregate's subject back in order, with
// the relay's headers, the aggregate ID and the event's own headers.
func TestOrderPerSubject(t *testing.T) {
	srv := natstest.Start(t)
	s, reg := setUp(t, srv, nats.Config{}, nil)
	evs := events("order", 1500, 50)
	a := newAcks(t, len(evs))
	publish(s, a, evs)
	a.wait(t)
	if f := a.failed(); len(f) > 0 {
		t.Fatalf("%d events failed: %v", len(f), f)
	}
	msgs := srv.Read(t, nats.DefaultStream)
	if copies := checkOrder(t, msgs, evs); copies != 0 {
		t.Errorf("the stream holds %d copies of events", copies)
	}
	ev, m := evs[7], msgs[0]
	for _, msg := range msgs {
		if id, _ := msg.Header(delivery.HeaderID); id == ev.ID {
			m = msg
		}
	}
	want := map[string]string{
		delivery.HeaderID: ev.ID, delivery.HeaderEventType: ev.EventType, delivery.HeaderAggregateType: ev.AggregateType,
		delivery.HeaderPosition: ev.Position.String(), "trace_id": "t-7",
	}
	for k, v := range want {
		if got, _ := m.Header(k); got != v {
			t.Errorf("message of event %s: header %s = %q, want %q", ev.ID, k, got, v)
		}
	}
	if m.Key != ev.AggregateID || string(m.Payload) != string(ev.Payload) {
		t.Errorf("message of event %s: key %q payload %s, want %q %s", ev.ID, m.Key, m.Payload, ev.AggregateID, ev.Payload)
	}
	if got := counter(t, reg, "outbox_relay_events_published_total", `topic="outbox.order.*"`); got != float64(len(evs)) {
		t.Errorf("events published on outbox.order.* = %v, want %d", got, len(evs))
	}
}
