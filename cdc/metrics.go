package cdc

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	lag       prometheus.Gauge
	serverWAL prometheus.Gauge
	received  prometheus.Gauge
	confirmed prometheus.Gauge
	rows      prometheus.Counter
	stalls    prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		lag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "outbox_relay_replication_lag_bytes",
			Help: "Server WAL end minus the position the relay has confirmed.",
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
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.lag, m.serverWAL, m.received, m.confirmed, m.rows, m.stalls} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register cdc metrics: %w", err)
		}
	}
	return m, nil
}
