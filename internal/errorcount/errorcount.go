// Package errorcount defines outbox_relay_errors_total, the one counter to
// which several packages add their errors, each under kinds of its own, so
// that its name, help text and label are written once.
package errorcount

import "github.com/prometheus/client_golang/prometheus"

// Name is the counter's name.
const Name = "outbox_relay_errors_total"

// The kinds, each counted by one package.
const (
	// Replication: the replication connection failed (cdc).
	Replication = "replication"
	// SlotPoll: reading the slot's row of pg_replication_slots failed (cdc).
	SlotPoll = "slot_poll"
	// Publish: the sink failed an event (relay).
	Publish = "publish"
	// DeadLetter: setting a poison event aside failed (relay).
	DeadLetter = "dead_letter"
)

// New returns the series of kind. Register each kind once per registry;
// the series of all kinds gather as one family.
func New(kind string) prometheus.Counter {
	return prometheus.NewCounter(prometheus.CounterOpts{
		Name:        Name,
		Help:        "Errors by kind: replication, slot_poll, publish, dead_letter.",
		ConstLabels: prometheus.Labels{"kind": kind},
	})
}
