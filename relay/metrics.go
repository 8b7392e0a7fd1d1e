package relay

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outbox-relay/outbox-relay/internal/errorcount"
)

// metrics are the Relay's series, each named in full,
// outbox_relay_<name>_<unit>. Gauges of what the Relay tracks anyway (in
// flight, flushed, lag) and of its configured bounds are read at scrape
// time, so that publishing an event updates no gauge.
type metrics struct {
	inflightEvents, inflightBytes           prometheus.GaugeFunc
	inflightEventsLimit, inflightBytesLimit prometheus.GaugeFunc
	flushedLSN, lag                         prometheus.GaugeFunc
	transactions                            prometheus.Counter
	replayed                                prometheus.Counter
	latency                                 prometheus.Histogram
	// Stages of latency, which add up to latency: commit to the server
	// sending the row, sent to read from the stream, read to handed to the
	// Sink, handed to acknowledged.
	stages                              *prometheus.HistogramVec
	send, receive, publish, acknowledge prometheus.Observer

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
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "outbox_relay_end_to_end_latency_seconds",
			Help:    "Time from a transaction's commit to the sink's acknowledgement of each of its events.",
			Buckets: latencyBuckets,
		}),
		stages: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "outbox_relay_stage_latency_seconds",
			Help: "Time each event spends in each stage between commit and acknowledgement: " +
				"send, from the transaction's commit to the database server sending the row on the replication stream (both by the server's clock); " +
				"receive, from the server sending the row to the relay reading it; " +
				"publish, from reading it to handing it to the sink; acknowledge, from handing it to the sink to the sink's acknowledgement.",
			Buckets: latencyBuckets,
		}, []string{"stage"}),
		publishErrors:    errorcount.New(errorcount.Publish),
		deadLetterErrors: errorcount.New(errorcount.DeadLetter),
	}
	m.send = m.stages.WithLabelValues("send")
	m.receive = m.stages.WithLabelValues("receive")
	m.publish = m.stages.WithLabelValues("publish")
	m.acknowledge = m.stages.WithLabelValues("acknowledge")
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{
		m.inflightEvents, m.inflightBytes, m.inflightEventsLimit, m.inflightBytesLimit, m.flushedLSN, m.lag,
		m.transactions, m.replayed, m.latency, m.stages, m.publishErrors, m.deadLetterErrors,
	} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register relay metrics: %w", err)
		}
	}
	return m, nil
}

// latencyBuckets bound the latency histograms, in seconds: fine below 50 ms,
// with bounds at 5 and 25 ms so that p99 and p999 targets can be read off
// exactly.
var latencyBuckets = []float64{0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}
