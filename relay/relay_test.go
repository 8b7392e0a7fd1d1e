package relay

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pglogrepl"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
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
	return append([]schema.Event(nil), h.events...)
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

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr bool
	}{
		{name: "zero", cfg: Config{}},
		{name: "positive", cfg: Config{MaxInflightEvents: 1, MaxInflightBytes: 1}},
		{name: "negative events", cfg: Config{MaxInflightEvents: -1}, wantErr: true},
		{name: "negative bytes", cfg: Config{MaxInflightBytes: -1}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if (err != nil) != tt.wantErr {
				t.Errorf("Validate(%+v) = %v, want error %t", tt.cfg, err, tt.wantErr)
			}
			r, err := New(tt.cfg, (&held{}).sink(), nil, nil)
			if (err != nil) != tt.wantErr {
				t.Errorf("New(%+v) = %v, want error %t", tt.cfg, err, tt.wantErr)
			}
			if (r == nil) != tt.wantErr {
				t.Errorf("New(%+v) relay = %v, want nil %t", tt.cfg, r, tt.wantErr)
			}
		})
	}
}

func TestNewRegistersOnce(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := New(Config{}, (&held{}).sink(), nil, reg); err != nil {
		t.Fatalf("first New = %v", err)
	}
	_, err := New(Config{}, (&held{}).sink(), nil, reg)
	var are prometheus.AlreadyRegisteredError
	if !errors.As(err, &are) {
		t.Errorf("second New on the same registry = %v, want an AlreadyRegisteredError", err)
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

// ready reports whether ch has fired.
func ready(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// await fails the test if ch does not fire. The bound only keeps a broken
// relay from hanging the run; it measures nothing.
func await(t testing.TB, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: channel never fired", what)
	}
}

func TestRoom(t *testing.T) {
	const payload = 100
	size := newEvent("e0", payload).Size()
	tests := []struct {
		name     string
		cfg      Config
		wantFits int // events inserted before Room blocks
	}{
		{name: "events bound", cfg: Config{MaxInflightEvents: 3}, wantFits: 3},
		{name: "events bound of one", cfg: Config{MaxInflightEvents: 1}, wantFits: 1},
		{name: "bytes bound exact", cfg: Config{MaxInflightBytes: 4 * size}, wantFits: 4},
		{name: "bytes bound crossed", cfg: Config{MaxInflightBytes: 2*size + 1}, wantFits: 3},
		{name: "both, events first", cfg: Config{MaxInflightEvents: 2, MaxInflightBytes: 10 * size}, wantFits: 2},
		{name: "both, bytes first", cfg: Config{MaxInflightEvents: 10, MaxInflightBytes: 2 * size}, wantFits: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &held{}
			r, _ := newTestRelay(t, tt.cfg, h.sink())
			r.Begin(commitLSN(0), commitTime)
			insert := func(i int) {
				t.Helper()
				if err := r.Insert(t.Context(), newEvent(fmt.Sprintf("e%d", i), payload)); err != nil {
					t.Fatalf("Insert(%d) = %v", i, err)
				}
			}
			for i := range tt.wantFits {
				if ch := r.Room(); ch != nil {
					t.Fatalf("Room() with %d in flight = %v, want nil", i, ch)
				}
				insert(i)
			}
			ch := r.Room()
			if ch == nil {
				t.Fatalf("Room() with %d in flight = nil, want a channel", tt.wantFits)
			}
			if ready(ch) {
				t.Fatalf("Room() fired before any ack")
			}

			h.ack(t, 0, nil)
			await(t, ch, "Room after an ack")
			if ch := r.Room(); ch != nil {
				t.Fatalf("Room() after an ack = %v, want nil", ch)
			}

			insert(tt.wantFits)
			ch = r.Room()
			if ch == nil {
				t.Fatalf("Room() full again = nil, want a channel")
			}
			if ready(ch) {
				t.Fatalf("Room() fired again before the next ack")
			}
			h.ack(t, tt.wantFits, nil) // the newest: out of order
			await(t, ch, "Room after an out-of-order ack")
			if ch := r.Room(); ch != nil {
				t.Fatalf("Room() after the second ack = %v, want nil", ch)
			}
			r.Commit(endLSN(0))
			h.ackAll(t)
			if got, want := r.Flushed(), endLSN(0); got != want {
				t.Errorf("Flushed() = %s, want %s", got, want)
			}
		})
	}
}

// TestRoomAfterFailedEvent checks that a failed event frees its room too.
func TestRoomAfterFailedEvent(t *testing.T) {
	h := &held{}
	r, _ := newTestRelay(t, Config{MaxInflightEvents: 1}, h.sink())
	r.Begin(commitLSN(0), commitTime)
	if err := r.Insert(t.Context(), newEvent("a", 1)); err != nil {
		t.Fatalf("Insert = %v", err)
	}
	ch := r.Room()
	if ch == nil {
		t.Fatalf("Room() = nil, want a channel")
	}
	h.ack(t, 0, errors.New("broker gone"))
	await(t, ch, "Room after a failed event")
	if ch := r.Room(); ch != nil {
		t.Errorf("Room() = %v, want nil", ch)
	}
}

func TestOversizedEvent(t *testing.T) {
	h := &held{}
	r, reg := newTestRelay(t, Config{MaxInflightBytes: 100}, h.sink())
	big := newEvent("big", 1000)
	r.Begin(commitLSN(0), commitTime)
	if ch := r.Room(); ch != nil {
		t.Fatalf("Room() with nothing in flight = %v, want nil", ch)
	}
	if err := r.Insert(t.Context(), big); err != nil {
		t.Fatalf("Insert = %v", err)
	}
	if h.len() != 1 {
		t.Fatalf("published %d events, want 1", h.len())
	}
	if got, want := metricValue(t, r.m.inflightBytes), float64(big.Size()); got != want {
		t.Errorf("outbox_relay_inflight_bytes = %v, want %v", got, want)
	}
	ch := r.Room()
	if ch == nil {
		t.Fatalf("Room() with an oversized event in flight = nil, want a channel: it flows alone")
	}
	h.ack(t, 0, nil)
	await(t, ch, "Room after the oversized event's ack")
	if ch := r.Room(); ch != nil {
		t.Fatalf("Room() after ack = %v, want nil", ch)
	}
	// A second one, now behind nothing.
	if err := r.Insert(t.Context(), newEvent("big2", 1000)); err != nil {
		t.Fatalf("Insert = %v", err)
	}
	r.Commit(endLSN(0))
	h.ack(t, 1, nil)
	if got, want := r.Flushed(), endLSN(0); got != want {
		t.Errorf("Flushed() = %s, want %s", got, want)
	}
	if got := gathered(t, reg)["outbox_relay_inflight_bytes"]; got != (sample{"GAUGE", 0}) {
		t.Errorf("gathered outbox_relay_inflight_bytes = %+v, want a gauge at 0", got)
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
			if err := r.Drain(t.Context()); err != nil {
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

			ctx := t.Context()
			if tt.timeout {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, 50*time.Millisecond)
				defer cancel()
			}
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

// metricValue returns the value of a gauge or counter, or the observation
// count of a histogram.
func metricValue(t fataler, c prometheus.Metric) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatalf("write %s: %v", c.Desc(), err)
	}
	switch {
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Histogram != nil:
		return float64(m.GetHistogram().GetSampleCount())
	}
	t.Fatalf("write %s: not a gauge, counter or histogram", c.Desc())
	return 0
}

// sample is one gathered metric: its type, and its value (a histogram's
// is its observation count).
type sample struct {
	Type  string
	Value float64
}

// gathered returns what reg serves, by metric name.
func gathered(t *testing.T, reg *prometheus.Registry) map[string]sample {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather = %v", err)
	}
	got := make(map[string]sample)
	for _, mf := range mfs {
		if len(mf.GetMetric()) != 1 {
			t.Fatalf("gathered %s: %d series, want 1", mf.GetName(), len(mf.GetMetric()))
		}
		m := mf.GetMetric()[0]
		s := sample{Type: mf.GetType().String()}
		switch mf.GetType() {
		case dto.MetricType_GAUGE:
			s.Value = m.GetGauge().GetValue()
		case dto.MetricType_COUNTER:
			s.Value = m.GetCounter().GetValue()
		case dto.MetricType_HISTOGRAM:
			s.Value = float64(m.GetHistogram().GetSampleCount())
		}
		got[mf.GetName()] = s
	}
	return got
}

func TestMetrics(t *testing.T) {
	h := &held{}
	r, reg := newTestRelay(t, Config{MaxInflightEvents: 7, MaxInflightBytes: 1 << 20}, h.sink())

	type want struct {
		events, bytes, txns, flushed float64
		latency                      uint64
	}
	check := func(step string, w want) {
		t.Helper()
		for _, c := range []struct {
			name string
			got  float64
			want float64
		}{
			{"outbox_relay_inflight_events", metricValue(t, r.m.inflightEvents), w.events},
			{"outbox_relay_inflight_bytes", metricValue(t, r.m.inflightBytes), w.bytes},
			{"outbox_relay_transactions_total", metricValue(t, r.m.transactions), w.txns},
			{"outbox_relay_flushed_lsn", metricValue(t, r.m.flushedLSN), w.flushed},
		} {
			if c.got != c.want {
				t.Errorf("%s: %s = %v, want %v", step, c.name, c.got, c.want)
			}
		}
		if got := uint64(metricValue(t, r.m.latency)); got != w.latency {
			t.Errorf("%s: outbox_relay_end_to_end_latency_seconds count = %d, want %d", step, got, w.latency)
		}
	}

	evs := []*schema.Event{newEvent("a", 10), newEvent("b", 200), newEvent("c", 3000)}
	sizes := []float64{float64(evs[0].Size()), float64(evs[1].Size()), float64(evs[2].Size())}
	check("start", want{})

	r.Begin(commitLSN(0), time.Now())
	for _, ev := range evs[:2] {
		if err := r.Insert(t.Context(), ev); err != nil {
			t.Fatalf("Insert = %v", err)
		}
	}
	r.Commit(endLSN(0))
	r.Begin(commitLSN(1), time.Now())
	if err := r.Insert(t.Context(), evs[2]); err != nil {
		t.Fatalf("Insert = %v", err)
	}
	check("three inserted", want{events: 3, bytes: sizes[0] + sizes[1] + sizes[2], txns: 1})

	h.ack(t, 1, nil)
	check("one acked", want{events: 2, bytes: sizes[0] + sizes[2], txns: 1, latency: 1})

	h.ack(t, 0, nil)
	check("first transaction acked", want{events: 1, bytes: sizes[2], txns: 1, flushed: float64(endLSN(0)), latency: 2})

	h.ack(t, 2, errors.New("no leader"))
	check("failed", want{events: 0, bytes: 0, txns: 1, flushed: float64(endLSN(0)), latency: 2})

	r.Commit(endLSN(1))
	check("second committed", want{events: 0, bytes: 0, txns: 2, flushed: float64(endLSN(0)), latency: 2})

	// The registry serves them under these names.
	wantGathered := map[string]sample{
		"outbox_relay_flushed_lsn":                {"GAUGE", float64(endLSN(0))},
		"outbox_relay_inflight_bytes":             {"GAUGE", 0},
		"outbox_relay_inflight_bytes_limit":       {"GAUGE", 1 << 20},
		"outbox_relay_inflight_events":            {"GAUGE", 0},
		"outbox_relay_inflight_events_limit":      {"GAUGE", 7},
		"outbox_relay_transactions_total":         {"COUNTER", 2},
		"outbox_relay_end_to_end_latency_seconds": {"HISTOGRAM", 2},
	}
	if diff := cmp.Diff(wantGathered, gathered(t, reg)); diff != "" {
		t.Errorf("gathered metrics (-want +got):\n%s", diff)
	}
}

func TestMetricsDefaultLimits(t *testing.T) {
	_, reg := newTestRelay(t, Config{}, (&held{}).sink())
	got := gathered(t, reg)
	for name, want := range map[string]sample{
		"outbox_relay_inflight_events_limit": {"GAUGE", 10000},
		"outbox_relay_inflight_bytes_limit":  {"GAUGE", 16 << 20},
	} {
		if got[name] != want {
			t.Errorf("gathered %s = %+v, want %+v", name, got[name], want)
		}
	}
}

// TestConcurrentAcks runs the stream on the test goroutine, waiting on Room
// like the real one, while many goroutines acknowledge in no particular
// order and another watches Flushed. Run it with -race.
func TestConcurrentAcks(t *testing.T) {
	const (
		txns       = 300
		maxEvents  = 12
		maxFlight  = 16
		ackers     = 16
		batchLimit = 5
	)
	rng := rand.New(rand.NewPCG(7, 11))
	dones := make(chan func(error), maxFlight)
	var inSink, peak atomic.Int64
	sink := &fakeSink{publish: func(_ context.Context, _ *schema.Event, done func(error)) {
		n := inSink.Add(1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		dones <- func(err error) {
			inSink.Add(-1) // before done, so inSink never exceeds the relay's count
			done(err)
		}
	}}
	r, _ := newTestRelay(t, Config{MaxInflightEvents: maxFlight}, sink)

	var wg sync.WaitGroup
	for k := range ackers {
		wg.Go(func() {
			// Hold a few, acknowledge them newest first; never sit on a
			// batch while waiting, or the stream could wait on Room forever.
			var batch []func(error)
			release := func() {
				for i := len(batch) - 1; i >= 0; i-- {
					batch[i](nil)
				}
				batch = batch[:0]
			}
			for {
				var done func(error)
				var ok bool
				select {
				case done, ok = <-dones:
				default:
					release()
					done, ok = <-dones
				}
				if !ok {
					release()
					return
				}
				batch = append(batch, done)
				if len(batch) > k%batchLimit {
					release()
				}
			}
		})
	}
	stop := make(chan struct{})
	watchErr := make(chan error, 1)
	go func() {
		var last pglogrepl.LSN
		for {
			select {
			case <-stop:
				watchErr <- nil
				return
			default:
			}
			if got := r.Flushed(); got < last {
				watchErr <- fmt.Errorf("Flushed() = %s, moved back from %s", got, last)
				return
			} else {
				last = got
			}
		}
	}()

	for i := range txns {
		r.Begin(commitLSN(i), commitTime)
		for j := range rng.IntN(maxEvents + 1) {
			for ch := r.Room(); ch != nil; ch = r.Room() {
				await(t, ch, "Room under concurrent acks")
			}
			if err := r.Insert(t.Context(), newEvent(fmt.Sprintf("t%d-e%d", i, j), 16)); err != nil {
				t.Fatalf("Insert = %v", err)
			}
		}
		r.Commit(endLSN(i))
		if i%17 == 0 {
			r.Keepalive(endLSN(i)) // only ever what was committed, so it never changes the outcome
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	drainErr := r.Drain(ctx)
	close(dones)
	wg.Wait()
	close(stop)
	if err := <-watchErr; err != nil {
		t.Error(err)
	}
	if drainErr != nil {
		t.Fatalf("Drain = %v", drainErr)
	}
	if got, want := r.Flushed(), endLSN(txns-1); got != want {
		t.Errorf("Flushed() = %s, want %s", got, want)
	}
	if got := peak.Load(); got > maxFlight {
		t.Errorf("%d events in the Sink at once, want at most %d", got, maxFlight)
	}
	if got := metricValue(t, r.m.inflightEvents); got != 0 {
		t.Errorf("outbox_relay_inflight_events = %v, want 0", got)
	}
	if got := metricValue(t, r.m.inflightBytes); got != 0 {
		t.Errorf("outbox_relay_inflight_bytes = %v, want 0", got)
	}
	if got := metricValue(t, r.m.transactions); got != txns {
		t.Errorf("outbox_relay_transactions_total = %v, want %d", got, txns)
	}
}

// TestFlushedMetricAfterConcurrentAcks acknowledges each transaction's
// events from several goroutines at once and then compares
// outbox_relay_flushed_lsn with Flushed. Every ack reads the position under
// the lock but sets the gauge after releasing it, so an ack that did not
// move the position can set its older value after the ack that did, and the
// gauge stays behind (until the next Commit, ack or Keepalive sets it).
func TestFlushedMetricAfterConcurrentAcks(t *testing.T) {
	const (
		rounds = 3000
		events = 8
	)
	h := &held{}
	r, _ := newTestRelay(t, Config{}, h.sink())
	for round := range rounds {
		first := h.len()
		r.Begin(commitLSN(round), commitTime)
		for j := range events {
			if err := r.Insert(t.Context(), newEvent(fmt.Sprint(j), 1)); err != nil {
				t.Fatalf("Insert = %v", err)
			}
		}
		r.Commit(endLSN(round))
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := first; i < first+events; i++ {
			done := h.take(t, i)
			wg.Go(func() {
				<-start
				done(nil)
			})
		}
		close(start)
		wg.Wait()
		if got, want := metricValue(t, r.m.flushedLSN), r.Flushed(); got != float64(want) {
			t.Fatalf("round %d, all acked: outbox_relay_flushed_lsn = %s, want Flushed() = %s",
				round, pglogrepl.LSN(got), want)
		}
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
		if err := r.Drain(context.Background()); err != nil {
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
