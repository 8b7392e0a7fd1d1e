package cdc_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/outbox-relay/outbox-relay/cdc"
	"github.com/outbox-relay/outbox-relay/cdc/pgtest"
	"github.com/outbox-relay/outbox-relay/relay"
	"github.com/outbox-relay/outbox-relay/schema"
)

// runHandler runs a Stream for cfg against h until the test ends, and
// returns the channel that receives Run's result and the function that
// cancels it.
func runHandler(t *testing.T, cfg cdc.Config, h cdc.Handler) (<-chan error, *prometheus.Registry) {
	t.Helper()
	if cfg.StatusInterval == 0 {
		cfg.StatusInterval = 100 * time.Millisecond
	}
	reg := prometheus.NewRegistry()
	st, err := cdc.New(cfg, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done, finished := make(chan error, 1), make(chan struct{})
	go func() {
		defer close(finished)
		done <- st.Run(ctx, h)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-finished:
		case <-time.After(30 * time.Second):
			t.Error("Run did not return 30s after cancel")
		}
	})
	return done, reg
}

// gauge returns the value of the named gauge in reg, or zero.
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) > 0 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return 0
}

// staleFlushed is a relay whose Flushed reports a fixed, stale position, as
// a standby taking over reports less than the slot's confirmed position.
type staleFlushed struct {
	*relay.Relay
	at pglogrepl.LSN
}

func (s staleFlushed) Flushed() pglogrepl.LSN { return s.at }

// TestStreamNeverConfirmsBelowSlot runs a Handler whose Flushed lags the
// slot's confirmed position: the stream must never send a position below
// it (PostgreSQL 15.18 ignores one, but the stream must not rely on that),
// and the slot's position must not move back.
func TestStreamNeverConfirmsBelowSlot(t *testing.T) {
	cfg := cdc.Config{DSN: pgtest.NewDatabase(t), Slot: "below_test"}
	conn := setupDB(t, cfg)
	insertBatch(t, cfg.DSN, 0, 10)
	exec(t, conn, `SELECT pg_replication_slot_advance($1, pg_current_wal_lsn())`, cfg.Slot)
	before, err := cdc.ReadSlot(t.Context(), conn, cfg.Slot)
	if err != nil {
		t.Fatal(err)
	}
	core, err := relay.New(relay.Config{}, newMemSink(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, reg := runHandler(t, cfg, staleFlushed{Relay: core, at: 1})
	waitConfirmed(t, conn, cfg.Slot, func(s cdc.Slot) bool { return s.Active })
	for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if sent := pglogrepl.LSN(gauge(t, reg, "outbox_relay_confirmed_lsn")); sent != 0 && sent < before.ConfirmedFlush {
			t.Fatalf("stream sent position %s, below the slot's confirmed %s", sent, before.ConfirmedFlush)
		}
		s, err := cdc.ReadSlot(t.Context(), conn, cfg.Slot)
		if err != nil {
			t.Fatal(err)
		}
		if s.ConfirmedFlush < before.ConfirmedFlush {
			t.Fatalf("slot confirmed position went back from %s to %s", before.ConfirmedFlush, s.ConfirmedFlush)
		}
	}
}

// slowSink acknowledges every event after a delay, from another goroutine.
type slowSink struct {
	*memSink
	delay time.Duration
}

func (s slowSink) Publish(ctx context.Context, ev *schema.Event, done func(error)) {
	s.memSink.Publish(ctx, ev, func(error) {})
	go func() {
		time.Sleep(s.delay)
		done(nil)
	}()
}

// failingInsert is a relay whose Insert fails from the failAt-th event on.
type failingInsert struct {
	*relay.Relay
	n, failAt int
}

var errInsert = errors.New("insert refused by the test")

func (f *failingInsert) Insert(ctx context.Context, ev *schema.Event) error {
	f.n++
	if f.n >= f.failAt {
		return errInsert
	}
	return f.Relay.Insert(ctx, ev)
}

// TestStreamConfirmsAcknowledgedOnHandlerError fails the Handler while
// earlier events are still in flight: Run returns the failure only after
// they are acknowledged and their position is confirmed to the slot.
func TestStreamConfirmsAcknowledgedOnHandlerError(t *testing.T) {
	cfg := cdc.Config{DSN: pgtest.NewDatabase(t), Slot: "fail_confirm_test"}
	conn := setupDB(t, cfg)
	before, err := cdc.ReadSlot(t.Context(), conn, cfg.Slot)
	if err != nil {
		t.Fatal(err)
	}
	core, err := relay.New(relay.Config{}, slowSink{memSink: newMemSink(), delay: 500 * time.Millisecond}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	insertBatch(t, cfg.DSN, 0, 10)
	done, _ := runHandler(t, cfg, &failingInsert{Relay: core, failAt: 6})
	select {
	case err := <-done:
		if !errors.Is(err, errInsert) {
			t.Fatalf("Run() = %v, want the Handler's error", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after the Handler failed")
	}
	time.Sleep(time.Second) // every acknowledgement has arrived
	want := core.Flushed()
	if want <= before.ConfirmedFlush {
		t.Fatalf("relay flushed %s, not past the slot's start %s: the test proves nothing", want, before.ConfirmedFlush)
	}
	s, err := cdc.ReadSlot(t.Context(), conn, cfg.Slot)
	if err != nil {
		t.Fatal(err)
	}
	if s.ConfirmedFlush < want {
		t.Errorf("slot confirmed %s after Run returned, want at least the acknowledged %s", s.ConfirmedFlush, want)
	}
}
