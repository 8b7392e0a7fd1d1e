package kafka

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the Sink's own series. The franz-go client's series
// (outbox_relay_kafka_*) come from kprom.
type metrics struct {
	reg            prometheus.Registerer
	published      *prometheus.CounterVec
	publishedBytes *prometheus.CounterVec
	duration       prometheus.Histogram
	deadLettered   *prometheus.CounterVec
	resentAlone    prometheus.Counter
	topicRefusals  *prometheus.CounterVec
	held           prometheus.GaugeFunc
}

// newMetrics creates the Sink's series and registers them with reg; held
// reports, at scrape time, the events waiting to be sent alone. It fails if
// reg already holds them, as it does while another Sink uses it.
func newMetrics(reg prometheus.Registerer, held func() int) (*metrics, error) {
	// The series every sink has carry its name, as those of sinks/delivery;
	// each series is named in full.
	sink := prometheus.Labels{"sink": "kafka"}
	m := &metrics{
		reg: reg,
		published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        "outbox_relay_events_published_total",
			Help:        "Events Kafka acknowledged, by topic.",
			ConstLabels: sink,
		}, []string{"topic"}),
		publishedBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        "outbox_relay_published_bytes_total",
			Help:        "Payload bytes of the events Kafka acknowledged, by topic.",
			ConstLabels: sink,
		}, []string{"topic"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:        "outbox_relay_publish_duration_seconds",
			Help:        "Time from Publish to Kafka's acknowledgement, for acknowledged events.",
			ConstLabels: sink,
			// 1ms to about 33s: a healthy ack takes milliseconds,
			// retries through a leader election take seconds.
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}),
		deadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        "outbox_relay_dlq_events_total",
			Help:        "Events set aside in the dead-letter topic, by reason.",
			ConstLabels: sink,
		}, []string{"reason"}),
		resentAlone: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outbox_relay_kafka_resent_alone_total",
			Help: "Produce attempts of single records, after the broker refused a batch or a topic.",
		}),
		topicRefusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outbox_relay_kafka_topic_refusals_total",
			Help: "Produce attempts the broker refused for the whole topic (not authorized, unknown), by topic; their events are held and retried.",
		}, []string{"topic"}),
		held: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "outbox_relay_kafka_held_events",
			Help: "Events waiting to be sent one at a time after a refused batch or topic; new events queue behind them.",
		}, func() float64 { return float64(held()) }),
	}
	for _, r := range []string{ReasonAggregateID, ReasonTopic, ReasonHeaders, ReasonSize, ReasonRejected, ReasonContent} {
		m.deadLettered.WithLabelValues(r)
	}
	for i, c := range m.collectors() {
		if err := reg.Register(c); err != nil {
			for _, done := range m.collectors()[:i] {
				reg.Unregister(done)
			}
			return nil, fmt.Errorf("register kafka sink metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.published, m.publishedBytes, m.duration, m.deadLettered, m.resentAlone, m.topicRefusals, m.held}
}

// unregister removes m's series from the registry, so a later Sink can
// register its own.
func (m *metrics) unregister() {
	for _, c := range m.collectors() {
		m.reg.Unregister(c)
	}
}
