package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/outbox-relay/outbox-relay/relay"
	"github.com/outbox-relay/outbox-relay/sinks/kafka"
	"github.com/outbox-relay/outbox-relay/sinks/nats"
	"github.com/outbox-relay/outbox-relay/sinks/rabbitmq"
	"github.com/outbox-relay/outbox-relay/sinks/redis"
)

// The brokers --sink names.
const (
	sinkKafka    = "kafka"
	sinkNATS     = "nats"
	sinkRabbitMQ = "rabbitmq"
	sinkRedis    = "redis"
)

// sinkNames lists what --sink accepts, in the order help shows them.
var sinkNames = []string{sinkKafka, sinkNATS, sinkRabbitMQ, sinkRedis}

// brokerSink is a sink of any broker, as run, replay and slot recovery use
// it: events out, a ping for health checks, and Close.
type brokerSink interface {
	relay.Sink
	// Ping checks that the broker answers; its error says what to check.
	Ping(ctx context.Context) error
	// Setup makes what the sink needs on the broker, where it needs
	// anything (a stream, an exchange); it never changes what exists.
	Setup(ctx context.Context) error
	// Close releases the sink; events not yet acknowledged fail.
	Close()
}

// newSink returns the sink --sink names, for cfg; it dials nothing.
func newSink(cfg Config, logger *slog.Logger, reg prometheus.Registerer) (brokerSink, error) {
	switch cfg.Sink {
	case sinkKafka:
		s, err := kafka.New(cfg.Kafka, logger, reg)
		if err != nil {
			return nil, err
		}
		return kafkaSink{s}, nil
	case sinkNATS:
		s, err := nats.New(cfg.NATS, logger, reg)
		if err != nil {
			return nil, err
		}
		return closing{s, logger}, nil
	case sinkRabbitMQ:
		s, err := rabbitmq.New(cfg.RabbitMQ, logger, reg)
		if err != nil {
			return nil, err
		}
		return closing{s, logger}, nil
	case sinkRedis:
		redis.ClientLogger(logger) // once per process; the last logger wins
		s, err := redis.New(cfg.Redis, logger, reg)
		if err != nil {
			return nil, err
		}
		return closing{s, logger}, nil
	}
	return nil, fmt.Errorf("--sink %q: use one of %v", cfg.Sink, sinkNames) // unreachable after finishRun
}

// kafkaSink is a kafka.Sink as a brokerSink: topics are created by the
// brokers when the relay first writes to them (or by their operators), so
// Setup makes nothing.
type kafkaSink struct{ *kafka.Sink }

func (kafkaSink) Setup(context.Context) error { return nil }

// deliverySink is a sink built on sinks/delivery.
type deliverySink interface {
	relay.Sink
	relay.DeadLetterer
	relay.Halter
	Ping(ctx context.Context) error
	Setup(ctx context.Context) error
	Close() error
}

// closing is a deliverySink as a brokerSink: Close logs its error.
type closing struct {
	deliverySink
	log *slog.Logger
}

func (s closing) Close() {
	if err := s.deliverySink.Close(); err != nil {
		s.log.Warn("close the sink", "err", err)
	}
}

// openSink returns the sink --sink names once its broker answered, within
// brokerCheckTimeout; under setup, it also makes what the sink needs on the
// broker, logging what it could not make. When ctx ends first it returns
// nil and ctx's error.
func openSink(ctx context.Context, cfg Config, logger *slog.Logger, reg prometheus.Registerer) (brokerSink, error) {
	s, err := newSink(cfg, logger, reg)
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, brokerCheckTimeout)
	err = s.Ping(pctx)
	cancel()
	if err == nil {
		sctx, cancel := context.WithTimeout(ctx, brokerCheckTimeout)
		if serr := s.Setup(sctx); serr != nil && ctx.Err() == nil {
			logger.Warn("could not make what the sink needs on the broker; events it cannot route are held until it exists; run `outbox-relay setup` with broker rights to make it",
				"sink", cfg.Sink, "err", serr)
		}
		cancel()
	}
	if err != nil || ctx.Err() != nil {
		s.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	return s, nil
}

// openSinkWaiting is openSink for a restart: while no broker answers, it
// logs why and tries again, with a backoff, until one does or ctx ends.
func openSinkWaiting(ctx context.Context, cfg Config, logger *slog.Logger, reg prometheus.Registerer) (brokerSink, error) {
	bo := restartBackOff()
	for {
		s, err := openSink(ctx, cfg, logger, reg)
		if err == nil || ctx.Err() != nil {
			return s, err
		}
		wait := bo.NextBackOff()
		logger.Warn("waiting for the broker before starting again", "sink", cfg.Sink, "in", wait.String(), "err", err)
		if err := sleep(ctx, wait); err != nil {
			return nil, err
		}
	}
}

// bindSink binds --sink.
func bindSink(fs *flag.FlagSet, c *Config) {
	fs.StringVar(&c.Sink, "sink", sinkKafka, "broker the events go to: "+strings.Join(sinkNames, ", ")+"; each has flags of its own (--kafka-*, --nats-*, --rabbitmq-*, --redis-*)")
}

// sinkFlagsUnused returns the flags of fs set on the command line or from
// the environment that belong to a sink other than sink (--nats-url with
// --sink=kafka): they have no effect, and most likely --sink is missing.
func sinkFlagsUnused(fs *flag.FlagSet, sink string) []string {
	if !slices.Contains(sinkNames, sink) {
		return nil // finishSink refuses it
	}
	var unused []string
	fs.Visit(func(f *flag.Flag) {
		if s := flagSink(f.Name); s != "" && s != sink {
			unused = append(unused, "--"+f.Name)
		}
	})
	return unused
}

// flagSink returns the sink the flag name belongs to by its prefix
// (nats-url: nats), or "" for a flag of no one sink.
func flagSink(name string) string {
	for _, s := range sinkNames {
		if strings.HasPrefix(name, s+"-") {
			return s
		}
	}
	return ""
}

// warnUnusedSinkFlags logs the flags of other sinks than --sink that were
// set, if any.
func (c *Config) warnUnusedSinkFlags(logger *slog.Logger) {
	if len(c.unusedSinkFlags) > 0 {
		logger.Warn("flags of another sink than --sink have no effect; set --sink (OUTBOX_RELAY_SINK) if they are meant", "sink", c.Sink, "flags", c.unusedSinkFlags)
	}
}

// finishSink checks --sink and what only one broker offers.
func (c *Config) finishSink() error {
	if !slices.Contains(sinkNames, c.Sink) {
		return usageError{fmt.Errorf("--sink %q: use one of %s", c.Sink, strings.Join(sinkNames, ", "))}
	}
	if c.Sink != sinkKafka && c.Relay.Delivery == relay.DeliveryExactlyOnce {
		return usageError{fmt.Errorf("--delivery=%s needs --sink=%s (it commits Kafka transactions); with --sink=%s delivery is at least once: consumers drop repeats by the id header",
			relay.DeliveryExactlyOnce, sinkKafka, c.Sink)}
	}
	return nil
}

// validateSink validates the configuration of the sink --sink names.
func (c *Config) validateSink() error {
	switch c.Sink {
	case sinkNATS:
		// The package reads an empty URL as its default; a flag or
		// variable set to nothing is a mistake, as for the other sinks.
		if strings.TrimSpace(c.NATS.URL) == "" {
			return fmt.Errorf("nats: --nats-url is empty; set nats://host:port, or leave it unset for %s", nats.DefaultURL)
		}
		return c.NATS.Validate()
	case sinkRabbitMQ:
		return c.RabbitMQ.Validate()
	case sinkRedis:
		return c.Redis.Validate()
	}
	return c.Kafka.Validate()
}

// sinkConfig returns the configuration of the sink --sink names, for the
// start-up log line (secrets redacted by its LogValue).
func (c *Config) sinkConfig() any {
	switch c.Sink {
	case sinkNATS:
		return c.NATS
	case sinkRabbitMQ:
		return c.RabbitMQ
	case sinkRedis:
		return c.Redis
	}
	return c.Kafka
}
