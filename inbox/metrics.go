package inbox

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the consumer's Prometheus metrics, labelled by consumer name.
type metrics struct {
	processed  prometheus.Counter
	duplicates prometheus.Counter
	retries    prometheus.Counter
	dead       prometheus.Counter
	duration   prometheus.Observer
	lag        *prometheus.GaugeVec // topic, partition
	name       string
}

// newMetrics makes the metrics of the consumer name and registers them with
// reg; a nil reg registers nothing.
func newMetrics(reg prometheus.Registerer, name string) (*metrics, error) {
	labels := prometheus.Labels{"consumer": name}
	processed := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "outbox_inbox_processed_total",
		Help: "Events the handler applied and the inbox recorded, committed.",
	}, []string{"consumer"})
	duplicates := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "outbox_inbox_duplicates_total",
		Help: "Records skipped because the inbox had recorded their event.",
	}, []string{"consumer"})
	retries := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "outbox_inbox_retries_total",
		Help: "Attempts that failed and were tried again.",
	}, []string{"consumer"})
	dead := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "outbox_inbox_dead_letters_total",
		Help: "Records written to the dead-letter topic.",
	}, []string{"consumer"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "outbox_inbox_handler_duration_seconds",
		Help:    "Duration of handler calls, including the inbox insert and the commit.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
	}, []string{"consumer"})
	lag := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "outbox_inbox_lag",
		Help: "Records of an owned partition not yet finished: high watermark minus the next offset to commit.",
	}, []string{"consumer", "topic", "partition"})
	if reg != nil {
		for _, c := range []prometheus.Collector{processed, duplicates, retries, dead, duration, lag} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register inbox metrics of consumer %q: %w", name, err)
			}
		}
	}
	return &metrics{
		processed:  processed.With(labels),
		duplicates: duplicates.With(labels),
		retries:    retries.With(labels),
		dead:       dead.With(labels),
		duration:   duration.With(labels),
		lag:        lag,
		name:       name,
	}, nil
}
