package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
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
// (connected to PostgreSQL and the broker, and streaming or standing by).
type health struct {
	stream   *cdc.Stream
	monitor  *cdc.Monitor
	ping     func(context.Context) error
	broker   string       // the sink's name, for readiness messages
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
		return false, "no " + h.broker + " broker answers"
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

// healthcheck asks the relay listening on addr for path and fails unless it
// answers 200 within three seconds. Container images have no curl; the
// binary checks itself.
func healthcheck(ctx context.Context, addr, path string, stdout io.Writer) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return usageError{fmt.Errorf("--metrics-addr %q: %w", addr, err)}
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	url := "http://" + net.JoinHostPort(host, port) + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return usageError{fmt.Errorf("--path %q: %w", path, err)}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("health check %s: %w", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("health check %s: %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	fmt.Fprint(stdout, string(body))
	return nil
}
