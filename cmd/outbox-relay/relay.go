package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/outbox-relay/outbox-relay/cdc"
	"github.com/outbox-relay/outbox-relay/relay"
	"github.com/outbox-relay/outbox-relay/sinks/kafka"
)

// brokerCheckTimeout bounds the start-up check that the brokers answer.
const brokerCheckTimeout = 10 * time.Second

// relayUntilDone runs the daemon: the replication stream, the relay core and
// the metrics server, until ctx ends or one of them fails. When the slot is
// lost it stops, or under --on-slot-lost=recover recovers it (slotlost.go)
// and runs again.
func relayUntilDone(ctx context.Context, cfg Config, stderr io.Writer) error {
	logger := cfg.logger(stderr)
	logger.Info("starting", "version", version, "commit", commit, "cdc", cfg.CDC, "kafka", cfg.Kafka)
	applyMemoryLimit(cfg.MemoryLimit, cfg.Relay.MaxInflightBytes, logger)
	applyMaxProcs(cfg.MaxProcs, logger)
	if cfg.pprof {
		logger.Warn("--pprof is deprecated; use --pprof-addr="+defaultPprofAddr, "addr", cfg.PprofAddr)
	}
	rm := newRecoveryMetrics()
	for {
		flushed, err := relayOnce(ctx, cfg, logger, rm)
		if err == nil || ctx.Err() != nil || !slotLost(err, cfg) {
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
func relayOnce(ctx context.Context, cfg Config, logger *slog.Logger, rm *recoveryMetrics) (pglogrepl.LSN, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfo(),
	)
	if err := rm.register(reg); err != nil {
		return 0, err
	}
	return relayWith(ctx, cfg, logger, reg)
}

// relayWith runs the stream, the relay core and the metrics server,
// registering their metrics with reg.
func relayWith(ctx context.Context, cfg Config, logger *slog.Logger, reg *prometheus.Registry) (pglogrepl.LSN, error) {
	sink, err := kafka.New(cfg.Kafka, logger, reg)
	if err != nil {
		return 0, err
	}
	defer sink.Close()
	pctx, cancel := context.WithTimeout(ctx, brokerCheckTimeout)
	err = sink.Ping(pctx)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return 0, nil
		}
		return 0, err
	}

	if cfg.Relay.Delivery == relay.DeliveryExactlyOnce {
		cctx, cancel := context.WithTimeout(ctx, brokerCheckTimeout)
		err := sink.CreateCheckpointTopic(cctx)
		cancel()
		if err != nil {
			return 0, err
		}
		logger.Info("exactly-once delivery", "transactional_id", cfg.Kafka.TransactionalID, "checkpoint_topic", kafka.CheckpointTopic,
			"transaction_interval", cfg.Relay.TransactionInterval.String())
	}
	core, err := relay.New(cfg.Relay, sink, logger, reg)
	if err != nil {
		return 0, err
	}
	stream, err := cdc.New(cfg.CDC, logger, reg)
	if err != nil {
		return 0, err
	}

	monitor, err := cdc.NewMonitor(cfg.CDC, healthInterval, logger, reg)
	if err != nil {
		return 0, err
	}
	h := &health{stream: stream, monitor: monitor, ping: sink.Ping}
	cm, err := newCleanupMetrics(reg)
	if err != nil {
		return 0, err
	}
	keeper := newHorizonKeeper(cfg.CDC, max(cfg.CDC.StatusInterval, time.Second),
		func() bool { return stream.State() == cdc.StateStreaming }, logger, cm)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return stream.Run(gctx, core) })
	g.Go(func() error { return core.Run(gctx) })
	g.Go(func() error { return monitor.Run(gctx) })
	g.Go(func() error { return h.run(gctx) })
	g.Go(func() error { return keeper.Run(gctx) })
	if cfg.PruneOlderThan > 0 {
		j := newJanitor(cfg.CDC, cfg.PruneOlderThan, cfg.PruneInterval, logger, cm)
		g.Go(func() error { return j.Run(gctx) })
	}
	if cfg.MetricsAddr != "" {
		g.Go(func() error {
			return serveHTTP(gctx, "metrics", "metrics-addr", cfg.MetricsAddr, metricsHandler(reg, h), logger)
		})
	}
	if cfg.PprofAddr != "" {
		g.Go(func() error { return serveHTTP(gctx, "pprof", "pprof-addr", cfg.PprofAddr, pprofHandler(), logger) })
	}
	if err := g.Wait(); err != nil {
		return core.Flushed(), fmt.Errorf("relay stopped: %w", err)
	}
	logger.Info("stopped")
	return core.Flushed(), nil
}
