package cdc

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
)

// series lists the series in reg as name{label="value",...}, sorted.
func series(t *testing.T, reg *prometheus.Registry) []string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			out = append(out, mf.GetName()+"{"+strings.Join(labels, ",")+"}")
		}
	}
	slices.Sort(out)
	return out
}

// TestMetricsSeries pins the names and labels of the series the stream and
// the monitor register: dashboards and alerts read them.
func TestMetricsSeries(t *testing.T) {
	stream := []string{
		`outbox_relay_backpressure_waits_total{}`,
		`outbox_relay_confirmed_lsn{}`,
		`outbox_relay_errors_total{kind="replication"}`,
		`outbox_relay_messages_ignored_total{reason="non_transactional"}`,
		`outbox_relay_messages_ignored_total{reason="prefix"}`,
		`outbox_relay_messages_received_total{}`,
		`outbox_relay_receive_lag_bytes{}`,
		`outbox_relay_received_lsn{}`,
		`outbox_relay_reconnects_total{target="postgres"}`,
		`outbox_relay_rows_received_total{}`,
		`outbox_relay_server_wal_lsn{}`,
		`outbox_relay_standby{}`,
		`outbox_relay_streaming{}`,
	}
	monitor := []string{
		`outbox_relay_errors_total{kind="slot_poll"}`,
		`outbox_relay_replication_lag_bytes{}`,
		`outbox_relay_slot_active{}`,
		`outbox_relay_slot_retained_wal_bytes{}`,
		`outbox_relay_slot_safe_wal_bytes{}`,
	}
	both := slices.Sorted(slices.Values(append(slices.Clone(stream), monitor...)))
	tests := []struct {
		name          string
		stream, monit bool
		want          []string
	}{
		{"stream", true, false, stream},
		{"monitor", false, true, monitor},
		// main registers both in one registry.
		{"stream and monitor", true, true, both},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			if tt.stream {
				if _, err := newMetrics(reg); err != nil {
					t.Fatalf("newMetrics() = %v", err)
				}
			}
			if tt.monit {
				if _, err := newMonitorMetrics(reg); err != nil {
					t.Fatalf("newMonitorMetrics() = %v", err)
				}
			}
			if diff := cmp.Diff(tt.want, series(t, reg)); diff != "" {
				t.Errorf("registered series (-want +got):\n%s", diff)
			}
		})
	}
}

// TestMetricsNilRegistry checks that a nil registry registers nothing and
// still yields series the stream and the monitor can update.
func TestMetricsNilRegistry(t *testing.T) {
	m, err := newMetrics(nil)
	if err != nil {
		t.Fatalf("newMetrics(nil) = %v", err)
	}
	for _, c := range []prometheus.Counter{m.rows, m.messages, m.stalls, m.reconnects, m.errors, m.ignoredNonTxn, m.ignoredPrefix} {
		c.Inc()
	}
	for _, g := range []prometheus.Gauge{m.lag, m.serverWAL, m.received, m.confirmed, m.active, m.standby} {
		g.Set(1)
	}
	mm, err := newMonitorMetrics(nil)
	if err != nil {
		t.Fatalf("newMonitorMetrics(nil) = %v", err)
	}
	for _, g := range []prometheus.Gauge{mm.lag, mm.retained, mm.safe, mm.active} {
		g.Set(1)
	}
	mm.errors.Inc()
}

// TestMetricsRegisterTwice checks that a second stream on one registry is
// refused with an error, not a panic.
func TestMetricsRegisterTwice(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := newMetrics(reg); err != nil {
		t.Fatalf("newMetrics() = %v", err)
	}
	if _, err := newMetrics(reg); err == nil {
		t.Error("newMetrics() on a registry that holds its series = nil, want an error")
	}
}
