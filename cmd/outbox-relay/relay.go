package main

import (
	"context"
	"io"
	"log/slog"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/outbox-relay/outbox-relay/cdc"
	"github.com/outbox-relay/outbox-relay/relay"
	"github.com/outbox-relay/outbox-relay/relay/pipeline"
	"github.com/outbox-relay/outbox-relay/sinks/kafka"
)

// brokerCheckTimeout bounds the start-up check that the brokers answer.
const brokerCheckTimeout = 10 * time.Second

// relayUntilDone runs the daemon: the replication stream, the relay core and
// the metrics server, until ctx ends or one of them fails. When the slot is
// lost it stops, or under --on-slot-lost=recover recovers it (slotlost.go)
// and runs again; under exactly-once, a Kafka transaction that did not
// commit for certain makes it run again too (restart.go).
func relayUntilDone(ctx context.Context, cfg Config, stderr io.Writer) error {
	logger := cfg.logger(stderr)
	logger.Info("starting", "version", version, "commit", commit, "cdc", cfg.CDC, "sink", cfg.Sink, cfg.Sink, cfg.sinkConfig())
	applyMemoryLimit(cfg.MemoryLimit, cfg.Relay.MaxInflightBytes, logger)
	applyMaxProcs(cfg.MaxProcs, logger)
	if cfg.pprof {
		logger.Warn("--pprof is deprecated; use --pprof-addr="+defaultPprofAddr, "addr", cfg.PprofAddr)
	}
	rm := newRecoveryMetrics()
	rs := newRestarter(logger)
	for {
		flushed, err := relayOnce(ctx, cfg, logger, rm, rs)
		if err == nil || ctx.Err() != nil {
			return err
		}
		if cfg.Relay.Delivery == relay.DeliveryExactlyOnce && rs.again(ctx, err, flushed) {
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		if !slotLost(err, cfg) {
			return err
		}
		if cfg.OnSlotLost != onSlotLostRecover {
			return lostSlotError(ctx, cfg, err, flushed)
		}
		if err := recoverSlot(ctx, cfg, logger, rm); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}

// relayOnce is one run of the daemon, with a registry of its own; it also
// returns the last position the relay core acknowledged.
func relayOnce(ctx context.Context, cfg Config, logger *slog.Logger, rm *recoveryMetrics, rs *restarter) (pglogrepl.LSN, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfo(),
	)
	if err := rm.register(reg); err != nil {
		return 0, err
	}
	if cfg.Relay.Delivery == relay.DeliveryExactlyOnce {
		if err := rs.register(reg); err != nil {
			return 0, err
		}
	}
	return relayWith(ctx, cfg, logger, reg, rs.pending())
}

// relayWith runs the stream, the relay core and the metrics server,
// registering their metrics with reg. A restart waits for the brokers to
// answer instead of failing its start-up check.
func relayWith(ctx context.Context, cfg Config, logger *slog.Logger, reg *prometheus.Registry, restart bool) (pglogrepl.LSN, error) {
	var sink brokerSink
	var err error
	if restart {
		sink, err = openSinkWaiting(ctx, cfg, logger, reg)
	} else {
		sink, err = openSink(ctx, cfg, logger, reg)
	}
	if err != nil {
		if ctx.Err() != nil {
			return 0, nil
		}
		return 0, err
	}
	defer sink.Close()

	if cfg.Relay.Delivery == relay.DeliveryExactlyOnce {
		ks := sink.(kafkaSink) // finishRun allows exactly-once with Kafka only
		cctx, cancel := context.WithTimeout(ctx, brokerCheckTimeout)
		err := ks.CreateCheckpointTopic(cctx)
		cancel()
		if err != nil {
			return 0, err
		}
		logger.Info("exactly-once delivery", "transactional_id", cfg.Kafka.TransactionalID, "checkpoint_topic", kafka.CheckpointTopic,
			"transaction_interval", cfg.Relay.TransactionInterval.String())
	}
	p, err := pipeline.New(pipeline.Config{CDC: cfg.CDC, Relay: cfg.Relay}, sink, logger, reg)
	if err != nil {
		return 0, err
	}
	monitor, err := cdc.NewMonitor(cfg.CDC, healthInterval, logger, reg)
	if err != nil {
		return 0, err
	}
	h := &health{stream: p.Stream, monitor: monitor, ping: sink.Ping, broker: cfg.Sink}
	cm, err := newCleanupMetrics(reg)
	if err != nil {
		return 0, err
	}
	keeper := newHorizonKeeper(cfg.CDC, max(cfg.CDC.StatusInterval, time.Second),
		func() bool { return p.Stream.State() == cdc.StateStreaming }, logger, cm)

	actors := []pipeline.Actor{monitor.Run, h.run, keeper.Run}
	if cfg.PruneOlderThan > 0 {
		actors = append(actors, newJanitor(cfg.CDC, cfg.PruneOlderThan, cfg.PruneInterval, logger, cm).Run)
	}
	if cfg.MetricsAddr != "" {
		actors = append(actors, func(ctx context.Context) error {
			return serveHTTP(ctx, "metrics", "metrics-addr", cfg.MetricsAddr, metricsHandler(reg, h), logger)
		})
	}
	if cfg.PprofAddr != "" {
		actors = append(actors, func(ctx context.Context) error {
			return serveHTTP(ctx, "pprof", "pprof-addr", cfg.PprofAddr, pprofHandler(), logger)
		})
	}
	if err := p.Run(ctx, actors...); err != nil {
		return p.Relay.Flushed(), err
	}
	logger.Info("stopped")
	return p.Relay.Flushed(), nil
}
