package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// get asks h for path and returns the status code and body.
func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Body.String()
}

// TestEndpointAcrossRuns checks what the daemon's HTTP endpoint answers
// before a run, during one and between two: the process's metrics always,
// the run's metrics and probes only while it serves, and alive but not
// ready, saying why, while no run does.
func TestEndpointAcrossRuns(t *testing.T) {
	e := newEndpoint()
	h := e.handler()
	between := func(doing string) {
		t.Helper()
		if code, body := get(t, h, "/healthz"); code != http.StatusOK || !strings.Contains(body, doing) {
			t.Errorf("/healthz = %d %q, want 200 saying %q", code, body, doing)
		}
		if code, body := get(t, h, "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, doing) {
			t.Errorf("/readyz = %d %q, want 503 saying %q", code, body, doing)
		}
		_, body := get(t, h, "/metrics")
		if !strings.Contains(body, "outbox_relay_build_info") || !strings.Contains(body, "go_goroutines") {
			t.Errorf("/metrics between runs lacks the process's metrics:\n%s", body)
		}
		if strings.Contains(body, "outbox_relay_test_run_total") {
			t.Errorf("/metrics between runs still serves the run's metrics")
		}
		if !strings.Contains(body, "\noutbox_relay_streaming 0\n") {
			t.Errorf("/metrics between runs lacks outbox_relay_streaming 0, which the no-instance-streaming alert reads:\n%s", body)
		}
	}
	between("starting")

	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "outbox_relay_test_run_total", Help: "A run's counter."})
	c.Add(3)
	streaming := prometheus.NewGauge(prometheus.GaugeOpts{Name: "outbox_relay_streaming", Help: "1 while this relay streams from the slot, else 0."})
	streaming.Set(1)
	reg.MustRegister(c, streaming)
	e.attach(reg,
		func() (bool, string) { return false, "wedged" },
		func() (bool, string) { return true, "streaming" })
	if code, body := get(t, h, "/healthz"); code != http.StatusServiceUnavailable || strings.TrimSpace(body) != "wedged" {
		t.Errorf("/healthz during a run = %d %q, want the run's 503 wedged", code, body)
	}
	if code, body := get(t, h, "/readyz"); code != http.StatusOK || strings.TrimSpace(body) != "streaming" {
		t.Errorf("/readyz during a run = %d %q, want the run's 200 streaming", code, body)
	}
	_, body := get(t, h, "/metrics")
	for _, want := range []string{"outbox_relay_test_run_total 3", "outbox_relay_build_info", "\noutbox_relay_streaming 1\n"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics during a run lacks %q:\n%s", want, body)
		}
	}

	e.detach("recovering the lost replication slot")
	between("recovering the lost replication slot")
	if code, _ := get(t, h, "/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("/debug/pprof/ on the metrics address = %d, want 404", code)
	}
}

// TestStartServersAddressTaken checks that an address in use fails the
// start at once, naming the flag to change, and that servers that did
// start close without error.
func TestStartServersAddressTaken(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	failed := func(err error) { t.Errorf("fail called: %v", err) }

	cfg := Config{MetricsAddr: "127.0.0.1:0", PprofAddr: taken.Addr().String()}
	if _, err := startServers(cfg, newEndpoint(), logger, failed); err == nil || !strings.Contains(err.Error(), "--pprof-addr") {
		t.Fatalf("startServers with the pprof address taken: %v, want an error naming --pprof-addr", err)
	}

	cfg = Config{MetricsAddr: "127.0.0.1:0"}
	s, err := startServers(cfg, newEndpoint(), logger, failed)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.close(); err != nil {
		t.Errorf("close: %v", err)
	}
}

// brokenListener accepts nothing: Accept fails with err, as a listener
// whose socket broke under the server would.
type brokenListener struct {
	net.Listener
	err error
}

func (l brokenListener) Accept() (net.Conn, error) { return nil, l.err }

// TestServeHTTPFails checks that serveHTTP, when its server fails after
// its start, returns an error naming the server and its address (the
// error startServers hands to its fail callback), and that a server
// stopped by its context returns nil.
func TestServeHTTPFails(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	broken := brokenListener{Listener: ln, err: errors.New("socket broke")}
	err = serveHTTP(context.Background(), "metrics", broken, http.NotFoundHandler(), logger)
	if err == nil || !strings.Contains(err.Error(), "serve metrics on "+ln.Addr().String()) || !strings.Contains(err.Error(), "socket broke") {
		t.Errorf("serveHTTP on a broken listener: %v, want an error naming the metrics server, its address and the cause", err)
	}

	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serveHTTP(ctx, "metrics", ln2, http.NotFoundHandler(), logger) }()
	cancel()
	if err := <-done; err != nil {
		t.Errorf("serveHTTP stopped by its context: %v, want nil", err)
	}
}
