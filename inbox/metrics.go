package inbox

import (
	"errors"
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
		Help:    "Duration of handler calls and the commit after them (duplicates, skipped, are not observed).",
		Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
	}, []string{"consumer"})
	lag := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "outbox_inbox_lag",
		Help: "Records of an owned partition not yet finished: high watermark minus the next offset to commit.",
	}, []string{"consumer", "topic", "partition"})
	if reg != nil {
		// A second consumer on the same registry shares the vectors of the
		// first, under its own label.
		var errs [6]error
		processed, errs[0] = register(reg, processed, name)
		duplicates, errs[1] = register(reg, duplicates, name)
		retries, errs[2] = register(reg, retries, name)
		dead, errs[3] = register(reg, dead, name)
		duration, errs[4] = register(reg, duration, name)
		lag, errs[5] = register(reg, lag, name)
		if err := errors.Join(errs[:]...); err != nil {
			return nil, err
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

// register registers c with reg, or returns the collector of the same
// description registered before.
func register[C prometheus.Collector](reg prometheus.Registerer, c C, name string) (C, error) {
	err := reg.Register(c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	if err != nil {
		return c, fmt.Errorf("register inbox metrics of consumer %q: %w", name, err)
	}
	return c, nil
}
