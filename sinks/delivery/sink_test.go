package delivery_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"pgregory.net/rapid"

	"github.com/outbox-relay/outbox-relay/relay"
	"github.com/outbox-relay/outbox-relay/schema"
	"github.com/outbox-relay/outbox-relay/sinks/delivery"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	_ relay.Sink         = (*delivery.Sink[msg])(nil)
	_ relay.DeadLetterer = (*delivery.Sink[msg])(nil)
	_ relay.Halter       = (*delivery.Sink[msg])(nil)
)

// msg is the fake broker's message.
type msg struct {
	id, key string
	dead    bool
}

// broker is a Broker of func fields; nil fields behave well.
type broker struct {
	send     func(ctx context.Context, msgs []msg, errs []error)
	classify func(err error) (string, bool)
	mapFn    func(ev *schema.Event) (msg, string, error)
	closed   chan struct{}
}

func newBroker() *broker { return &broker{closed: make(chan struct{})} }

func (b *broker) Map(ev *schema.Event) (msg, string, error) {
	if b.mapFn != nil {
		return b.mapFn(ev)
	}
	return msg{id: ev.ID, key: ev.AggregateID}, "dest." + ev.AggregateType, nil
}

func (b *broker) DeadLetter(ev *schema.Event, reason string, cause error, attempts int) (msg, string, error) {
	return msg{id: ev.ID, key: ev.AggregateID, dead: true}, "dlq", nil
}

func (b *broker) Send(ctx context.Context, msgs []msg, errs []error) {
	if b.send != nil {
		b.send(ctx, msgs, errs)
	}
}

func (b *broker) Classify(err error) (string, bool) {
	if b.classify != nil {
		return b.classify(err)
	}
	return "", false
}

func (b *broker) Ping(context.Context) error { return nil }

func (b *broker) Close() error {
	close(b.closed)
	return nil
}

// errPassing and errRefused are the fake broker's passing and permanent
// failures.
var (
	errPassing = errors.New("passing")
	errRefused = errors.New("refused")
)

func classify(err error) (string, bool) {
	if errors.Is(err, errRefused) {
		return delivery.ReasonRejected, true
	}
	return "", false
}

func event(id, key string) *schema.Event {
	return &schema.Event{ID: id, AggregateID: key, AggregateType: "order", EventType: "created", Payload: []byte(`{}`)}
}

// outcomes records each event's done calls.
type outcomes struct {
	mu    sync.Mutex
	order []string           // ids in the order done was called
	errs  map[string][]error // id -> errors done got
	all   chan struct{}
	want  int
}

func newOutcomes(want int) *outcomes {
	return &outcomes{errs: make(map[string][]error), all: make(chan struct{}), want: want}
}

func (o *outcomes) done(id string) func(error) {
	return func(err error) {
		o.mu.Lock()
		defer o.mu.Unlock()
		o.order = append(o.order, id)
		o.errs[id] = append(o.errs[id], err)
		if len(o.order) == o.want {
			close(o.all)
		}
	}
}

func (o *outcomes) wait(t *testing.T) {
	t.Helper()
	select {
	case <-o.all:
	case <-time.After(10 * time.Second):
		o.mu.Lock()
		defer o.mu.Unlock()
		t.Fatalf("%d of %d done calls after 10s", len(o.order), o.want)
	}
}

func (o *outcomes) err(id string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.errs[id]) == 0 {
		return fmt.Errorf("no done call for %s", id)
	}
	return o.errs[id][0]
}

func newSink(t *testing.T, cfg delivery.Config, b *broker, reg prometheus.Registerer) *delivery.Sink[msg] {
	t.Helper()
	if cfg.Name == "" {
		cfg.Name = "fake"
	}
	if cfg.RetryMin == 0 {
		cfg.RetryMin, cfg.RetryMax = time.Millisecond, 5*time.Millisecond
	}
	s, err := delivery.New[msg](cfg, b, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// TestOrderProperty drives a Sink through a broker that stores, loses,
// refuses and fails messages at random, and checks the invariant: each
// event's done is called once, per key in Publish order; a key's messages
// are never in flight together; and the first stored copy of each key's
// acknowledged messages is in Publish order.
func TestOrderProperty(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		n := rapid.IntRange(1, 200).Draw(rt, "events")
		keys := rapid.IntRange(1, 8).Draw(rt, "keys")
		cfg := delivery.Config{
			Name:     "fake",
			MaxBatch: rapid.IntRange(1, 16).Draw(rt, "max batch"),
			Senders:  rapid.IntRange(1, 3).Draw(rt, "senders"),
			RetryMin: time.Microsecond, RetryMax: 50 * time.Microsecond,
		}
		seed := rapid.Uint64().Draw(rt, "seed")

		var mu sync.Mutex
		rng := newRand(seed) // the broker's, under mu
		keyRng := newRand(seed + 1)
		inflight := make(map[string]bool)
		stored := make(map[string][]string) // per key, ids in store order
		var violation string
		b := newBroker()
		b.classify = classify
		b.send = func(_ context.Context, msgs []msg, errs []error) {
			mu.Lock()
			defer mu.Unlock()
			for _, m := range msgs {
				if inflight[m.key] && violation == "" {
					violation = "two messages of key " + m.key + " in flight"
				}
				inflight[m.key] = true
			}
			for i, m := range msgs {
				switch rng.next() % 10 {
				case 0: // lost before the broker
					errs[i] = errPassing
				case 1: // stored, but the acknowledgement was lost
					stored[m.key] = append(stored[m.key], m.id)
					errs[i] = errPassing
				case 2:
					errs[i] = errRefused
				default:
					stored[m.key] = append(stored[m.key], m.id)
				}
				delete(inflight, m.key)
			}
		}
		s, err := delivery.New[msg](cfg, b, nil, nil)
		if err != nil {
			rt.Fatal(err)
		}
		defer s.Close()

		o := newOutcomes(n)
		published := make(map[string][]string)
		for i := range n {
			key := fmt.Sprintf("k%d", keyRng.next()%uint64(keys))
			id := fmt.Sprintf("e%d", i)
			published[key] = append(published[key], id)
			s.Publish(context.Background(), event(id, key), o.done(id))
		}
		select {
		case <-o.all:
		case <-time.After(20 * time.Second):
			rt.Fatalf("done called %d times of %d", len(o.order), n)
		}
		if err := s.Flush(context.Background()); err != nil {
			rt.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		if violation != "" {
			rt.Fatal(violation)
		}
		// Once per event, per key in Publish order.
		pos := make(map[string]int)
		for i, id := range o.order {
			if len(o.errs[id]) != 1 {
				rt.Fatalf("event %s: done called %d times", id, len(o.errs[id]))
			}
			pos[id] = i
		}
		for key, ids := range published {
			for i := 1; i < len(ids); i++ {
				if pos[ids[i]] < pos[ids[i-1]] {
					rt.Fatalf("key %s: done of %s before done of %s", key, ids[i], ids[i-1])
				}
			}
			// Acknowledged events are stored, first copies in order.
			first := make(map[string]int)
			for i, id := range stored[key] {
				if _, ok := first[id]; !ok {
					first[id] = i
				}
			}
			last := -1
			for _, id := range ids {
				err := o.errs[id][0]
				if err != nil {
					var pe *delivery.PermanentError
					if !errors.As(err, &pe) || pe.Reason != delivery.ReasonRejected {
						rt.Fatalf("event %s failed with %v, want a PermanentError", id, err)
					}
					continue
				}
				at, ok := first[id]
				if !ok {
					rt.Fatalf("event %s acknowledged but never stored", id)
				}
				if at < last {
					rt.Fatalf("key %s: %s stored first at %d, before an earlier event at %d", key, id, at, last)
				}
				last = at
			}
		}
	})
}

// rand is a small deterministic generator, safe under the caller's lock.
type rand struct{ s uint64 }

func newRand(seed uint64) *rand { return &rand{s: seed | 1} }

func (r *rand) next() uint64 {
	r.s ^= r.s << 13
	r.s ^= r.s >> 7
	r.s ^= r.s << 17
	return r.s
}

func TestPublishRefusesWhatCannotBeSent(t *testing.T) {
	b := newBroker()
	b.mapFn = func(ev *schema.Event) (msg, string, error) {
		if ev.ID == "too-big" {
			return msg{}, "", &delivery.PermanentError{Reason: delivery.ReasonSize, Err: errors.New("too big")}
		}
		if ev.ID == "odd" {
			return msg{}, "", errors.New("odd")
		}
		return msg{id: ev.ID, key: ev.AggregateID}, "d", nil
	}
	s := newSink(t, delivery.Config{}, b, nil)
	malformed := event("bad-content", "a")
	malformed.Malformed = schema.ErrContent
	tests := []struct {
		name   string
		ev     *schema.Event
		reason string
	}{
		{"no aggregate id", event("no-key", ""), delivery.ReasonAggregateID},
		{"malformed message", malformed, delivery.ReasonContent},
		{"map refuses", event("too-big", "a"), delivery.ReasonSize},
		{"map fails without a reason", event("odd", "a"), delivery.ReasonRejected},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got error
			called := 0
			s.Publish(context.Background(), tt.ev, func(err error) { got = err; called++ })
			if called != 1 {
				t.Fatalf("done called %d times before Publish returned, want 1", called)
			}
			reason, ok := s.Poison(got)
			if !ok || reason != tt.reason {
				t.Errorf("Poison(%v) = %q, %v; want %q, true", got, reason, ok, tt.reason)
			}
		})
	}
}

func TestRetriesUntilAcknowledged(t *testing.T) {
	var mu sync.Mutex
	var calls []time.Time
	b := newBroker()
	b.send = func(_ context.Context, msgs []msg, errs []error) {
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, time.Now())
		if len(calls) <= 3 {
			for i := range errs {
				errs[i] = errPassing
			}
		}
	}
	reg := prometheus.NewRegistry()
	s := newSink(t, delivery.Config{RetryMin: 20 * time.Millisecond, RetryMax: time.Second}, b, reg)
	o := newOutcomes(1)
	s.Publish(context.Background(), event("e1", "a"), o.done("e1"))
	o.wait(t)
	if err := o.err("e1"); err != nil {
		t.Fatalf("done got %v, want nil after the retries", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(calls) != 4 {
		t.Fatalf("Send called %d times, want 4", len(calls))
	}
	// Exponential backoff with ±50% jitter from 20ms, doubling.
	for i, min := range []time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 40 * time.Millisecond} {
		if gap := calls[i+1].Sub(calls[i]); gap < min {
			t.Errorf("attempt %d came %s after the one before, want at least %s", i+2, gap, min)
		}
	}
	if got := sum(t, reg, "outbox_relay_sink_retries_total"); got != 3 {
		t.Errorf("retries_total = %v, want 3", got)
	}
	if got := sum(t, reg, "outbox_relay_events_published_total"); got != 1 {
		t.Errorf("events_published_total = %v, want 1", got)
	}
}

// sum returns the sum of the counters named name in reg.
func sum(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var total float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				total += m.GetCounter().GetValue()
			}
		}
	}
	return total
}

func TestOneInFlightPerKey(t *testing.T) {
	release := make(chan struct{})
	var mu sync.Mutex
	var batches [][]string
	b := newBroker()
	b.send = func(ctx context.Context, msgs []msg, errs []error) {
		mu.Lock()
		var ids []string
		for _, m := range msgs {
			ids = append(ids, m.id)
		}
		batches = append(batches, ids)
		first := len(batches) == 1
		mu.Unlock()
		if first {
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
	}
	s := newSink(t, delivery.Config{Senders: 2, MaxBatch: 10}, b, nil)
	o := newOutcomes(4)
	s.Publish(context.Background(), event("a1", "a"), o.done("a1"))
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(batches) == 1 })
	for _, id := range []string{"a2", "b1", "a3"} {
		s.Publish(context.Background(), event(id, id[:1]), o.done(id))
	}
	// While a1 is in flight, the second sender may send b1 but not a2.
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(batches) == 2 })
	mu.Lock()
	if got := batches[1]; len(got) != 1 || got[0] != "b1" {
		t.Errorf("second batch %v while a1 is in flight, want [b1]", got)
	}
	mu.Unlock()
	close(release)
	o.wait(t)
	mu.Lock()
	defer mu.Unlock()
	var order []string
	for _, b := range batches {
		order = append(order, b...)
	}
	if fmt.Sprint(order) != "[a1 b1 a2 a3]" {
		t.Errorf("sent %v, want [a1 b1 a2 a3]", order)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met after 5s")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestHaltFailsWhatIsNotSent(t *testing.T) {
	release := make(chan struct{})
	sending := make(chan struct{}, 1)
	b := newBroker()
	b.send = func(ctx context.Context, msgs []msg, errs []error) {
		sending <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
		}
	}
	s := newSink(t, delivery.Config{Senders: 1, MaxBatch: 1}, b, nil)
	o := newOutcomes(4)
	s.Publish(context.Background(), event("a1", "a"), o.done("a1"))
	<-sending // a1 is in flight
	for _, id := range []string{"a2", "b1", "c1"} {
		s.Publish(context.Background(), event(id, id[:1]), o.done(id))
	}
	s.Halt(errors.New("an event failed"))
	close(release)
	o.wait(t)
	if err := o.err("a1"); err != nil {
		t.Errorf("a1, in flight at the halt: done got %v, want nil", err)
	}
	for _, id := range []string{"a2", "b1", "c1"} {
		if err := o.err(id); !errors.Is(err, delivery.ErrHalted) {
			t.Errorf("%s: done got %v, want ErrHalted", id, err)
		}
	}
	got := make(chan error, 1)
	s.Publish(context.Background(), event("d1", "d"), func(err error) { got <- err })
	if err := <-got; !errors.Is(err, delivery.ErrHalted) {
		t.Errorf("Publish after Halt: done got %v, want ErrHalted", err)
	}
	if _, ok := s.Poison(o.err("b1")); ok {
		t.Error("a halted event is poison; want a reason to stop")
	}
}

func TestCloseFailsPendingAndClosesBroker(t *testing.T) {
	b := newBroker()
	sending := make(chan struct{}, 1)
	b.send = func(ctx context.Context, msgs []msg, errs []error) {
		sending <- struct{}{}
		<-ctx.Done() // the broker is down: only Close ends the wait
		for i := range errs {
			errs[i] = ctx.Err()
		}
	}
	s, err := delivery.New[msg](delivery.Config{Name: "fake", Senders: 1}, b, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	o := newOutcomes(3)
	for _, id := range []string{"a1", "a2", "b1"} {
		s.Publish(context.Background(), event(id, id[:1]), o.done(id))
	}
	<-sending
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := s.Flush(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Flush with the broker down = %v, want the deadline", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	o.wait(t)
	for _, id := range []string{"a1", "a2", "b1"} {
		if err := o.err(id); !errors.Is(err, delivery.ErrClosed) {
			t.Errorf("%s: done got %v, want ErrClosed", id, err)
		}
	}
	select {
	case <-b.closed:
	default:
		t.Error("broker not closed")
	}
}

func TestPermanentSendErrorsGoToPolicy(t *testing.T) {
	b := newBroker()
	b.classify = classify
	b.send = func(_ context.Context, msgs []msg, errs []error) {
		for i, m := range msgs {
			if m.id == "a2" {
				errs[i] = errRefused
			}
		}
	}
	s := newSink(t, delivery.Config{}, b, nil)
	o := newOutcomes(3)
	for _, id := range []string{"a1", "a2", "a3"} {
		s.Publish(context.Background(), event(id, "a"), o.done(id))
	}
	o.wait(t)
	reason, ok := s.Poison(o.err("a2"))
	if !ok || reason != delivery.ReasonRejected || !errors.Is(o.err("a2"), errRefused) {
		t.Errorf("a2: done got %v (poison %q, %v), want a PermanentError wrapping the refusal", o.err("a2"), reason, ok)
	}
	if o.err("a1") != nil || o.err("a3") != nil {
		t.Errorf("a1, a3: done got %v, %v, want nil", o.err("a1"), o.err("a3"))
	}
	if fmt.Sprint(o.order) != "[a1 a2 a3]" {
		t.Errorf("done order %v, want [a1 a2 a3]", o.order)
	}
}

func TestDeadLettersInOrder(t *testing.T) {
	var mu sync.Mutex
	var sent []string
	b := newBroker()
	b.send = func(_ context.Context, msgs []msg, errs []error) {
		mu.Lock()
		defer mu.Unlock()
		if len(msgs) != 1 {
			t.Errorf("batch of %d dead letters, want one at a time", len(msgs))
		}
		for _, m := range msgs {
			if !m.dead {
				t.Errorf("%s is not a dead letter", m.id)
			}
			sent = append(sent, m.id)
		}
	}
	reg := prometheus.NewRegistry()
	s := newSink(t, delivery.Config{Senders: 3}, b, reg)
	o := newOutcomes(50)
	var want []string
	for i := range 50 {
		id := fmt.Sprintf("d%02d", i)
		want = append(want, id)
		s.DeadLetter(context.Background(), event(id, fmt.Sprint(i%7)), delivery.ReasonSize, errors.New("too big"), 1, o.done(id))
	}
	o.wait(t)
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(sent) != fmt.Sprint(want) {
		t.Errorf("dead letters sent in order %v, want %v", sent, want)
	}
	if got := sum(t, reg, "outbox_relay_dlq_events_total"); got != 50 {
		t.Errorf("dlq_events_total = %v, want 50", got)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  delivery.Config
		ok   bool
	}{
		{"defaults", delivery.Config{Name: "x"}, true},
		{"no name", delivery.Config{}, false},
		{"negative batch", delivery.Config{Name: "x", MaxBatch: -1}, false},
		{"negative senders", delivery.Config{Name: "x", Senders: -1}, false},
		{"backoff backwards", delivery.Config{Name: "x", RetryMin: time.Second, RetryMax: time.Millisecond}, false},
		{"min above the default max", delivery.Config{Name: "x", RetryMin: time.Minute}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.cfg.Validate(); (err == nil) != tt.ok {
				t.Errorf("Validate() = %v, want ok %v", err, tt.ok)
			}
		})
	}
}

func TestMetricsRegisterOnce(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := newSink(t, delivery.Config{}, newBroker(), reg)
	if _, err := delivery.New[msg](delivery.Config{Name: "fake"}, newBroker(), nil, reg); err == nil {
		t.Fatal("a second Sink registered the same metrics")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := delivery.New[msg](delivery.Config{Name: "fake"}, newBroker(), nil, reg)
	if err != nil {
		t.Fatalf("after Close, New = %v", err)
	}
	_ = s2.Close()
}
