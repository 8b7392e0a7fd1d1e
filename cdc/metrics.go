package cdc

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	lag        prometheus.Gauge
	serverWAL  prometheus.Gauge
	received   prometheus.Gauge
	confirmed  prometheus.Gauge
	rows       prometheus.Counter
	stalls     prometheus.Counter
	active     prometheus.Gauge
	standby    prometheus.Gauge
	reconnects prometheus.Counter
	errors     prometheus.Counter

	// Logical decoding messages: relayed, and ignored by reason.
	messages                     prometheus.Counter
	ignored                      *prometheus.CounterVec
	ignoredNonTxn, ignoredPrefix prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		lag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outbox_relay_receive_lag_bytes",
			Help: "Server WAL end minus the end of the newest transaction received, at the last keepalive.",
		}),
		serverWAL: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outbox_relay_server_wal_lsn",
			Help: "Server WAL end last reported on the replication stream, as a byte offset.",
		}),
		received: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outbox_relay_received_lsn",
			Help: "End of the newest transaction received, as a byte offset.",
		}),
		confirmed: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outbox_relay_confirmed_lsn",
			Help: "Position last confirmed to the server, as a byte offset.",
		}),
		rows: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outbox_relay_rows_received_total",
			Help: "Outbox rows read from the replication stream, replays included.",
		}),
		messages: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outbox_relay_messages_received_total",
			Help: "Transactional logical decoding messages with the outbox prefix read from the replication stream, replays included.",
		}),
		ignored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "outbox_relay_messages_ignored_total",
			Help: "Logical decoding messages read past: non_transactional ones, and transactional ones of another prefix.",
		}, []string{"reason"}),
		stalls: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outbox_relay_backpressure_waits_total",
			Help: "Times the stream stopped reading because the in-flight bounds were reached.",
		}),
	}
	m.active = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "outbox_relay_streaming",
		Help: "1 while this relay streams from the slot, else 0.",
	})
	m.standby = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "outbox_relay_standby",
		Help: "1 while this relay waits for another connection to release the slot, else 0.",
	})
	m.reconnects = prometheus.NewCounter(prometheus.CounterOpts{
		Name:        "outbox_relay_reconnects_total",
		Help:        "Reconnections after the replication connection was lost.",
		ConstLabels: prometheus.Labels{"target": "postgres"},
	})
	m.errors = errorsCounter("replication")
	m.ignoredNonTxn = m.ignored.WithLabelValues("non_transactional")
	m.ignoredPrefix = m.ignored.WithLabelValues("prefix")
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.lag, m.serverWAL, m.received, m.confirmed, m.rows, m.messages, m.ignored, m.stalls, m.active, m.standby, m.reconnects, m.errors} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register cdc metrics: %w", err)
		}
	}
	return m, nil
}

// errorsCounter returns the outbox_relay_errors_total series of one kind.
// Several packages count errors under this name, each its own kinds, so the
// help text must be the same everywhere.
func errorsCounter(kind string) prometheus.Counter {
	return prometheus.NewCounter(prometheus.CounterOpts{
		Name:        "outbox_relay_errors_total",
		Help:        "Errors by kind: replication, slot_poll, publish, dead_letter.",
		ConstLabels: prometheus.Labels{"kind": kind},
	})
}
