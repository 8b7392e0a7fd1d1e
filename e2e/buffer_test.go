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

// TestStalledBrokerLargeInflightBoundStops sets the in-flight event bound
// above the Kafka client's default record buffer (50,000) with a backlog
// larger than both while the broker answers no produce request. The relay
// must stop reading at its own bound, where a signal reaches it, not block
// inside the client: SIGTERM ends it within the shutdown timeout.
func TestStalledBrokerLargeInflightBoundStops(t *testing.T) {
	const (
		rows     = 70_000
		inflight = 60_000
		shutdown = 3 * time.Second
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

	p := e.start("OUTBOX_RELAY_MAX_INFLIGHT_EVENTS="+strconv.Itoa(inflight),
		"OUTBOX_RELAY_MAX_INFLIGHT_BYTES="+strconv.Itoa(1<<30),
		"OUTBOX_RELAY_SHUTDOWN_TIMEOUT="+shutdown.String())
	p.waitStreaming(time.Minute)
	// Wait until the relay holds its bound (or, before the fix, the
	// client's buffer holds 50,000 records and Produce blocks).
	deadline := time.Now().Add(time.Minute)
	for {
		m := metricLines(t, p, "outbox_relay_inflight_events")
		var n float64
		if _, err := fmt.Sscanf(m, "outbox_relay_inflight_events=%g", &n); err == nil && n >= 50_000 {
			t.Logf("in flight before SIGTERM: %s; %d produce requests held", m, held.Load())
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("in flight never reached 50,000 within a minute: %s", m)
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(time.Second) // let the stream reach the point where it waits

	start := time.Now()
	code := p.term(shutdown + 10*time.Second)
	took := time.Since(start)
	t.Logf("SIGTERM to exit: %s (shutdown timeout %s), exit code %d", ms(took), shutdown, code)
	if took > shutdown+3*time.Second {
		t.Errorf("relay took %s to exit after SIGTERM, more than the %s shutdown timeout and a 3s margin", ms(took), shutdown)
	}
}
