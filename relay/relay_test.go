package relay

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pglogrepl"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"pgregory.net/rapid"

	"github.com/outbox-relay/outbox-relay/schema"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeSink is a Sink whose behaviour each test supplies.
type fakeSink struct {
	publish func(ctx context.Context, ev *schema.Event, done func(error))
	flush   func(ctx context.Context) error
}

func (s *fakeSink) Publish(ctx context.Context, ev *schema.Event, done func(error)) {
	s.publish(ctx, ev, done)
}

func (s *fakeSink) Flush(ctx context.Context) error {
	if s.flush == nil {
		return nil
	}
	return s.flush(ctx)
}

// held records what the relay publishes and holds each acknowledgement until
// the test releases it, in any order, on any goroutine.
type held struct {
	mu     sync.Mutex
	events []schema.Event
	dones  []func(error)
	called []bool
}

func (h *held) sink() *fakeSink {
	return &fakeSink{publish: h.publish}
}

func (h *held) publish(_ context.Context, ev *schema.Event, done func(error)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events = append(h.events, *ev) // the Sink may not keep ev itself
	h.dones = append(h.dones, done)
	h.called = append(h.called, false)
}

func (h *held) len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.events)
}

func (h *held) published() []schema.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.events)
}

// fataler is what held needs of a *testing.T or a *rapid.T.
type fataler interface {
	Helper()
	Fatalf(format string, args ...any)
}

// take returns event i's done and marks it called.
func (h *held) take(t fataler, i int) func(error) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	if i >= len(h.dones) {
		t.Fatalf("ack of event %d: only %d published", i, len(h.dones))
	}
	if h.called[i] {
		t.Fatalf("ack of event %d: already acknowledged", i)
	}
	h.called[i] = true
	return h.dones[i]
}

// ack completes event i with err on another goroutine and waits for it.
func (h *held) ack(t fataler, i int, err error) {
	t.Helper()
	done := h.take(t, i)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		done(err)
	}()
	<-finished
}

// ackAll acknowledges every event not yet acknowledged, newest first.
func (h *held) ackAll(t fataler) {
	t.Helper()
	h.mu.Lock()
	var todo []int
	for i := len(h.called) - 1; i >= 0; i-- {
		if !h.called[i] {
			todo = append(todo, i)
		}
	}
	h.mu.Unlock()
	for _, i := range todo {
		h.ack(t, i, nil)
	}
}

func newTestRelay(t testing.TB, cfg Config, sink Sink) (*Relay, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	r, err := New(cfg, sink, nil, reg)
	if err != nil {
		t.Fatalf("New(%+v) = %v", cfg, err)
	}
	return r, reg
}

func newEvent(id string, payload int) *schema.Event {
	return &schema.Event{
		ID:            id,
		AggregateType: "order",
		AggregateID:   "order-" + id,
		EventType:     "created",
		Payload:       []byte(strings.Repeat("x", payload)),
		Table:         "public.outbox",
	}
}

var commitTime = time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)

// commitLSN and endLSN place transaction i in the WAL.
func commitLSN(i int) pglogrepl.LSN { return pglogrepl.LSN(i+1)*0x100 + 0x10 }
func endLSN(i int) pglogrepl.LSN    { return pglogrepl.LSN(i+1)*0x100 + 0x40 }

// stream feeds transactions of the given sizes to r, as the replication
// stream would, without waiting for room.
func stream(t testing.TB, r *Relay, sizes ...int) {
	t.Helper()
	for i, n := range sizes {
		r.Begin(commitLSN(i), commitTime.Add(time.Duration(i)*time.Second))
		for j := range n {
			if err := r.Insert(t.Context(), newEvent(fmt.Sprintf("t%d-e%d", i, j), 10)); err != nil {
				t.Fatalf("Insert(txn %d, event %d) = %v", i, j, err)
			}
		}
		r.Commit(endLSN(i))
	}
}

func TestInsertStampsPositions(t *testing.T) {
	tests := []struct {
		name  string
		sizes []int
	}{
		{name: "one transaction", sizes: []int{3}},
		{name: "empty transactions between", sizes: []int{2, 0, 0, 1}},
		{name: "many", sizes: []int{1, 5, 2, 7}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &held{}
			r, _ := newTestRelay(t, Config{}, h.sink())
			var want []schema.Event
			for i, n := range tt.sizes {
				ct := commitTime.Add(time.Duration(i) * time.Minute)
				r.Begin(commitLSN(i), ct)
				for j := range n {
					ev := newEvent(fmt.Sprintf("t%d-e%d", i, j), j)
					// A replayed event arrives with a stale position; it is
					// overwritten.
					ev.Position = schema.Position{CommitLSN: 1, Index: 99}
					if err := r.Insert(t.Context(), ev); err != nil {
						t.Fatalf("Insert = %v", err)
					}
					wantEv := *newEvent(ev.ID, j)
					wantEv.Position = schema.Position{CommitLSN: commitLSN(i), Index: uint32(j)}
					wantEv.CommitTime = ct
					if diff := cmp.Diff(wantEv, *ev); diff != "" {
						t.Errorf("event after Insert (-want +got):\n%s", diff)
					}
					want = append(want, wantEv)
				}
				r.Commit(endLSN(i))
			}
			if diff := cmp.Diff(want, h.published()); diff != "" {
				t.Errorf("published events (-want +got):\n%s", diff)
			}
			h.ackAll(t)
		})
	}
}

// TestInsertContextOutlivesCancel checks that the Sink's delivery context is
// not cancelled with the stream's, so shutdown can drain.
func TestInsertContextOutlivesCancel(t *testing.T) {
	type key struct{}
	var gotErr error
	var gotValue any
	sink := &fakeSink{publish: func(ctx context.Context, _ *schema.Event, done func(error)) {
		gotErr, gotValue = ctx.Err(), ctx.Value(key{})
		done(nil)
	}}
	r, _ := newTestRelay(t, Config{}, sink)
	ctx, cancel := context.WithCancel(context.WithValue(t.Context(), key{}, "v"))
	cancel()
	r.Begin(commitLSN(0), commitTime)
	if err := r.Insert(ctx, newEvent("a", 1)); err != nil {
		t.Fatalf("Insert = %v", err)
	}
	r.Commit(endLSN(0))
	if gotErr != nil {
		t.Errorf("Publish ctx.Err() = %v, want nil", gotErr)
	}
	if gotValue != "v" {
		t.Errorf("Publish ctx.Value = %v, want %q", gotValue, "v")
	}
	if got, want := r.Flushed(), endLSN(0); got != want {
		t.Errorf("Flushed() = %s, want %s", got, want)
	}
}

func TestFlushedOutOfOrderAcks(t *testing.T) {
	tests := []struct {
		name  string
		sizes []int           // events per transaction; transaction i ends at endLSN(i)
		acks  []int           // events in publish order, acknowledged in this order
		want  []pglogrepl.LSN // Flushed after each ack
	}{
		{
			name:  "in order",
			sizes: []int{2, 1, 2},
			acks:  []int{0, 1, 2, 3, 4},
			want:  []pglogrepl.LSN{0, endLSN(0), endLSN(1), endLSN(1), endLSN(2)},
		},
		{
			name:  "reverse",
			sizes: []int{2, 1, 2},
			acks:  []int{4, 3, 2, 1, 0},
			want:  []pglogrepl.LSN{0, 0, 0, 0, endLSN(2)},
		},
		{
			name:  "interleaved",
			sizes: []int{2, 1, 2},
			acks:  []int{0, 3, 2, 1, 4},
			want:  []pglogrepl.LSN{0, 0, 0, endLSN(1), endLSN(2)},
		},
		{
			name:  "newest transaction first",
			sizes: []int{1, 1, 1, 1},
			acks:  []int{3, 2, 0, 1},
			want:  []pglogrepl.LSN{0, 0, endLSN(0), endLSN(3)},
		},
		{
			name:  "empty transactions ride along",
			sizes: []int{1, 0, 0, 1, 0},
			acks:  []int{1, 0},
			want:  []pglogrepl.LSN{0, endLSN(4)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &held{}
			r, _ := newTestRelay(t, Config{}, h.sink())
			stream(t, r, tt.sizes...)
			if got := r.Flushed(); got != 0 {
				t.Fatalf("Flushed() before any ack = %s, want 0", got)
			}
			for k, i := range tt.acks {
				h.ack(t, i, nil)
				if got := r.Flushed(); got != tt.want[k] {
					t.Errorf("after ack of event %d: Flushed() = %s, want %s", i, got, tt.want[k])
				}
			}
		})
	}
}

func TestFlushedWaitsForCommit(t *testing.T) {
	h := &held{}
	r, _ := newTestRelay(t, Config{}, h.sink())
	stream(t, r, 1)
	h.ackAll(t)
	r.Begin(commitLSN(1), commitTime)
	for j := range 3 {
		if err := r.Insert(t.Context(), newEvent(fmt.Sprint(j), 1)); err != nil {
			t.Fatalf("Insert = %v", err)
		}
	}
	h.ackAll(t)
	if got, want := r.Flushed(), endLSN(0); got != want {
		t.Fatalf("all acked, transaction open: Flushed() = %s, want %s", got, want)
	}
	r.Commit(endLSN(1))
	if got, want := r.Flushed(), endLSN(1); got != want {
		t.Errorf("after Commit: Flushed() = %s, want %s", got, want)
	}
}

func TestSinkFailure(t *testing.T) {
	errBroker := errors.New("broker rejected the record")
	tests := []struct {
		name        string
		sizes       []int
		commitLast  bool // commit the last transaction before the failure
		fail        int  // event that fails
		before      []int
		wantFlushed pglogrepl.LSN
	}{
		{
			name:        "middle transaction",
			sizes:       []int{2, 2, 2},
			commitLast:  true,
			before:      []int{0, 1},
			fail:        2,
			wantFlushed: endLSN(0),
		},
		{
			name:        "first event",
			sizes:       []int{1, 1},
			commitLast:  true,
			fail:        0,
			wantFlushed: 0,
		},
		{
			name:        "last event of a committed transaction after the others",
			sizes:       []int{1, 3},
			commitLast:  true,
			before:      []int{0, 1, 2},
			fail:        3,
			wantFlushed: endLSN(0),
		},
		{
			name:        "open transaction",
			sizes:       []int{1, 2},
			commitLast:  false,
			before:      []int{0},
			fail:        2,
			wantFlushed: endLSN(0),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &held{}
			r, _ := newTestRelay(t, Config{}, h.sink())
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			runErr := make(chan error, 1)
			go func() { runErr <- r.Run(ctx) }()

			last := len(tt.sizes) - 1
			stream(t, r, tt.sizes[:last]...)
			r.Begin(commitLSN(last), commitTime)
			for j := range tt.sizes[last] {
				if err := r.Insert(t.Context(), newEvent(fmt.Sprint(j), 1)); err != nil {
					t.Fatalf("Insert = %v", err)
				}
			}
			if tt.commitLast {
				r.Commit(endLSN(last))
			}
			for _, i := range tt.before {
				h.ack(t, i, nil)
			}
			h.ack(t, tt.fail, errBroker)

			var err error
			select {
			case err = <-runErr:
			case <-time.After(10 * time.Second):
				t.Fatalf("Run did not return after a failed event")
			}
			if !errors.Is(err, ErrSinkFailed) || !errors.Is(err, errBroker) {
				t.Errorf("Run = %v, want errors wrapping ErrSinkFailed and %v", err, errBroker)
			}
			// Run again, later: the failure stays.
			if err := r.Run(ctx); !errors.Is(err, ErrSinkFailed) || !errors.Is(err, errBroker) {
				t.Errorf("second Run = %v, want errors wrapping ErrSinkFailed and %v", err, errBroker)
			}

			// Everything else succeeds, later transactions commit, the
			// server says it is idle: still nothing past the failure.
			h.ackAll(t)
			if !tt.commitLast {
				r.Commit(endLSN(last))
			}
			r.Begin(commitLSN(last+1), commitTime)
			r.Commit(endLSN(last + 1))
			r.Keepalive(endLSN(last + 10))
			if got := r.Flushed(); got != tt.wantFlushed {
				t.Errorf("Flushed() = %s, want %s", got, tt.wantFlushed)
			}
			if got := metricValue(t, r.m.flushedLSN); got != float64(tt.wantFlushed) {
				t.Errorf("outbox_relay_flushed_lsn = %v, want %v", got, float64(tt.wantFlushed))
			}

			n := h.len()
			r.Begin(commitLSN(last+2), commitTime)
			if err := r.Insert(t.Context(), newEvent("after", 1)); !errors.Is(err, errBroker) {
				t.Errorf("Insert after the failure = %v, want %v", err, errBroker)
			}
			if h.len() != n {
				t.Errorf("Insert after the failure published; %d events, want %d", h.len(), n)
			}
			if got := metricValue(t, r.m.inflightEvents); got != 0 {
				t.Errorf("outbox_relay_inflight_events = %v, want 0", got)
			}
			dctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			if err := r.Drain(dctx); err != nil {
				t.Errorf("Drain with every event acknowledged or failed = %v, want nil", err)
			}
		})
	}
}

// TestSinkFailureKeepsFirst checks that a second failure does not replace
// the first in what Run and Insert return.
func TestSinkFailureKeepsFirst(t *testing.T) {
	errFirst, errSecond := errors.New("first"), errors.New("second")
	h := &held{}
	r, _ := newTestRelay(t, Config{}, h.sink())
	stream(t, r, 2)
	h.ack(t, 1, errFirst)
	h.ack(t, 0, errSecond)
	err := r.Run(t.Context())
	if !errors.Is(err, errFirst) || errors.Is(err, errSecond) {
		t.Errorf("Run = %v, want %v and not %v", err, errFirst, errSecond)
	}
	r.Begin(commitLSN(1), commitTime)
	if err := r.Insert(t.Context(), newEvent("x", 1)); !errors.Is(err, errFirst) {
		t.Errorf("Insert = %v, want %v", err, errFirst)
	}
}

func TestRunReturnsNilWhenDone(t *testing.T) {
	h := &held{}
	r, _ := newTestRelay(t, Config{}, h.sink())
	stream(t, r, 2)
	ctx, cancel := context.WithCancel(t.Context())
	runErr := make(chan error, 1)
	go func() { runErr <- r.Run(ctx) }()
	h.ackAll(t)
	cancel()
	if err := <-runErr; err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
}

func TestDrain(t *testing.T) {
	errFlush := errors.New("flush broke")
	tests := []struct {
		name string
		// flush is the Sink's Flush; it may acknowledge through h.
		flush   func(ctx context.Context, t *testing.T, h *held) error
		timeout bool // give Drain a short deadline
		wantErr error
		// wantFlushed is the position after Drain returns.
		wantFlushed pglogrepl.LSN
	}{
		{
			name: "flush acknowledges everything",
			flush: func(_ context.Context, t *testing.T, h *held) error {
				h.ackAll(t)
				return nil
			},
			wantFlushed: endLSN(2),
		},
		{
			name: "acks arrive after flush returns",
			flush: func(_ context.Context, t *testing.T, h *held) error {
				// Deliver from other goroutines, after Flush has returned.
				h.mu.Lock()
				dones := slices.Clone(h.dones)
				for i := range h.called {
					h.called[i] = true
				}
				h.mu.Unlock()
				go func() {
					var wg sync.WaitGroup
					for i := len(dones) - 1; i >= 0; i-- {
						wg.Go(func() { dones[i](nil) })
					}
					wg.Wait()
				}()
				return nil
			},
			wantFlushed: endLSN(2),
		},
		{
			name: "acks never come, flush honours ctx",
			flush: func(ctx context.Context, _ *testing.T, _ *held) error {
				<-ctx.Done()
				return ctx.Err()
			},
			timeout:     true,
			wantErr:     context.DeadlineExceeded,
			wantFlushed: 0,
		},
		{
			name: "acks never come, flush returns early",
			flush: func(context.Context, *testing.T, *held) error {
				return nil
			},
			timeout:     true,
			wantErr:     context.DeadlineExceeded,
			wantFlushed: 0,
		},
		{
			name: "some acks come, flush returns early",
			flush: func(_ context.Context, t *testing.T, h *held) error {
				h.ack(t, 0, nil)
				h.ack(t, 1, nil)
				return nil
			},
			timeout:     true,
			wantErr:     context.DeadlineExceeded,
			wantFlushed: endLSN(1), // the empty transaction rides along
		},
		{
			name: "flush fails",
			flush: func(context.Context, *testing.T, *held) error {
				return errFlush
			},
			wantErr:     errFlush,
			wantFlushed: 0,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &held{}
			sink := h.sink()
			sink.flush = func(ctx context.Context) error { return tt.flush(ctx, t, h) }
			r, _ := newTestRelay(t, Config{}, sink)
			stream(t, r, 2, 0, 3)

			// The long bound only keeps a broken Drain from hanging the run.
			timeout := 10 * time.Second
			if tt.timeout {
				timeout = 50 * time.Millisecond
			}
			ctx, cancel := context.WithTimeout(t.Context(), timeout)
			defer cancel()
			err := r.Drain(ctx)
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("Drain = %v, want %v", err, tt.wantErr)
			}
			if got := r.Flushed(); got != tt.wantFlushed {
				t.Errorf("after Drain: Flushed() = %s, want %s", got, tt.wantFlushed)
			}
			if tt.wantErr == nil {
				if got := metricValue(t, r.m.inflightEvents); got != 0 {
					t.Errorf("after Drain: outbox_relay_inflight_events = %v, want 0", got)
				}
			}
			h.ackAll(t) // late acks are harmless
			if got, want := r.Flushed(), endLSN(2); got != want {
				t.Errorf("after late acks: Flushed() = %s, want %s", got, want)
			}
		})
	}
}

func TestDrainNothingInFlight(t *testing.T) {
	flushed := false
	sink := &fakeSink{
		publish: func(context.Context, *schema.Event, func(error)) { t.Fatal("Publish called") },
		flush:   func(context.Context) error { flushed = true; return nil },
	}
	r, _ := newTestRelay(t, Config{}, sink)
	if err := r.Drain(t.Context()); err != nil {
		t.Errorf("Drain = %v, want nil", err)
	}
	if !flushed {
		t.Errorf("Drain did not flush the Sink")
	}
}

func TestKeepalive(t *testing.T) {
	tests := []struct {
		name string
		// setup leaves the relay in some state; it returns the position
		// the state alone allows.
		setup func(t *testing.T, r *Relay, h *held) pglogrepl.LSN
		lsn   pglogrepl.LSN
		want  pglogrepl.LSN
	}{
		{
			name:  "fresh",
			setup: func(*testing.T, *Relay, *held) pglogrepl.LSN { return 0 },
			lsn:   0x5000,
			want:  0x5000,
		},
		{
			name: "idle after acks",
			setup: func(t *testing.T, r *Relay, h *held) pglogrepl.LSN {
				stream(t, r, 2, 1)
				h.ackAll(t)
				return endLSN(1)
			},
			lsn:  0x5000,
			want: 0x5000,
		},
		{
			name: "idle after an empty transaction",
			setup: func(t *testing.T, r *Relay, h *held) pglogrepl.LSN {
				stream(t, r, 0)
				return endLSN(0)
			},
			lsn:  0x5000,
			want: 0x5000,
		},
		{
			name: "behind the position",
			setup: func(t *testing.T, r *Relay, h *held) pglogrepl.LSN {
				stream(t, r, 1)
				h.ackAll(t)
				r.Keepalive(0x6000)
				return 0x6000
			},
			lsn:  0x5000,
			want: 0x6000,
		},
		{
			name: "transaction open",
			setup: func(t *testing.T, r *Relay, h *held) pglogrepl.LSN {
				stream(t, r, 1)
				h.ackAll(t)
				r.Begin(commitLSN(1), commitTime)
				return endLSN(0)
			},
			lsn:  0x5000,
			want: endLSN(0),
		},
		{
			name: "transaction open, its events acked",
			setup: func(t *testing.T, r *Relay, h *held) pglogrepl.LSN {
				r.Begin(commitLSN(0), commitTime)
				if err := r.Insert(t.Context(), newEvent("a", 1)); err != nil {
					t.Fatalf("Insert = %v", err)
				}
				h.ackAll(t)
				return 0
			},
			lsn:  0x5000,
			want: 0,
		},
		{
			name: "events in flight",
			setup: func(t *testing.T, r *Relay, h *held) pglogrepl.LSN {
				stream(t, r, 1, 2)
				h.ack(t, 0, nil)
				h.ack(t, 1, nil)
				return endLSN(0)
			},
			lsn:  0x5000,
			want: endLSN(0),
		},
		{
			name: "older events in flight, newer acked",
			setup: func(t *testing.T, r *Relay, h *held) pglogrepl.LSN {
				stream(t, r, 1, 1)
				h.ack(t, 1, nil)
				return 0
			},
			lsn:  0x5000,
			want: 0,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &held{}
			r, _ := newTestRelay(t, Config{}, h.sink())
			before := tt.setup(t, r, h)
			if got := r.Flushed(); got != before {
				t.Fatalf("before Keepalive: Flushed() = %s, want %s", got, before)
			}
			r.Keepalive(tt.lsn)
			if got := r.Flushed(); got != tt.want {
				t.Errorf("Keepalive(%s): Flushed() = %s, want %s", tt.lsn, got, tt.want)
			}
			if got := metricValue(t, r.m.flushedLSN); got != float64(tt.want) {
				t.Errorf("Keepalive(%s): outbox_relay_flushed_lsn = %v, want %v", tt.lsn, got, float64(tt.want))
			}
			h.ackAll(t)
		})
	}
}

// TestRelayProperty drives a Relay with a small in-flight bound through
// random streams, acks in random order and keepalives, checking Flushed
// against the watermark model and Room and the in-flight gauge against the
// count of unacknowledged events after every step.
func TestRelayProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		maxFlight := rapid.IntRange(1, 8).Draw(t, "max in flight")
		steps := rapid.IntRange(1, 200).Draw(t, "steps")
		h := &held{}
		r, err := New(Config{MaxInflightEvents: maxFlight}, h.sink(), nil, prometheus.NewRegistry())
		if err != nil {
			t.Fatalf("New = %v", err)
		}
		m := &wmModel{allowed: make(map[pglogrepl.LSN]bool)}
		var unackedEvents []int // published event numbers, parallel to m.unacked

		check := func(step string) {
			r.mu.Lock()
			idle := r.wm.idle()
			r.mu.Unlock()
			m.check(t, r.Flushed(), idle, step)
			full := r.Room() != nil
			if want := len(m.unacked) >= maxFlight; full != want {
				t.Fatalf("%s: %d in flight of %d: Room() blocks = %t, want %t", step, len(m.unacked), maxFlight, full, want)
			}
			if got := metricValue(t, r.m.inflightEvents); got != float64(len(m.unacked)) {
				t.Fatalf("%s: outbox_relay_inflight_events = %v, want %d", step, got, len(m.unacked))
			}
			if got := metricValue(t, r.m.flushedLSN); got != float64(m.flushed) {
				t.Fatalf("%s: outbox_relay_flushed_lsn = %v, want %v", step, got, float64(m.flushed))
			}
		}
		commit := func() {
			end := m.open.floor + pglogrepl.LSN(rapid.IntRange(1, 0x1000).Draw(t, "end gap"))
			r.Commit(end)
			m.open.end, m.open.committed = end, true
			m.lastEnd = end
			m.allowed[end] = true
			m.open = nil
		}
		ack := func() {
			k := rapid.IntRange(0, len(m.unacked)-1).Draw(t, "ack")
			m.unacked = append(m.unacked[:k], m.unacked[k+1:]...)
			i := unackedEvents[k]
			unackedEvents = append(unackedEvents[:k], unackedEvents[k+1:]...)
			h.ack(t, i, nil)
		}

		check("start")
		for i := range steps {
			var ops []string
			if m.open == nil {
				ops = append(ops, "begin")
			} else {
				ops = append(ops, "commit")
				if r.Room() == nil {
					ops = append(ops, "insert")
				}
			}
			if len(m.unacked) > 0 {
				ops = append(ops, "ack")
			}
			ops = append(ops, "keepalive")
			op := rapid.SampledFrom(ops).Draw(t, "op")
			switch op {
			case "begin":
				m.open = &modelTxn{seq: uint64(len(m.txns)), floor: max(m.lastEnd, m.maxKeepalive)}
				m.txns = append(m.txns, m.open)
				r.Begin(m.open.floor+1, commitTime)
			case "insert":
				if err := r.Insert(context.Background(), newEvent("e", 8)); err != nil {
					t.Fatalf("Insert = %v", err)
				}
				m.open.events++
				m.unacked = append(m.unacked, m.open)
				unackedEvents = append(unackedEvents, h.len()-1)
			case "commit":
				commit()
			case "ack":
				ack()
			case "keepalive":
				lsn := m.lastEnd + pglogrepl.LSN(rapid.IntRange(0, 0x2000).Draw(t, "keepalive gap"))
				idle := m.idle()
				r.Keepalive(lsn)
				m.maxKeepalive = max(m.maxKeepalive, lsn)
				if idle {
					m.maxIdleFollow = max(m.maxIdleFollow, lsn)
					m.allowed[lsn] = true
				}
			}
			check(fmt.Sprintf("step %d (%s)", i, op))
		}
		if m.open != nil {
			commit()
			check("final commit")
		}
		for len(m.unacked) > 0 {
			ack()
			check("final ack")
		}
		if want := max(m.lastEnd, m.maxIdleFollow); r.Flushed() != want {
			t.Fatalf("all acked: Flushed() = %s, want %s", r.Flushed(), want)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := r.Drain(ctx); err != nil {
			t.Fatalf("Drain = %v", err)
		}
	})
}

// BenchmarkRelayInsertAck measures one transaction through the relay: Begin,
// Insert of each event, the Sink's acks, Commit.
func BenchmarkRelayInsertAck(b *testing.B) {
	for _, n := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("events=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			dones := make([]func(error), 0, n)
			sink := &fakeSink{publish: func(_ context.Context, _ *schema.Event, done func(error)) {
				dones = append(dones, done)
			}}
			r, err := New(Config{}, sink, nil, prometheus.NewRegistry())
			if err != nil {
				b.Fatalf("New = %v", err)
			}
			evs := make([]*schema.Event, n)
			for i := range evs {
				evs[i] = newEvent(fmt.Sprint(i), 256)
			}
			ctx := context.Background()
			var lsn pglogrepl.LSN
			iters := 0
			for b.Loop() {
				iters++
				lsn += 0x1000
				r.Begin(lsn, commitTime)
				for _, ev := range evs {
					if err := r.Insert(ctx, ev); err != nil {
						b.Fatalf("Insert = %v", err)
					}
				}
				for i := len(dones) - 1; i >= 0; i-- {
					dones[i](nil)
				}
				dones = dones[:0]
				r.Commit(lsn + 0x30)
			}
			if got, want := r.Flushed(), lsn+0x30; got != want {
				b.Fatalf("Flushed() = %s, want %s", got, want)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(iters*n), "ns/event")
		})
	}
}
