package nats

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the series of the NATS sink beside delivery's.
type metrics struct {
	reg        prometheus.Registerer
	duplicates prometheus.Counter
}

// newMetrics creates the series and registers them with reg (a registry of
// their own when nil). It fails if reg already holds them, as it does
// while another Sink uses it.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := &metrics{
		reg: reg,
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "outbox_relay_nats_duplicates_total",
			Help: "Messages JetStream acknowledged as duplicates of one its stream stored within the duplicate window, and did not store again: messages sent again after a lost acknowledgement or a relay restart.",
		}),
	}
	if err := reg.Register(m.duplicates); err != nil {
		return nil, fmt.Errorf("register nats sink metrics: %w", err)
	}
	return m, nil
}

// unregister removes m's series from the registry.
func (m *metrics) unregister() { m.reg.Unregister(m.duplicates) }
