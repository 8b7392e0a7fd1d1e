package cdc

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outbox-relay/outbox-relay/internal/errorcount"
)

// metrics are a Stream's series, each named in full,
// outbox_relay_<name>_<unit>.
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

// newMetrics builds a Stream's series and registers them with reg. A nil
// reg registers nothing: the series are built and updated all the same, and
// nobody serves them.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	ignored := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "outbox_relay_messages_ignored_total",
		Help: "Logical decoding messages read past: non_transactional ones, and transactional ones of another prefix.",
	}, []string{"reason"})
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
		stalls: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outbox_relay_backpressure_waits_total",
			Help: "Times the stream stopped reading because the in-flight bounds were reached.",
		}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outbox_relay_streaming",
			Help: "1 while this relay streams from the slot, else 0.",
		}),
		standby: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outbox_relay_standby",
			Help: "1 while this relay waits for another connection to release the slot, else 0.",
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name:        "outbox_relay_reconnects_total",
			Help:        "Reconnections after the replication connection was lost.",
			ConstLabels: prometheus.Labels{"target": "postgres"},
		}),
		errors: errorcount.New(errorcount.Replication),
		messages: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outbox_relay_messages_received_total",
			Help: "Transactional logical decoding messages with the outbox prefix read from the replication stream, replays included.",
		}),
		ignored:       ignored,
		ignoredNonTxn: ignored.WithLabelValues("non_transactional"),
		ignoredPrefix: ignored.WithLabelValues("prefix"),
	}
	if err := register(reg, m.lag, m.serverWAL, m.received, m.confirmed, m.rows, m.messages, m.ignored, m.stalls, m.active, m.standby, m.reconnects, m.errors); err != nil {
		return nil, fmt.Errorf("register cdc metrics: %w", err)
	}
	return m, nil
}

// monitorMetrics are a Monitor's series, each named in full,
// outbox_relay_<name>_<unit>.
type monitorMetrics struct {
	lag, retained, safe, active prometheus.Gauge
	errors                      prometheus.Counter
}

// newMonitorMetrics builds a Monitor's series and registers them with reg.
// A nil reg registers nothing: the series are built and updated all the
// same, and nobody serves them.
func newMonitorMetrics(reg prometheus.Registerer) (*monitorMetrics, error) {
	m := &monitorMetrics{
		lag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outbox_relay_replication_lag_bytes",
			Help: "WAL written since the slot's confirmed position (pg_current_wal_lsn() - confirmed_flush_lsn), read from pg_replication_slots.",
		}),
		retained: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outbox_relay_slot_retained_wal_bytes",
			Help: "WAL the slot makes the server keep (pg_current_wal_lsn() - restart_lsn).",
		}),
		safe: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outbox_relay_slot_safe_wal_bytes",
			Help: "WAL that can still be written before the slot risks invalidation (safe_wal_size); -1 when max_slot_wal_keep_size is unlimited.",
		}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outbox_relay_slot_active",
			Help: "1 while a connection, this relay's or another's, streams from the slot.",
		}),
		errors: errorcount.New(errorcount.SlotPoll),
	}
	if err := register(reg, m.lag, m.retained, m.safe, m.active, m.errors); err != nil {
		return nil, fmt.Errorf("register monitor metrics: %w", err)
	}
	return m, nil
}

// register registers cs with reg, or nothing when reg is nil.
func register(reg prometheus.Registerer, cs ...prometheus.Collector) error {
	if reg == nil {
		return nil
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
