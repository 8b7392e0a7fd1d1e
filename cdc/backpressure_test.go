package cdc_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outbox-relay/outbox-relay/cdc"
	"github.com/outbox-relay/outbox-relay/cdc/pgtest"
	"github.com/outbox-relay/outbox-relay/relay"
	"github.com/outbox-relay/outbox-relay/schema"
)

// heldSink keeps every done callback until the test releases it.
type heldSink struct {
	mu      sync.Mutex
	held    []func(error)
	seen    int
	maxHeld int
}

func (s *heldSink) Publish(_ context.Context, _ *schema.Event, done func(error)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.held = append(s.held, done)
	s.seen++
	s.maxHeld = max(s.maxHeld, len(s.held))
}

func (s *heldSink) Flush(context.Context) error { return nil }

// release acknowledges every held event, newest first, as partitions may.
func (s *heldSink) release() int {
	s.mu.Lock()
	held := s.held
	s.held = nil
	s.mu.Unlock()
	for i := len(held) - 1; i >= 0; i-- {
		held[i](nil)
	}
	return len(held)
}

func (s *heldSink) counts() (seen, held, maxHeld int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen, len(s.held), s.maxHeld
}

// TestStreamBackpressureOnLargeTransaction streams a transaction ten times
// larger than the in-flight bound: the stream stops reading at the bound,
// flows as acknowledgements free room, and confirms the transaction only once
// all of it is acknowledged.
func TestStreamBackpressureOnLargeTransaction(t *testing.T) {
	const bound, rows = 50, 500
	cfg := cdc.Config{DSN: pgtest.NewDatabase(t), Slot: "backpressure_test", StatusInterval: 50 * time.Millisecond}
	conn := setupDB(t, cfg)
	ctx := t.Context()

	sink := &heldSink{}
	core, err := relay.New(relay.Config{MaxInflightEvents: bound}, sink, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	st, err := cdc.New(cfg, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- st.Run(runCtx, core) }()
	defer func() {
		cancel()
		<-done
	}()

	msgs := make([]schema.Message, rows)
	for i := range msgs {
		msgs[i] = schema.Message{AggregateType: "a", AggregateID: fmt.Sprint(i % 7), EventType: "e", Payload: []byte(`{}`)}
	}
	if err := schema.Insert(ctx, conn, msgs...); err != nil {
		t.Fatal(err)
	}
	before, err := cdc.ReadSlot(ctx, conn, cfg.Slot)
	if err != nil {
		t.Fatal(err)
	}

	// The stream fills the bound and then waits.
	waitUntil(t, func() bool { seen, _, _ := sink.counts(); return seen == bound })
	time.Sleep(300 * time.Millisecond)
	if seen, _, _ := sink.counts(); seen != bound {
		t.Fatalf("sink saw %d events with none acknowledged, want the bound %d", seen, bound)
	}
	// Release in rounds; the transaction must not be confirmed before the end.
	for {
		sink.release()
		seen, held, maxHeld := sink.counts()
		if maxHeld > bound {
			t.Fatalf("%d events in flight, bound %d", maxHeld, bound)
		}
		if seen == rows && held == 0 {
			break
		}
		s, err := cdc.ReadSlot(ctx, conn, cfg.Slot)
		if err != nil {
			t.Fatal(err)
		}
		if s.ConfirmedFlush > before.ConfirmedFlush {
			t.Fatalf("slot confirmed %s with %d of %d events acknowledged; it was at %s", s.ConfirmedFlush, seen-held, rows, before.ConfirmedFlush)
		}
		waitUntil(t, func() bool { s, h, _ := sink.counts(); return h > 0 || s == rows })
	}
	waitConfirmed(t, conn, cfg.Slot, func(s cdc.Slot) bool { return s.ConfirmedFlush > before.ConfirmedFlush })
}

func waitUntil(t *testing.T, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if ok() {
			return
		}
	}
	t.Fatal("condition not met within 30s")
}
