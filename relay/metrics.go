package relay

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outbox-relay/outbox-relay/internal/errorcount"
)

// metrics are the Relay's series, each named in full,
// outbox_relay_<name>_<unit>. Gauges of what the Relay tracks anyway (in
// flight, flushed, lag) and of its configured bounds are read at scrape
// time, so that publishing an event updates no gauge; so are the latency
// histograms (hist.go).
type metrics struct {
	inflightEvents, inflightBytes           prometheus.GaugeFunc
	inflightEventsLimit, inflightBytesLimit prometheus.GaugeFunc
	flushedLSN, lag                         prometheus.GaugeFunc
	transactions                            prometheus.Counter
	replayed                                prometheus.Counter
	// The end-to-end latency and its stages, kept by the Relay under its
	// mutex (hist.go).
	histograms *histograms

	publishErrors, deadLetterErrors prometheus.Counter
}

// newMetrics builds the series of r, whose bounds are cfg's, and registers
// them with reg. A nil reg registers nothing: the series are built and
// updated all the same, and nobody serves them.
func newMetrics(reg prometheus.Registerer, cfg Config, r *Relay) (*metrics, error) {
	m := &metrics{
		inflightEvents: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "outbox_relay_inflight_events",
			Help: "Events handed to the sink and not yet acknowledged.",
		}, func() float64 {
			n, _ := r.inflight()
			return float64(n)
		}),
		inflightBytes: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "outbox_relay_inflight_bytes",
			Help: "Approximate bytes of events handed to the sink and not yet acknowledged.",
		}, func() float64 {
			_, n := r.inflight()
			return float64(n)
		}),
		inflightEventsLimit: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "outbox_relay_inflight_events_limit",
			Help: "Configured bound on in-flight events.",
		}, func() float64 { return float64(cfg.MaxInflightEvents) }),
		inflightBytesLimit: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "outbox_relay_inflight_bytes_limit",
			Help: "Configured bound on in-flight bytes.",
		}, func() float64 { return float64(cfg.MaxInflightBytes) }),
		flushedLSN: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "outbox_relay_flushed_lsn",
			Help: "Position up to which every event is acknowledged, as a WAL byte offset.",
		}, func() float64 { return float64(r.Flushed()) }),
		lag: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "outbox_relay_replication_lag_seconds",
			Help: "Time since the commit of the oldest transaction whose events are not all acknowledged; 0 when none is.",
		}, r.lagSeconds),
		transactions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outbox_relay_transactions_total",
			Help: "Committed transactions read from the replication stream.",
		}),
		replayed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outbox_relay_replayed_rows_skipped_total",
			Help: "Rows sent again by PostgreSQL after a reconnect and read past because they were already published.",
		}),
		histograms:       newHistograms(r),
		publishErrors:    errorcount.New(errorcount.Publish),
		deadLetterErrors: errorcount.New(errorcount.DeadLetter),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{
		m.inflightEvents, m.inflightBytes, m.inflightEventsLimit, m.inflightBytesLimit, m.flushedLSN, m.lag,
		m.transactions, m.replayed, m.histograms, m.publishErrors, m.deadLetterErrors,
	} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register relay metrics: %w", err)
		}
	}
	return m, nil
}
