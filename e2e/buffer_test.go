package e2e

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestStalledBrokerStopsWithinTimeout SIGTERMs a relay that is inside one
// large transaction while the broker answers no produce request: it can
// neither finish the transaction nor drain. The whole stop, reading on,
// draining and the final confirmation, must fit in --shutdown-timeout
// (with a margin for the process to exit):
//   - with the default in-flight bound;
//   - with an in-flight bound above the Kafka client's default record
//     buffer (50,000), where the relay must stop reading at its own bound,
//     where a signal reaches it, not block inside the client.
//
// It runs alone, not in parallel: it bounds the relay's stop to a margin
// of 1.5 s, which other tests' load could use up.
func TestStalledBrokerStopsWithinTimeout(t *testing.T) {
	for _, tt := range []struct {
		name     string
		inflight int
	}{
		{"default bound", 0},
		{"bound above the client buffer", 60_000},
	} {
		t.Run(tt.name, func(t *testing.T) { stalledStop(t, tt.inflight) })
	}
}

// stalledStop runs TestStalledBrokerStopsWithinTimeout with an in-flight
// event bound of inflight, or the default for 0.
func stalledStop(t *testing.T, inflight int) {
	const (
		rows     = 70_000
		shutdown = 4 * time.Second
		margin   = 1500 * time.Millisecond
	)
	e := newEnv(t)
	e.query(t, 2*time.Minute, func(ctx context.Context, conn *pgx.Conn) error {
		_, err := conn.Exec(ctx, `INSERT INTO outbox (id, aggregate_type, aggregate_id, event_type, payload)
			SELECT md5('buf-' || g)::uuid, 'buf', 'buf-' || (g % 100), 'loaded', jsonb_build_object('seq', g)
			FROM generate_series(1, $1::int) AS g`, rows)
		if err != nil {
			return fmt.Errorf("insert %d rows: %w", rows, err)
		}
		return nil
	})

	release := make(chan struct{})
	var held atomic.Int64
	e.broker.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		e.broker.KeepControl()
		held.Add(1)
		e.broker.SleepControl(func() { <-release })
		return nil, nil, false
	})
	t.Cleanup(func() { close(release) })

	env := []string{"OUTBOX_RELAY_SHUTDOWN_TIMEOUT=" + shutdown.String()}
	full := 5000 // the default bound
	if inflight > 0 {
		// Reached before the bound if Publish blocks in the client.
		full = min(inflight, 50_000)
		env = append(env, "OUTBOX_RELAY_MAX_INFLIGHT_EVENTS="+strconv.Itoa(inflight),
			"OUTBOX_RELAY_MAX_INFLIGHT_BYTES="+strconv.Itoa(1<<30))
	}
	p := e.start(env...)
	p.waitStreaming(time.Minute)
	deadline := time.Now().Add(time.Minute)
	for {
		m := metricLines(t, p, "outbox_relay_inflight_events")
		var n float64
		if _, err := fmt.Sscanf(m, "outbox_relay_inflight_events=%g", &n); err == nil && n >= float64(full) {
			t.Logf("in flight before SIGTERM: %s; %d produce requests held", m, held.Load())
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("in flight never reached %d within a minute: %s", full, m)
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(time.Second) // let the stream reach the point where it waits

	start := time.Now()
	code := p.term(3 * shutdown)
	took := time.Since(start)
	t.Logf("SIGTERM to exit: %s (shutdown timeout %s), exit code %d", ms(took), shutdown, code)
	if took > shutdown+margin {
		t.Errorf("relay took %s to exit after SIGTERM, more than the %s shutdown timeout and a %s margin", ms(took), shutdown, margin)
	}
	if !p.waitLogged("final position confirmed", 1, time.Second) {
		t.Errorf("relay did not confirm its final position before exiting:\n%s", p.logText())
	}
}
