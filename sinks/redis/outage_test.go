package redis_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/outbox-relay/outbox-relay/sinks/delivery"
	"github.com/outbox-relay/outbox-relay/sinks/redis"
	"github.com/outbox-relay/outbox-relay/sinks/redis/redistest"
)

// TestCrash kills the server with SIGKILL while the sink publishes, with
// appendfsync always, and starts it again: every event acknowledged before
// the kill is in its stream after the restart, the rest arrive once the
// sink reconnects, each aggregate in order, and no done reports an error.
func TestCrash(t *testing.T) {
	srv := redistest.Start(t)
	s := newSink(t, srv, redis.Config{Delivery: delivery.Config{
		MaxBatch: 32, RetryMin: 10 * time.Millisecond, RetryMax: 100 * time.Millisecond,
	}}, nil, nil)
	const n = 20_000
	evs := events("Crash", n, 50)
	d := newDones()
	d.publish(s, evs)

	// Kill once some, not all, are acknowledged.
	deadline := time.Now().Add(testTimeout)
	for len(d.acked()) < n/20 {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d events acknowledged after %s", len(d.acked()), n, testTimeout)
		}
		time.Sleep(time.Millisecond)
	}
	srv.Kill(t)
	before := d.acked()
	if len(before) == n {
		t.Fatal("every event was acknowledged before the kill; publish more")
	}
	t.Logf("%d of %d events acknowledged before the kill", len(before), n)
	srv.Start(t)

	// What the server acknowledged before the kill came back from its
	// append-only file: the sink never sends an acknowledged event again.
	stored := make(map[string]bool)
	for _, m := range srv.Read(t, "outbox.*") {
		id, _ := m.Header(delivery.HeaderID)
		stored[id] = true
	}
	lost := 0
	for _, id := range before {
		if !stored[id] {
			lost++
		}
	}
	if lost > 0 {
		t.Errorf("%d of the %d events acknowledged before the kill are not stored after the restart", lost, len(before))
	}

	d.wait(t)
	if f := d.failures(); len(f) > 0 {
		t.Fatalf("%d failures, first %v", len(f), f[0])
	}
	checkStored(t, srv, "outbox.*", evs)
}

// TestServerRefusals makes the server refuse writes for a reason of its
// own, then lifts it: the sink holds the events and retries, none fails,
// and all arrive in order.
func TestServerRefusals(t *testing.T) {
	for _, tc := range []struct {
		name string
		code string // the error reply the sink must have retried
		// refuse makes the server refuse writes; it returns what lifts it.
		refuse func(t *testing.T, srv *redistest.Server) (lift func())
	}{
		{"out of memory", "OOM", func(t *testing.T, srv *redistest.Server) func() {
			c := srv.Client(t)
			configSet(t, c, "maxmemory", "1")
			return func() { configSet(t, c, "maxmemory", "0") }
		}},
		{"read-only replica", "READONLY", func(t *testing.T, srv *redistest.Server) func() {
			c := srv.Client(t)
			// A primary nobody runs: the server turns replica and stays one.
			if err := c.Do(testContext(t), "REPLICAOF", "127.0.0.1", "1").Err(); err != nil {
				t.Fatal(err)
			}
			return func() {
				if err := c.Do(testContext(t), "REPLICAOF", "NO", "ONE").Err(); err != nil {
					t.Fatal(err)
				}
			}
		}},
		{"busy script", "BUSY", func(t *testing.T, srv *redistest.Server) func() {
			c := srv.Client(t)
			configSet(t, c, "busy-reply-threshold", "20")
			// The script runs until SCRIPT KILL, on a connection that waits
			// for it without a timeout.
			opt := goredis.Options{Addr: srv.Addr, Protocol: 2, DisableIdentity: true, ReadTimeout: -1, MaxRetries: -1}
			script := goredis.NewClient(&opt)
			var wg sync.WaitGroup
			wg.Go(func() { _ = script.Eval(context.Background(), "while true do end", nil).Err() })
			waitBusy(t, c)
			return func() {
				if err := c.Do(testContext(t), "SCRIPT", "KILL").Err(); err != nil {
					t.Fatal(err)
				}
				wg.Wait()
				script.Close()
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := redistest.Start(t)
			var l logs
			s := newSink(t, srv, redis.Config{}, l.logger(), nil)
			before := events("Refused", 50, 5)
			d := newDones()
			d.publish(s, before)
			d.wait(t)

			lift := tc.refuse(t, srv)
			evs := events("Refused", 250, 10)[50:]
			d.publish(s, evs)
			l.waitFor(t, slog.LevelWarn, "broker did not take messages", "err", tc.code)
			if f := d.failures(); len(f) > 0 {
				t.Fatalf("while the server refused writes: %v", f)
			}
			lift()
			d.wait(t)
			if f := d.failures(); len(f) > 0 {
				t.Fatalf("%d failures, first %v", len(f), f[0])
			}
			checkStored(t, srv, "outbox.*", append(before, evs...))
		})
	}
}

func configSet(t *testing.T, c *goredis.Client, name, value string) {
	t.Helper()
	if err := c.ConfigSet(testContext(t), name, value).Err(); err != nil {
		t.Fatalf("CONFIG SET %s %s: %v", name, value, err)
	}
}

// waitBusy polls until the server answers BUSY.
func waitBusy(t *testing.T, c *goredis.Client) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for {
		err := c.Ping(testContext(t)).Err()
		if err != nil && goredis.HasErrorPrefix(err, "BUSY") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server does not answer BUSY: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestCloseDuringOutage checks that Close returns, failing what was not
// acknowledged, while the server does not answer.
func TestCloseDuringOutage(t *testing.T) {
	srv := redistest.Start(t)
	s, err := redis.New(redis.Config{URL: srv.URL, Delivery: fastRetries}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv.Stop(t)
	d := newDones()
	evs := events("Closed", 20, 4)
	d.publish(s, evs)
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	d.wait(t)
	for _, ev := range evs {
		err, _ := d.err(ev.ID)
		if err == nil {
			t.Errorf("event %s: done got nil with the server stopped", ev.ID)
		} else if _, poison := s.Poison(err); poison {
			t.Errorf("event %s: done got poison %v, want a reason to stop", ev.ID, err)
		}
	}
}

// TestCloseWhileBlocked checks that Close returns while an XADD waits for a
// server that holds writes (CLIENT PAUSE), long before the read timeout:
// Send honours its context.
func TestCloseWhileBlocked(t *testing.T) {
	srv := redistest.Start(t)
	c := srv.Client(t)
	s, err := redis.New(redis.Config{URL: srv.URL, ReadTimeout: time.Hour, Delivery: fastRetries}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Do(testContext(t), "CLIENT", "PAUSE", "600000", "WRITE").Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Do(context.Background(), "CLIENT", "UNPAUSE").Err() })
	d := newDones()
	evs := events("Paused", 10, 2)
	d.publish(s, evs)
	waitBlocked(t, c)

	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(testTimeout):
		t.Fatalf("Close did not return within %s while XADD was held", testTimeout)
	}
	d.wait(t)
	for _, ev := range evs {
		if err, _ := d.err(ev.ID); !errors.Is(err, delivery.ErrClosed) {
			t.Errorf("event %s: done got %v, want an error wrapping ErrClosed", ev.ID, err)
		}
	}
}

// waitBlocked polls until the server holds a client's command.
func waitBlocked(t *testing.T, c *goredis.Client) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for {
		info, err := c.Info(testContext(t), "clients").Result()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(info, "blocked_clients:0") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no client blocked after %s:\n%s", testTimeout, info)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
