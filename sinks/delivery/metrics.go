package delivery

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are a Sink's series. The published, bytes, duration and
// dead-letter series have the names of the Kafka sink's; every series has
// a sink label.
type metrics struct {
	reg          prometheus.Registerer
	published    *prometheus.CounterVec
	bytes        *prometheus.CounterVec
	duration     prometheus.Histogram
	deadLettered *prometheus.CounterVec
	retries      prometheus.Counter
	queued       prometheus.GaugeFunc
}

// newMetrics creates the series of the sink named name and registers them
// with reg (a registry of its own when nil); queued reports at scrape time
// the events not yet acknowledged.
func newMetrics(reg prometheus.Registerer, name string, queued func() int) (*metrics, error) {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	sink := prometheus.Labels{"sink": name}
	m := &metrics{
		reg: reg,
		published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        "outbox_relay_events_published_total",
			Help:        "Events the broker acknowledged, by topic.",
			ConstLabels: sink,
		}, []string{"topic"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        "outbox_relay_published_bytes_total",
			Help:        "Payload bytes of the events the broker acknowledged, by topic.",
			ConstLabels: sink,
		}, []string{"topic"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:        "outbox_relay_publish_duration_seconds",
			Help:        "Time from Publish to the broker's acknowledgement, for acknowledged events.",
			ConstLabels: sink,
			Buckets:     prometheus.ExponentialBuckets(0.001, 2, 16),
		}),
		deadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        "outbox_relay_dlq_events_total",
			Help:        "Events set aside in the dead-letter destination, by reason.",
			ConstLabels: sink,
		}, []string{"reason"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name:        "outbox_relay_sink_retries_total",
			Help:        "Messages sent again after the broker failed them for a passing reason (an outage, a lost connection).",
			ConstLabels: sink,
		}),
		queued: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "outbox_relay_sink_queued_events",
			Help:        "Events the sink holds that the broker has not acknowledged yet, sent or waiting behind an earlier event of their key.",
			ConstLabels: sink,
		}, func() float64 { return float64(queued()) }),
	}
	for _, r := range Reasons {
		m.deadLettered.WithLabelValues(r)
	}
	cs := m.collectors()
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			for _, done := range cs[:i] {
				reg.Unregister(done)
			}
			return nil, fmt.Errorf("register %s sink metrics: %w", name, err)
		}
	}
	return m, nil
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.published, m.bytes, m.duration, m.deadLettered, m.retries, m.queued}
}

// unregister removes m's series from the registry, so that a later Sink can
// register its own.
func (m *metrics) unregister() {
	for _, c := range m.collectors() {
		m.reg.Unregister(c)
	}
}
