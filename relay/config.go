package relay

import (
	"fmt"
	"time"
)

// Config bounds the work a Relay keeps in flight and says how it delivers.
// The zero value of every field has a documented meaning; New fills the
// defaults itself, and Validate accepts a Config with or without them.
type Config struct {
	// MaxInflightEvents bounds events handed to the Sink and not yet
	// acknowledged. Zero means DefaultMaxInflightEvents.
	MaxInflightEvents int
	// MaxInflightBytes bounds the approximate bytes of those events. Zero
	// means DefaultMaxInflightBytes. The bound is checked before each
	// event, so it may be passed by one event; an event larger than the
	// bound still flows.
	MaxInflightBytes int
	// PoisonPolicy says what becomes of an event the Sink can never
	// deliver. Zero means DefaultPoisonPolicy (PolicyDLQ).
	PoisonPolicy Policy
	// Delivery is DeliveryAtLeastOnce or DeliveryExactlyOnce. Zero means
	// DefaultDelivery (DeliveryAtLeastOnce).
	Delivery Delivery
	// TransactionInterval is, under DeliveryExactlyOnce, how long a Sink
	// transaction stays open before the Relay commits it at the next
	// PostgreSQL transaction boundary. Zero means
	// DefaultTransactionInterval.
	TransactionInterval time.Duration
}

// Defaults of Config's zero fields.
const (
	// DefaultMaxInflightEvents is Config.MaxInflightEvents when zero.
	DefaultMaxInflightEvents = 5000
	// DefaultMaxInflightBytes is Config.MaxInflightBytes when zero: 8 MiB.
	DefaultMaxInflightBytes = 8 << 20
	// DefaultPoisonPolicy is Config.PoisonPolicy when empty.
	DefaultPoisonPolicy = PolicyDLQ
	// DefaultDelivery is Config.Delivery when empty.
	DefaultDelivery = DeliveryAtLeastOnce
	// DefaultTransactionInterval is Config.TransactionInterval when zero.
	DefaultTransactionInterval = 100 * time.Millisecond
)

// Delivery is a delivery guarantee.
type Delivery string

const (
	// DeliveryAtLeastOnce confirms each event once the Sink acknowledged
	// it; after a crash, events acknowledged but not yet confirmed are
	// delivered again.
	DeliveryAtLeastOnce Delivery = "at-least-once"
	// DeliveryExactlyOnce needs a Transactor Sink: events go out in Sink
	// transactions of whole PostgreSQL transactions, each committing a
	// fence, and the Relay confirms only committed fences and, after a
	// restart, skips what the last fence covers. See txn.go.
	DeliveryExactlyOnce Delivery = "exactly-once"
)

// Policy is a poison-row policy.
type Policy string

const (
	// PolicyDLQ sets a poison event aside in the dead-letter topic, counts
	// and logs it, and goes on. Later events of the same aggregate then
	// pass it: consumers see them without it.
	PolicyDLQ Policy = "dlq"
	// PolicyHalt stops the relay at a poison event. Nothing after it is
	// confirmed, so PostgreSQL sends it again at every start until the
	// policy changes or the slot is moved past it.
	PolicyHalt Policy = "halt"
)

// withDefaults returns c with its zero fields replaced by their defaults.
func (c Config) withDefaults() Config {
	if c.MaxInflightEvents == 0 {
		c.MaxInflightEvents = DefaultMaxInflightEvents
	}
	if c.MaxInflightBytes == 0 {
		c.MaxInflightBytes = DefaultMaxInflightBytes
	}
	if c.PoisonPolicy == "" {
		c.PoisonPolicy = DefaultPoisonPolicy
	}
	if c.Delivery == "" {
		c.Delivery = DefaultDelivery
	}
	if c.TransactionInterval == 0 {
		c.TransactionInterval = DefaultTransactionInterval
	}
	return c
}

// Validate reports the first field of c that New would reject, with what to
// change: a negative bound or interval, or an unknown policy or delivery.
// Zero fields stand for their defaults and are valid. New calls it.
func (c Config) Validate() error {
	c = c.withDefaults()
	if c.MaxInflightEvents < 0 {
		return fmt.Errorf("max in-flight events is %d; use a positive number, or 0 for the default", c.MaxInflightEvents)
	}
	if c.MaxInflightBytes < 0 {
		return fmt.Errorf("max in-flight bytes is %d; use a positive number, or 0 for the default", c.MaxInflightBytes)
	}
	switch c.PoisonPolicy {
	case PolicyDLQ, PolicyHalt:
	default:
		return fmt.Errorf("poison policy %q is unknown; use %q or %q", c.PoisonPolicy, PolicyDLQ, PolicyHalt)
	}
	switch c.Delivery {
	case DeliveryAtLeastOnce, DeliveryExactlyOnce:
	default:
		return fmt.Errorf("delivery %q is unknown; use %q or %q", c.Delivery, DeliveryAtLeastOnce, DeliveryExactlyOnce)
	}
	if c.TransactionInterval < 0 {
		return fmt.Errorf("transaction interval is %s; use a positive duration, or 0 for %s", c.TransactionInterval, DefaultTransactionInterval)
	}
	return nil
}
