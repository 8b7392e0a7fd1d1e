package rabbitmq

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outbox-relay/outbox-relay/sinks/delivery"
)

// Sink publishes events to RabbitMQ; it implements relay.Sink,
// relay.DeadLetterer and relay.Halter through the embedded delivery.Sink,
// whose Publish, Flush, Poison, DeadLetter, Halt, Ping and Close it
// promotes. Create it with New and Close it when done. Its methods are safe
// for concurrent use.
type Sink struct {
	*delivery.Sink[*message]
	broker *broker
}

// New returns a Sink for cfg, with the delivery senders started (Close
// stops them). It dials nothing: the first Publish, Ping or Setup connects,
// so New does not fail when the server is down. logger receives the Sink's
// logs under component=rabbitmq; nil discards them. Its metrics are
// registered with reg and unregistered by Close; nil registers nothing. New
// fails if cfg is not valid (see Config.Validate) or reg holds the metrics
// of another open Sink of the same name.
func New(cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	b, err := newBroker(cfg, logger.With("component", Name))
	if err != nil {
		return nil, err // unreachable after Validate
	}
	ds, err := delivery.New(cfg.Delivery, b, logger, reg)
	if err != nil {
		return nil, err
	}
	return &Sink{Sink: ds, broker: b}, nil
}

// Setup makes on the server what the Sink needs, connecting first if it is
// not connected, within ctx; the relay's setup command and run, at start,
// call it. It is safe to call again and concurrently with publishing.
//
// It declares, when Config.Exchange has no placeholder, the exchange:
// durable, not auto-deleted, not internal, of Config.ExchangeType, without
// arguments, except that an x-consistent-hash exchange gets hash-header
// aggregate_id, so that it routes each aggregate to one queue. With placeholders it cannot know every name and declares no
// exchange: declare each one like that, or events to it are held. It
// declares the dead-letter queue Config.DeadLetterQueue: durable, not
// exclusive, not auto-deleted, x-queue-type Config.DeadLetterQueueType; dead
// letters reach it through the default exchange. It binds no queue to the
// exchange: consumers own their queues and bindings, and must have them in
// place before events flow, or events go to the dead-letter queue as
// unroutable (see the package documentation).
//
// An exchange or queue that exists is left as it is, whatever its
// settings: Setup checks each with a passive declare first and never
// changes, deletes or purges anything. Its errors say what to check, such
// as a user without configure rights on the vhost.
func (s *Sink) Setup(ctx context.Context) error {
	return s.broker.setup(ctx)
}
