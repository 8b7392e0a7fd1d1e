package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
)

// endpoint is what /metrics, /healthz and /readyz answer for the whole life
// of the daemon, across its runs: the process's own metrics always, and the
// current run's metrics and probes while a run serves. Between runs (the
// first run connecting, a lost slot being recovered, an exactly-once
// restart waiting for the brokers) the process is alive and not ready, and
// says what it is doing: a liveness probe must not kill a recovery that
// takes longer than its threshold, which would then start over for ever.
type endpoint struct {
	base *prometheus.Registry // the process's metrics, kept across runs
	// idle is what a run would say of its stream, served between runs:
	// outbox_relay_streaming 0, so that the alert on no instance streaming
	// fires for a relay held between runs (a recovery, a restart waiting
	// for a broker) as it does for one that streams nothing.
	idle *prometheus.Registry

	mu      sync.Mutex
	run     *runView // nil between runs
	between string   // what the daemon does while no run serves
}

// runView is one run's part of the endpoint: its metrics and its probes.
type runView struct {
	reg         *prometheus.Registry
	live, ready func() (bool, string)
}

// newEndpoint returns an endpoint with the process's metrics (Go runtime,
// process, build information) and no run, starting.
func newEndpoint() *endpoint {
	base := prometheus.NewRegistry()
	base.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfo(),
	)
	idle := prometheus.NewRegistry()
	idle.MustRegister(prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "outbox_relay_streaming",
		Help: "1 while this relay streams from the slot, else 0.",
	}))
	return &endpoint{base: base, idle: idle, between: "starting"}
}

// attach serves a run's metrics, reg, and its probes, live and ready.
func (e *endpoint) attach(reg *prometheus.Registry, live, ready func() (bool, string)) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.run = &runView{reg: reg, live: live, ready: ready}
}

// detach ends the serving of the current run, if any; doing says what the
// daemon does until the next attach.
func (e *endpoint) detach(doing string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.run, e.between = nil, doing
}

// current returns the run served and, when there is none, what the daemon
// does meanwhile.
func (e *endpoint) current() (*runView, string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.run, e.between
}

// Gather gathers the process's metrics and the current run's, or between
// runs outbox_relay_streaming 0.
func (e *endpoint) Gather() ([]*dto.MetricFamily, error) {
	if run, _ := e.current(); run != nil {
		return prometheus.Gatherers{e.base, run.reg}.Gather()
	}
	return prometheus.Gatherers{e.base, e.idle}.Gather()
}

// live answers /healthz: the run's liveness, or alive between runs.
func (e *endpoint) live() (bool, string) {
	run, doing := e.current()
	if run == nil {
		return true, doing
	}
	return run.live()
}

// ready answers /readyz: the run's readiness, or not ready between runs.
func (e *endpoint) ready() (bool, string) {
	run, doing := e.current()
	if run == nil {
		return false, doing
	}
	return run.ready()
}

// handler serves /metrics, /healthz and /readyz, and nothing else: the
// metrics address usually listens on every interface.
func (e *endpoint) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(e, promhttp.HandlerOpts{Registry: e.base}))
	mux.Handle("/healthz", probe(e.live))
	mux.Handle("/readyz", probe(e.ready))
	return mux
}

// servers are the daemon's HTTP servers: metrics and probes, and pprof
// when asked for. They outlive the daemon's runs.
type servers struct {
	stop  context.CancelFunc
	wg    sync.WaitGroup
	mu    sync.Mutex
	first error // the first server failure
}

// startServers listens on cfg's metrics and pprof addresses, failing at
// once if one cannot be had, and serves them until stop. A server that
// fails later calls fail with its error, which should stop the daemon.
func startServers(cfg Config, e *endpoint, logger *slog.Logger, fail func(error)) (*servers, error) {
	type server struct {
		what, flag, addr string
		handler          http.Handler
	}
	var want []server
	if cfg.MetricsAddr != "" {
		want = append(want, server{"metrics", "metrics-addr", cfg.MetricsAddr, e.handler()})
	}
	if cfg.PprofAddr != "" {
		want = append(want, server{"pprof", "pprof-addr", cfg.PprofAddr, pprofHandler()})
	}
	var lns []net.Listener
	for _, w := range want {
		ln, err := net.Listen("tcp", w.addr)
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return nil, fmt.Errorf("listen for %s on %s: %w; set --%s to a free address, or empty to disable", w.what, w.addr, err, w.flag)
		}
		lns = append(lns, ln)
	}
	ctx, stop := context.WithCancel(context.Background())
	s := &servers{stop: stop}
	for i, w := range want {
		s.wg.Go(func() {
			if err := serveHTTP(ctx, w.what, lns[i], w.handler, logger); err != nil {
				s.mu.Lock()
				if s.first == nil {
					s.first = err
				}
				s.mu.Unlock()
				fail(err)
			}
		})
	}
	return s, nil
}

// close shuts the servers down, waits for them and returns the first
// failure of one, if any.
func (s *servers) close() error {
	s.stop()
	s.wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.first
}
