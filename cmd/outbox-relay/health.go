package main

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/outbox-relay/outbox-relay/cdc"
)

// healthInterval is how often the broker is pinged and the slot read.
const healthInterval = 5 * time.Second

// wedgedAfter is how long the streaming loop may go without a round before
// /healthz fails: it goes round at least every status interval.
const wedgedAfter = time.Minute

// health answers /healthz (the process and its loops are alive) and /readyz
// (connected to PostgreSQL and Kafka, and streaming or standing by).
type health struct {
	stream   *cdc.Stream
	monitor  *cdc.Monitor
	ping     func(context.Context) error
	brokerOK atomic.Int64 // unix nanoseconds of the last answered ping
}

// run pings the brokers every healthInterval until ctx ends.
func (h *health) run(ctx context.Context) error {
	t := time.NewTicker(healthInterval)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, healthInterval)
		if h.ping(pctx) == nil {
			h.brokerOK.Store(time.Now().UnixNano())
		}
		cancel()
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// live reports whether the process should be restarted, and why.
func (h *health) live() (bool, string) {
	if h.stream.State() == cdc.StateStreaming {
		if since := time.Since(h.stream.Beat()); since > wedgedAfter {
			return false, fmt.Sprintf("the replication loop has not gone round for %s", since.Round(time.Second))
		}
	}
	return true, "ok"
}

// ready reports whether the relay does its job, and if not, why.
func (h *health) ready() (bool, string) {
	switch st := h.stream.State(); st {
	case cdc.StateStreaming, cdc.StateStandby:
	default:
		return false, "replication stream is " + st.String()
	}
	if !h.monitor.Healthy() {
		return false, "PostgreSQL does not answer"
	}
	last := h.brokerOK.Load()
	if last == 0 || time.Since(time.Unix(0, last)) > 3*healthInterval {
		return false, "no Kafka broker answers"
	}
	return true, h.stream.State().String()
}

func probe(check func() (bool, string)) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		ok, why := check()
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprintln(w, why)
	}
}
