package relay

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/outbox-relay/outbox-relay/schema"
)

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

// TestConcurrentAcks runs the stream on the test goroutine, waiting on Room
// like the real one, while many goroutines acknowledge in no particular
// order and another watches Flushed. Run it with -race.
func TestConcurrentAcks(t *testing.T) {
	const (
		txns       = 2000
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
			got := r.Flushed()
			if got < last {
				watchErr <- fmt.Errorf("Flushed() = %s, moved back from %s", got, last)
				return
			}
			last = got
			runtime.Gosched() // leave the stream and the ackers room on one CPU
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
