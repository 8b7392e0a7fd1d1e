package redis

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outbox-relay/outbox-relay/sinks/delivery"
)

// Sink publishes outbox events to Redis streams. Its Publish, Flush, Poison,
// DeadLetter, Halt, Ping and Close come from delivery.Sink (see there, and
// the package doc for what each entry holds); it implements relay.Sink,
// relay.DeadLetterer and relay.Halter. Create it with New and Close it when
// done. Its methods are safe for concurrent use.
type Sink struct {
	*delivery.Sink[message]
	broker *broker
}

// New returns a Sink for cfg. It validates cfg and starts the senders
// (delivery.New), but does not connect: the first Publish, Ping or Setup
// does, so New does not fail when Redis is unreachable. logger receives the
// Sink's logs under component=redis; nil discards them. Its metrics, with
// sink="redis", are registered with reg (a registry of its own when nil)
// until Close. New fails when cfg is not valid (see Config.Validate) or reg
// already holds the metrics of another open redis Sink.
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
		return nil, err
	}
	ds, err := delivery.New(cfg.Delivery, b, logger, reg)
	if err != nil {
		_ = b.Close() // it never connected
		return nil, err
	}
	return &Sink{Sink: ds, broker: b}, nil
}

// Setup prepares nothing on the server: XADD creates each stream, the
// dead-letter stream included, with its first entry, and needs no consumer
// group. It checks that the server answers PING within ctx, returning an
// error that says what to check (the URL, the credentials, the
// certificates) when it does not. It then reads the server's persistence
// settings with CONFIG GET (appendonly, appendfsync, save, cluster-enabled)
// and logs them: a warning when an acknowledged entry could be lost (see
// the package doc), unless the same was already logged, as it is on the
// Sink's first connection. A server that refuses CONFIG, as managed
// services do, is not an error: that is logged at debug level. A server in
// cluster mode is an error: Redis Cluster is not supported. The relay's
// setup command, and run at start, call it; it is safe to call again.
func (s *Sink) Setup(ctx context.Context) error {
	if err := s.broker.Ping(ctx); err != nil {
		return err
	}
	st, err := s.broker.check(ctx, s.broker.client)
	if err != nil {
		return explain(s.broker.url, err)
	}
	if st.cluster {
		return s.broker.clusterError()
	}
	return nil
}
